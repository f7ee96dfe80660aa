"""URLconf: admin, the seed contract at /tasks, the resource API at /api/."""
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from chains.admin import site_view
from chains.admin import views as admin_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/token/", site_view(admin.site, admin_views.api_token), name="admin-token"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("", include("chains.urls")),
]
