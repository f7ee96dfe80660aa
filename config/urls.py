"""URLconf: admin, the seed contract at /tasks, the resource API at /api/."""
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from chains.api.urls import api_urlpatterns, seed_urlpatterns

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("api/", include(api_urlpatterns)),
    *seed_urlpatterns,
]
