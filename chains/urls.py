"""Task Chain's URLs, for a project to include: `path("", include("chains.urls"))` serves the
seed contract (/tasks/...) and the resource API with its docs (/api/...). The admin pages come
with the project's admin site."""
from django.urls import include, path

from chains.api.urls import api_urlpatterns, seed_urlpatterns
from chains.metrics import metrics_view

urlpatterns = [
    path("api/", include(api_urlpatterns)),
    *seed_urlpatterns,
    path("metrics", metrics_view, name="chains-metrics"),
]
