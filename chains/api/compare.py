"""GET /api/runs/compare/?a=<id>&b=<id>: two runs side by side, as the admin's comparison page
shows them (selectors.run_comparison builds the structure for both)."""
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chains import selectors
from chains.api.base import ChainsAPI
from chains.comparison import ADDED, CHANGED, REMOVED, RUN_FIELDS, SAME, STEP_FIELDS
from chains.models import Run


class CompareQuerySerializer(serializers.Serializer):
    a = serializers.UUIDField(help_text="The run compared from (the base).")
    b = serializers.UUIDField(help_text="The run compared with it.")

    def validate(self, data: dict) -> dict:
        if data["a"] == data["b"]:
            raise ValidationError({"b": ["the same run as a: pick another run"]})
        return data


@extend_schema_field(OpenApiTypes.ANY)
class AnyJSON(serializers.JSONField):
    pass


class CompareRunSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    chain = serializers.IntegerField(allow_null=True)
    chain_name = serializers.CharField(allow_null=True)
    task_type = serializers.CharField()
    version = serializers.IntegerField(allow_null=True, help_text=(
        "The number of the chain version the run executed; null for a run of no version."))
    trigger = serializers.CharField()
    inputs = AnyJSON()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration = serializers.FloatField(allow_null=True, help_text="Seconds.")
    result = AnyJSON(allow_null=True)
    error = serializers.CharField()
    steps_total = serializers.IntegerField()


class CompareStepSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    stage = serializers.IntegerField()
    name = serializers.CharField()
    step_type = serializers.CharField()
    status = serializers.CharField()
    duration = serializers.FloatField(allow_null=True, help_text="Seconds.")
    params = AnyJSON()
    result = AnyJSON(allow_null=True)
    error = serializers.CharField()


class CompareFieldSerializer(serializers.Serializer):
    field = serializers.ChoiceField(choices=RUN_FIELDS)
    a = AnyJSON(allow_null=True)
    b = AnyJSON(allow_null=True)
    differs = serializers.BooleanField()


class CompareStepRowSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="The step's position (0-based), which aligns "
                                     "the two runs' steps.")
    change = serializers.ChoiceField(choices=[SAME, CHANGED, ADDED, REMOVED], help_text=(
        "added: only b has the step; removed: only a has it; changed: a field differs."))
    a = CompareStepSerializer(allow_null=True)
    b = CompareStepSerializer(allow_null=True)
    differs = serializers.ListField(child=serializers.ChoiceField(choices=STEP_FIELDS))


class VersionChangeSerializer(serializers.Serializer):
    where = serializers.CharField()
    change = serializers.ChoiceField(choices=["changed", "added", "removed"])
    old = AnyJSON(allow_null=True)
    new = AnyJSON(allow_null=True)


class CompareCountsSerializer(serializers.Serializer):
    same = serializers.IntegerField()
    changed = serializers.IntegerField()
    added = serializers.IntegerField()
    removed = serializers.IntegerField()


class ComparisonSerializer(serializers.Serializer):
    a = CompareRunSerializer()
    b = CompareRunSerializer()
    same_chain = serializers.BooleanField()
    summary = CompareFieldSerializer(many=True, help_text=(
        "The runs field by field: chain, version, trigger, inputs, status, duration, result, "
        "error."))
    steps = CompareStepRowSerializer(many=True)
    counts = CompareCountsSerializer()
    version_changes = VersionChangeSerializer(many=True, allow_null=True, help_text=(
        "What changed in the chain's definition from a's version to b's (runs of two "
        "versions of one chain); null otherwise."))


class RunCompareView(ChainsAPI, APIView):
    """Two runs side by side: chain and version, trigger, inputs, status, duration, result and
    error, and their steps aligned by position with what differs (`differs`, `change`). Both
    runs must be yours to see (404 otherwise)."""

    @extend_schema(parameters=[CompareQuerySerializer], responses={
        200: ComparisonSerializer,
        400: OpenApiResponse(description="a or b missing or not a run id (named)"),
        404: OpenApiResponse(description="no such run, or one you may not see"),
    })
    def get(self, request: Request) -> Response:
        query = CompareQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            comparison = selectors.run_comparison(user=request.user, **query.validated_data)
        except Run.DoesNotExist as exc:
            raise NotFound(str(exc)) from exc
        return Response(ComparisonSerializer(comparison).data)
