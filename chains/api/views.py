"""Resource API: chains with their steps, runs and step types."""
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chains import selectors, services
from chains.api.base import ChainsAPI
from chains.api.errors import as_api_error
from chains.api.idempotency import IDEMPOTENCY_HEADER, idempotency_key, request_fingerprint
from chains.api.pagination import BoundedPagination, RunPagination
from chains.api.serializers import (
    ChainScheduleSerializer,
    ChainSerializer,
    DecisionSerializer,
    MapItemFilterSerializer,
    MapItemSerializer,
    NoInputSerializer,
    QueueSerializer,
    RunDetailSerializer,
    RunFilterSerializer,
    RunSerializer,
    RunStartSerializer,
    StepLogSerializer,
    StepTypeSerializer,
    TaskTypeSerializer,
    TokenSerializer,
    WorkerSerializer,
)
from chains.api.throttles import Authenticated
from chains.cluster import cluster_state
from chains.errors import ChainError
from chains.models import Chain, ChainSchedule, ChangeSource, Run, RunTrigger
from chains.permissions import (
    can_change_run,
    can_delete_run,
    can_edit_chain,
    can_start_runs,
    signed_in,
)
from chains.presets import PRESETS
from chains.steps import STEP_TYPES
from chains.steps.registry import KEY


class IsOwnerOrStaffForWrites(permissions.BasePermission):
    """Anyone signed in may read chains and, as chains.permissions.can_start_runs allows,
    start them. Users who are not staff create chains and edit their own; staff create, edit
    and delete as their Django permissions on chains allow."""

    def has_permission(self, request, view) -> bool:
        if getattr(view, "action", "") == "create" and request.user.is_staff:
            return request.user.has_perm("chains.add_chain")
        return True

    def has_object_permission(self, request, view, obj) -> bool:
        if getattr(view, "action", "") == "run":
            return can_start_runs(request.user)
        if request.method in permissions.SAFE_METHODS:
            return True
        return can_edit_chain(request.user, obj, delete=request.method == "DELETE")


class RunPermission(permissions.BasePermission):
    """Cancel and retry need can_change_run; delete needs can_delete_run; approve and reject
    need chains.approve_run (the service also checks the approval's group)."""

    def has_object_permission(self, request, view, obj) -> bool:
        action = getattr(view, "action", "")
        if action in ("cancel", "retry"):
            return can_change_run(request.user, obj)
        if action in ("approve", "reject"):
            return request.user.has_perm("chains.approve_run")
        if action == "destroy":
            return can_delete_run(request.user, obj)
        return True


