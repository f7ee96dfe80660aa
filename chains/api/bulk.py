"""POST /api/runs/bulk/: cancel, retry or delete every run of a filter (the filters of GET
/api/runs/) that the user sees, each run checked as its single action is. Up to
services.bulk.IN_REQUEST_LIMIT runs are acted on in the request (200); more go to a job on
the worker (202), read at GET /api/runs/bulk/<job id>/."""
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chains import selectors, services
from chains.api.base import ChainsAPI
from chains.api.errors import as_api_error
from chains.api.serializers import RunFilterSerializer, UnknownKeysRefused
from chains.errors import ChainError
from chains.models import BulkJob
from chains.services import bulk


class BulkFilterSerializer(UnknownKeysRefused, RunFilterSerializer):
    """The filters of GET /api/runs/; any other key is refused."""


class BulkRequestSerializer(UnknownKeysRefused, serializers.Serializer):
    action = serializers.ChoiceField(choices=list(bulk.ACTIONS))
    filter = BulkFilterSerializer(help_text=(
        "Which runs: status, trigger, chain, task_type as GET /api/runs/ takes them; {} is "
        "every run you see."))


class SkippedField(serializers.DictField):
    child = serializers.IntegerField()


class BulkResultSerializer(serializers.Serializer):
    action = serializers.CharField()
    matched = serializers.IntegerField()
    done = serializers.IntegerField()
    skipped = SkippedField(help_text='{reason: count}: "not permitted", "wrong status", "gone".')


class BulkJobSerializer(serializers.ModelSerializer):
    skipped = SkippedField()
    progress = serializers.FloatField(allow_null=True, help_text=(
        "The share of the matched runs acted on or skipped, 0 to 1 (null before counting)."))
    url = serializers.SerializerMethodField()

    class Meta:
        model = BulkJob
        fields = ["id", "url", "action", "filter", "status", "matched", "done", "skipped",
                  "progress", "error", "created_at", "finished_at"]

    def get_url(self, job: BulkJob) -> str:
        return reverse("run-bulk-job", args=[job.id])


class RunBulkView(ChainsAPI, APIView):
    """Cancel, retry or delete every run matching `filter` among those you see. Each run is
    checked as its single action is (cancel and retry: chains.change_run for staff, your own
    runs otherwise; delete: chains.delete_run) and acted on in its own transaction, oldest
    first, in chunks. Up to 1,000 matching runs: done in the request, 200 with the counts.
    More: 202 with a job to poll."""

    @extend_schema(request=BulkRequestSerializer, responses={
        200: BulkResultSerializer,
        202: BulkJobSerializer,
        400: OpenApiResponse(description="unknown action, or a filter key or value refused "
                             "(named)"),
    })
    def post(self, request: Request) -> Response:
        body = BulkRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        action, filters = body.validated_data["action"], body.validated_data["filter"]
        runs = selectors.run_list(user=request.user, **filters)
        matched = bulk.matching_count(runs, cap=bulk.IN_REQUEST_LIMIT)
        try:
            if matched > bulk.IN_REQUEST_LIMIT:
                job = services.bulk_job_create(user=request.user, action=action,
                                               filter=filters, source="api")
                return Response(BulkJobSerializer(job).data, status=202)
            counts = services.runs_bulk(user=request.user, action=action, runs=runs)
        except ChainError as exc:
            raise as_api_error(exc) from exc
        return Response({"action": action, "matched": matched, **counts})


class RunBulkJobView(ChainsAPI, APIView):
    """A bulk job's state: PENDING, RUNNING, COMPLETED or FAILED, with the runs matched,
    done and skipped (by reason) so far. Your own jobs (staff: anybody's)."""

    @extend_schema(responses={200: BulkJobSerializer,
                              404: OpenApiResponse(description="no such job of yours")})
    def get(self, request: Request, job_id) -> Response:
        job = selectors.bulk_jobs_visible_to(request.user).filter(id=job_id).first()
        if job is None:
            raise NotFound("no such bulk job")
        return Response(BulkJobSerializer(job).data)
