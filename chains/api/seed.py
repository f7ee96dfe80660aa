"""The seed REST contract (/tasks/...), unchanged for the clients of the earlier system."""
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chains import selectors, services, states
from chains.api.base import ChainsAPI
from chains.api.errors import as_api_error
from chains.api.idempotency import IDEMPOTENCY_HEADER, idempotency_key, request_fingerprint
from chains.api.serializers import (
    TaskListQuerySerializer,
    TaskStatisticsSerializer,
    TaskStatusSerializer,
    TaskSubmitSerializer,
)
from chains.errors import ChainError
from chains.models import Run, RunStatus, RunTrigger
from chains.permissions import can_delete_run, can_start_runs, signed_in


def _visible_run(request: Request, task_id) -> Run:
    return get_object_or_404(selectors.runs_visible_to(request.user), id=task_id)


class TaskSubmitView(ChainsAPI, APIView):
    @extend_schema(request=TaskSubmitSerializer, parameters=[IDEMPOTENCY_HEADER],
                   responses={201: TaskStatusSerializer, 200: TaskStatusSerializer},
                   tags=["tasks (seed contract)"])
    def post(self, request: Request) -> Response:
        if not can_start_runs(request.user):
            raise PermissionDenied("you may not start runs")
        serializer = TaskSubmitSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user, key = signed_in(request.user), idempotency_key(request)
        try:
            run, created = services.run_start_once(  # without a key no fingerprint is needed
                user=user, key=key, fingerprint=request_fingerprint(request) if key else "",
                start=lambda: services.run_submit_task(
                    **serializer.validated_data, user=user, trigger=RunTrigger.API))
        except ChainError as exc:
            raise as_api_error(exc) from exc
        return Response(TaskStatusSerializer.represent(run),
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class TaskStatusView(ChainsAPI, APIView):
    @extend_schema(responses=TaskStatusSerializer, tags=["tasks (seed contract)"])
    def get(self, request: Request, task_id) -> Response:
        return Response(TaskStatusSerializer.represent(_visible_run(request, task_id)))


class TaskResultView(ChainsAPI, APIView):
    @extend_schema(responses={200: TaskStatusSerializer, 409: TaskStatusSerializer},
                   tags=["tasks (seed contract)"])
    def get(self, request: Request, task_id) -> Response:
        """The result of a finished task; 409 with the status while it is not finished."""
        run = _visible_run(request, task_id)
        shown = states.seed_status(run.status)
        body = {"task_id": str(run.id), "status": shown, "result": run.result,
                "error": run.error}
        if not run.is_finished:
            body["detail"] = f"task is {shown}; the result is not available yet"
            return Response(body, status=status.HTTP_409_CONFLICT)
        return Response(body)


class TaskDetailView(ChainsAPI, APIView):
    @extend_schema(responses={204: None}, tags=["tasks (seed contract)"])
    def delete(self, request: Request, task_id) -> Response:
        """Revoke anything outstanding, then delete the task and its results."""
        run = _visible_run(request, task_id)
        if not can_delete_run(request.user, run):
            raise PermissionDenied("you may not delete this task")
        services.run_delete(run=run)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TaskStatisticsView(ChainsAPI, APIView):
    @extend_schema(responses=TaskStatisticsSerializer, tags=["tasks (seed contract)"])
    def get(self, request: Request) -> Response:
        counts = selectors.run_statistics(user=request.user)
        body = {"total_tasks": counts["total"]}
        for status_ in RunStatus:
            if status_.value in states.SEED_STATUSES or status_ in states.AS_SEED:
                key = f"{states.seed_status(status_).lower()}_tasks"
                body[key] = body.get(key, 0) + counts[status_.value.lower()]
        return Response(body)


class TaskListView(ChainsAPI, APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("status", enum=states.SEED_STATUSES),
            OpenApiParameter("limit", int, description="1 to 1000, default 10"),
        ],
        responses=TaskStatusSerializer(many=True), tags=["tasks (seed contract)"],
    )
    def get(self, request: Request) -> Response:
        """Tasks newest first, optionally of one status."""
        query = TaskListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        seed = query.validated_data.get("status")
        runs = selectors.run_list(user=request.user,
                                  statuses=states.reported_as(seed) if seed else None)
        return Response(TaskStatusSerializer(runs[: query.validated_data["limit"]], many=True).data)