class ChainViewSet(ChainsAPI, viewsets.ModelViewSet):
    serializer_class = ChainSerializer
    lookup_value_regex = r"\d{1,18}"
    permission_classes = [Authenticated, IsOwnerOrStaffForWrites]

    def get_queryset(self):
        return selectors.chains_visible_to(self.request.user)

    def _save(self, serializer: ChainSerializer, chain: Chain | None = None) -> ChainSerializer:
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            chain = services.chain_save(
                chain=chain, name=data["name"], description=data.get("description", ""),
                enabled=data.get("enabled", True), default_inputs=data.get("default_inputs"),
                inputs_schema=data.get("inputs_schema"),
                max_active_runs=data.get("max_active_runs"), steps=serializer.step_specs(),
                user=signed_in(self.request.user), source=ChangeSource.API,
            )
        except ChainError as exc:
            raise as_api_error(exc) from exc
        return ChainSerializer(selectors.chains_visible_to(self.request.user).get(pk=chain.pk))

    def perform_destroy(self, instance) -> None:
        services.chain_delete(chain=instance)

    def create(self, request: Request, *args, **kwargs) -> Response:
        out = self._save(ChainSerializer(data=request.data,
                                         context=self.get_serializer_context()))
        return Response(out.data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args, **kwargs) -> Response:
        chain = self.get_object()
        partial = kwargs.pop("partial", False)
        context = self.get_serializer_context()
        serializer = ChainSerializer(chain, data=request.data, partial=partial, context=context)
        if partial:
            serializer.is_valid(raise_exception=True)
            merged = {**ChainSerializer(chain).data, **request.data}
            serializer = ChainSerializer(chain, data=merged, context=context)
        return Response(self._save(serializer, chain=chain).data)

    @extend_schema(request=RunStartSerializer, parameters=[IDEMPOTENCY_HEADER],
                   responses={201: RunDetailSerializer, 200: RunDetailSerializer})
    @action(detail=True, methods=["post"], serializer_class=RunStartSerializer)
    def run(self, request: Request, pk=None) -> Response:
        """Start a run of this chain with `inputs` (default: the chain's inputs)."""
        chain = self.get_object()
        serializer = RunStartSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            run, created = services.run_start_once(
                user=signed_in(request.user), key=idempotency_key(request),
                fingerprint=request_fingerprint(request),
                start=lambda: services.run_start(
                    chain=chain, inputs=serializer.validated_data.get("inputs"),
                    trigger=RunTrigger.API, user=signed_in(request.user)))
        except ChainError as exc:
            raise as_api_error(exc) from exc
        return Response(RunDetailSerializer(run).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


# What approve and reject answer.
DECISION_RESPONSES = {
    200: RunDetailSerializer,
    403: OpenApiResponse(description="without chains.approve_run, or not in the approval's "
                         "group"),
    404: OpenApiResponse(description="no such run, or one you may not see"),
    409: OpenApiResponse(description="already decided (naming the decision and who made it), "
                         "or the run waits for no approval"),
}


class RunViewSet(ChainsAPI, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                 mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Runs: filter by status, trigger, chain or task_type; cancel; retry; delete."""

    permission_classes = [Authenticated, RunPermission]
    pagination_class = RunPagination

    serializer_class = RunDetailSerializer  # cancel and retry name their own (no input)

    def get_serializer_class(self):
        return RunSerializer if self.action == "list" else self.serializer_class

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user
            return Run.objects.none()
        if self.action in ("approve", "reject"):
            # An approver who is not staff decides runs of others waiting for their group.
            return selectors.with_parent_run(selectors.runs_decidable_by(self.request.user))
        if self.action != "list":
            return selectors.with_version_numbers(
                selectors.with_parent_run(selectors.runs_visible_to(self.request.user)))
        filters = RunFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return selectors.with_version_numbers(selectors.with_parent_run(
            selectors.run_list(user=self.request.user, **filters.validated_data)))

    @extend_schema(parameters=[RunFilterSerializer])
    def list(self, request: Request, *args, **kwargs) -> Response:
        return super().list(request, *args, **kwargs)

    def perform_destroy(self, instance) -> None:
        services.run_delete(run=instance)

    @extend_schema(request=None, responses=RunDetailSerializer)
    @action(detail=True, methods=["post"], serializer_class=NoInputSerializer)
    def cancel(self, request: Request, pk=None) -> Response:
        """Cancel the run: its running steps are stopped on their workers and its waiting steps
        will not start; the run's `error` says how many of each."""
        run = self.get_object()
        NoInputSerializer(data=request.data).is_valid(raise_exception=True)
        try:
            run = services.run_cancel(run=run)
        except ChainError as exc:
            raise as_api_error(exc) from exc
        return Response(RunDetailSerializer(run).data)

    @extend_schema(request=None, responses=StepLogSerializer)
    @action(detail=True, methods=["get"], url_path=r"steps/(?P<index>\d{1,5})/log",
            serializer_class=StepLogSerializer)
    def step_log(self, request: Request, pk=None, index: str = "0", **kwargs) -> Response:
        """What one step logged through `context.log` (at most CHAINS_MAX_STEP_LOG_BYTES; a
        marker says where it was cut)."""
        run = self.get_object()
        step_run = get_object_or_404(run.step_runs.only("index", "step_type", "log"),
                                     index=int(index))
        return Response(StepLogSerializer(step_run).data)

    @extend_schema(request=None, responses=RunDetailSerializer)
    @action(detail=True, methods=["post"], serializer_class=NoInputSerializer)
    def retry(self, request: Request, pk=None) -> Response:
        """Run a FAILED or CANCELLED run again from its failed step, reusing earlier results."""
        run = self.get_object()
        NoInputSerializer(data=request.data).is_valid(raise_exception=True)
        try:
            run = services.run_retry(run=run)
        except ChainError as exc:
            raise as_api_error(exc) from exc
        return Response(RunDetailSerializer(run).data)

    @extend_schema(request=DecisionSerializer, responses=DECISION_RESPONSES)
    @action(detail=True, methods=["post"], serializer_class=DecisionSerializer)
    def approve(self, request: Request, pk=None) -> Response:
        """Approve the approval the run waits for: the run goes on with the approval step's
        input. Needs chains.approve_run (and membership of the approval's group, if it names
        one)."""
        return self._decide(request, approve=True)

    @extend_schema(request=DecisionSerializer, responses=DECISION_RESPONSES)
    @action(detail=True, methods=["post"], serializer_class=DecisionSerializer)
    def reject(self, request: Request, pk=None) -> Response:
        """Reject the approval the run waits for: the run fails with "rejected by <user>:
        <comment>". Needs chains.approve_run (and membership of the approval's group, if it
        names one)."""
        return self._decide(request, approve=False)

    def _decide(self, request: Request, *, approve: bool) -> Response:
        run = self.get_object()
        serializer = DecisionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            run = services.run_decide(run=run, user=signed_in(request.user), approve=approve,
                                      comment=serializer.validated_data["comment"])
        except ChainError as exc:
            raise as_api_error(exc) from exc
        return Response(RunDetailSerializer(run).data)

    @extend_schema(request=None, parameters=[MapItemFilterSerializer],
                   responses=MapItemSerializer(many=True))
    @action(detail=True, methods=["get"], url_path=r"steps/(?P<index>\d{1,5})/items",
            serializer_class=MapItemSerializer, pagination_class=BoundedPagination)
    def step_items(self, request: Request, pk=None, index: str = "0", **kwargs) -> Response:
        """A map step's items by index, paged (`?limit=&offset=`, at most
        CHAINS_MAX_PAGE_SIZE a page), optionally of one `status`. 404 for a step that is not
        a map step."""
        run = self.get_object()
        filters = MapItemFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        step_run = get_object_or_404(run.step_runs.only("id", "index", "step_type", "map"),
                                     index=int(index))
        if not step_run.map:
            raise NotFound(f"step {step_run.index + 1} ({step_run.step_type}, index "
                           f"{step_run.index}) is not a map step: only a map step has items")
        items = selectors.map_items(step_run, status=filters.validated_data.get("status"))
        page = self.paginate_queryset(items)
        return self.get_paginated_response(MapItemSerializer(page, many=True).data)


class StepTypeViewSet(ChainsAPI, viewsets.ViewSet):
    """The step registry: every key a step may name, with its params JSON schema."""

    lookup_value_regex = KEY.pattern  # every key the registry accepts

    def _row(self, key: str) -> dict:
        step_type = STEP_TYPES[key]
        return {"key": key, "family": step_type.family, "description": step_type.description,
                "params_schema": step_type.params_schema()}

    # **kwargs: the router's format suffix routes (/api/step-types.json) pass `format`.
    @extend_schema(responses=StepTypeSerializer(many=True))
    def list(self, request: Request, **kwargs) -> Response:
        return Response([self._row(key) for key in STEP_TYPES])

    @extend_schema(responses=StepTypeSerializer)
    def retrieve(self, request: Request, pk: str, **kwargs) -> Response:
        if pk not in STEP_TYPES:
            raise NotFound(f"unknown step type {pk!r}")
        return Response(self._row(pk))




class TaskTypeViewSet(ChainsAPI, viewsets.ViewSet):
    """The seed task types (/tasks/submit's `task_type`), each with the JSON Schema of its
    `config`."""

    lookup_value_regex = r"[a-z_]{1,32}"

    def _row(self, key: str) -> dict:
        model, build = PRESETS[key]
        return {"key": key, "description": (build.__doc__ or "").strip(),
                "config_schema": model.model_json_schema()}

    # **kwargs: the router's format suffix routes (/api/task-types.json) pass `format`.
    @extend_schema(responses=TaskTypeSerializer(many=True))
    def list(self, request: Request, **kwargs) -> Response:
        return Response([self._row(key) for key in PRESETS])

    @extend_schema(responses=TaskTypeSerializer)
    def retrieve(self, request: Request, pk: str, **kwargs) -> Response:
        if pk not in PRESETS:
            raise NotFound(f"unknown task type {pk!r}")
        return Response(self._row(pk))


class ChainScheduleViewSet(ChainsAPI, viewsets.ModelViewSet):
    """Schedules of chains; each keeps its beat entry in step. Staff or the chain's author
    edit them, if they may also start runs: a schedule's runs are its owner's. Users who are
    not staff see their own schedules and those of their chains."""

    serializer_class = ChainScheduleSerializer
    lookup_value_regex = r"\d{1,18}"
    permission_classes = [Authenticated, IsOwnerOrStaffForWrites]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ChainSchedule.objects.none()
        return selectors.schedules_visible_to(self.request.user)

    def check_object_permissions(self, request, obj) -> None:
        super().check_object_permissions(request, obj.chain)

    def perform_create(self, serializer) -> None:
        fields = dict(serializer.validated_data)
        serializer.instance = self._save(chain=fields.pop("chain"), fields=fields)

    def perform_update(self, serializer) -> None:
        fields = dict(serializer.validated_data)
        chain = fields.pop("chain", serializer.instance.chain)
        serializer.instance = self._save(schedule=serializer.instance, chain=chain,
                                         fields=fields)

    def perform_destroy(self, instance) -> None:
        services.schedule_delete(schedule=instance)

    def _save(self, **kwargs) -> ChainSchedule:
        try:
            return services.schedule_save(user=signed_in(self.request.user), **kwargs)
        except ChainError as exc:
            raise as_api_error(exc) from exc


class WorkersView(ChainsAPI, APIView):
    """Workers online and the queues they consume (staff only)."""

    permission_classes = [Authenticated, permissions.IsAdminUser]

    @extend_schema(responses=WorkerSerializer(many=True))
    def get(self, request: Request) -> Response:
        state = cluster_state()
        if state.error:
            return Response({"detail": state.error}, status=503)
        return Response([{"name": name, "queues": queues, "active": active}
                         for name, queues, active in state.worker_rows])


class QueuesView(ChainsAPI, APIView):
    """Messages waiting in each queue and how many workers consume it (staff only)."""

    permission_classes = [Authenticated, permissions.IsAdminUser]

    @extend_schema(responses=QueueSerializer(many=True))
    def get(self, request: Request) -> Response:
        state = cluster_state()
        if state.error:
            return Response({"detail": state.error}, status=503)
        return Response([
            {"name": queue, "messages": length,
             "workers": sum(queue in queues for queues in state.workers.values())}
            for queue, length in state.queue_lengths.items()
        ])


class TokenView(ChainsAPI, APIView):
    """Your own API token: GET shows it, POST replaces it (the old one stops working)."""

    @extend_schema(request=None, responses=TokenSerializer)
    def get(self, request: Request) -> Response:
        token = selectors.token_of(request.user)
        return Response(TokenSerializer(token).data if token else {"key": None, "created": None})

    @extend_schema(request=None, responses={201: TokenSerializer})
    def post(self, request: Request) -> Response:
        token = services.token_regenerate(user=signed_in(request.user))
        return Response(TokenSerializer(token).data, status=status.HTTP_201_CREATED)
