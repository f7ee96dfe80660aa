"""URLs of the seed contract (/tasks...) and the resource API (/api/...)."""
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from chains.api import seed, views
from chains.api.audit import AuditView
from chains.api.bulk import RunBulkJobView, RunBulkView
from chains.api.compare import RunCompareView
from chains.api.notifications import DeliveryViewSet, NotificationRuleViewSet
from chains.api.versions import version_urlpatterns

router = DefaultRouter()
router.register("chains", views.ChainViewSet, basename="chain")
router.register("runs", views.RunViewSet, basename="run")
router.register("step-types", views.StepTypeViewSet, basename="step-type")
router.register("task-types", views.TaskTypeViewSet, basename="task-type")
router.register("schedules", views.ChainScheduleViewSet, basename="schedule")
router.register("notification-rules", NotificationRuleViewSet, basename="notification-rule")
router.register("deliveries", DeliveryViewSet, basename="delivery")

seed_urlpatterns = [
    path("tasks/submit", seed.TaskSubmitView.as_view(), name="task-submit"),
    path("tasks/statistics", seed.TaskStatisticsView.as_view(), name="task-statistics"),
    path("tasks", seed.TaskListView.as_view(), name="task-list"),
    path("tasks/<uuid:task_id>", seed.TaskDetailView.as_view(), name="task-detail"),
    path("tasks/<uuid:task_id>/status", seed.TaskStatusView.as_view(), name="task-status"),
    path("tasks/<uuid:task_id>/result", seed.TaskResultView.as_view(), name="task-result"),
]

api_urlpatterns: list[URLPattern | URLResolver] = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("workers/", views.WorkersView.as_view(), name="workers"),
    path("queues/", views.QueuesView.as_view(), name="queues"),
    path("token/", views.TokenView.as_view(), name="token"),
    # Before the router: "compare" is not a run id.
    path("runs/compare/", RunCompareView.as_view(), name="run-compare"),
    path("runs/bulk/", RunBulkView.as_view(), name="run-bulk"),
    path("runs/bulk/<uuid:job_id>/", RunBulkJobView.as_view(), name="run-bulk-job"),
    path("audit/", AuditView.as_view(), name="audit"),
    *version_urlpatterns,
    path("", include(router.urls)),
]
