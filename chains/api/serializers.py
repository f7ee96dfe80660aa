"""Input and output serializers. No logic in save(): views call services."""
from functools import cache
from typing import Any

from django.db import models
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import ReturnDict

from chains import states
from chains.bounds import json_problem
from chains.models import (
    Approval,
    Chain,
    ChainSchedule,
    MapItem,
    Run,
    RunTrigger,
    Step,
    StepAttempt,
    StepRun,
)
from chains.permissions import can_read_chain_inputs, can_read_schedule_inputs
from chains.presets import PRESETS, StepSpec
from chains.schedules import next_fire_times
from chains.selectors import (
    MAP_ITEM_STATUSES,
    child_run_ids,
    latest_version_number,
    parent_run_of,
    run_version_numbers,
    step_runs_in_detail,
)
from chains.steps import STEP_TYPES
from chains.steps.flow import APPROVAL


@extend_schema_field(OpenApiTypes.ANY)  # any JSON value, not a string
class BoundedJSONField(serializers.JSONField):
    """A JSON value nested at most CHAINS_MAX_JSON_DEPTH deep: checked before DRF encodes it
    (which would recurse), so a hostile value is a 400 naming the field, never a 500."""

    def to_internal_value(self, data):
        try:
            value = super().to_internal_value(data)
        except RecursionError:
            self.fail("invalid")
        if problem := json_problem(value):
            raise serializers.ValidationError(problem)
        return value


class UnknownKeysRefused(serializers.Serializer):
    """A key the serializer does not have is a 400 naming it, not silently dropped (a typo in
    `max_retries` would otherwise leave the default in place unnoticed). The browsable API's
    HTML forms also send their CSRF token."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields) - {"csrfmiddlewaretoken"})
            if unknown:
                raise serializers.ValidationError({key: ["unknown field"] for key in unknown})
        return super().to_internal_value(data)


class BoundedModelSerializer(UnknownKeysRefused, serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.JSONField: BoundedJSONField,
    }


# --- Seed contract --------------------------------------------------------------------------


class TaskSubmitSerializer(serializers.Serializer):
    task_type = serializers.ChoiceField(choices=list(PRESETS))
    description = serializers.CharField(required=False, allow_blank=True, default="",
                                        max_length=10_000)
    config = serializers.DictField()

    def validate_config(self, config: dict) -> dict:
        if problem := json_problem(config):
            raise serializers.ValidationError(problem)
        return config


class TaskStatusSerializer(serializers.ModelSerializer):
    task_id = serializers.UUIDField(source="id")
    status = serializers.SerializerMethodField()
    completed_at = serializers.DateTimeField(source="finished_at")
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = ["task_id", "task_type", "description", "status", "created_at", "started_at",
                  "completed_at", "result", "error", "progress"]

    def get_progress(self, run: Run) -> dict:
        return {"steps_done": run.steps_done, "steps_total": run.steps_total}

    @extend_schema_field(serializers.ChoiceField(choices=states.SEED_STATUSES))
    def get_status(self, run: Run) -> str:
        return states.seed_status(run.status)

    @classmethod
    def represent(cls, run: Run) -> ReturnDict:
        """`cls(run).data` without building the fields again (model introspection costs more
        than the serializing): one instance per process holds them, and to_representation
        keeps no state between calls, so threads can share it."""
        return ReturnDict(_shared(cls).to_representation(run), serializer=cls(run))


@cache
def _shared(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    serializer = serializer_class()
    serializer.fields  # noqa: B018 -- built now, before any thread shares the instance
    return serializer


class TaskListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=states.SEED_STATUSES, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=10)


class TaskStatisticsSerializer(serializers.Serializer):
    total_tasks = serializers.IntegerField()
    pending_tasks = serializers.IntegerField()
    running_tasks = serializers.IntegerField()
    completed_tasks = serializers.IntegerField()
    failed_tasks = serializers.IntegerField()
    cancelled_tasks = serializers.IntegerField()


# --- Resource API ---------------------------------------------------------------------------


class StepSerializer(BoundedModelSerializer):
    """One step of a chain: steps that share a `stage` run in parallel."""

    # Its choices are the registry when the serializer is made: this module may be imported
    # before every installed app has declared its step types.
    step_type = serializers.ChoiceField(choices=[])

    class Meta:
        model = Step
        fields = ["position", "stage", "name", "step_type", "params", "max_retries",
                  "time_limit", "queue", "map", "when", "retry_backoff", "retry_backoff_max"]
        read_only_fields = ["position"]
        extra_kwargs = {"max_retries": {"max_value": 10}, "time_limit": {"min_value": 1}}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        step_type = self.fields["step_type"]
        assert isinstance(step_type, serializers.ChoiceField)
        step_type.choices = list(STEP_TYPES)

    def to_spec(self, data: dict) -> StepSpec:
        return StepSpec(
            step_type=data["step_type"], params=data.get("params", {}),
            stage=data.get("stage", 0), name=data.get("name", ""),
            max_retries=data.get("max_retries", 0), time_limit=data.get("time_limit"),
            queue=data.get("queue", ""), map=data.get("map", False), when=data.get("when"),
            retry_backoff=data.get("retry_backoff"),
            retry_backoff_max=data.get("retry_backoff_max", 600),
        )


class ChainSerializer(BoundedModelSerializer):
    """A chain and its steps, written all at once. Unknown keys are refused (400)."""

    steps = StepSerializer(many=True)
    created_by: serializers.StringRelatedField = serializers.StringRelatedField()

    class Meta:
        model = Chain
        fields = ["id", "name", "description", "enabled", "default_inputs", "inputs_schema",
                  "max_active_runs", "steps", "created_by", "created_at", "updated_at"]
        read_only_fields = ["created_by", "created_at", "updated_at"]
        # Uniqueness is checked by the service, inside the same transaction as the write.
        extra_kwargs: dict[str, dict[str, Any]] = {
            "name": {"validators": []},
            "enabled": {"initial": True},  # the browsable API's form starts it ticked
        }

    def to_representation(self, chain: Chain) -> dict:

        data = super().to_representation(chain)
        request = self.context.get("request")
        if request is not None and not can_read_chain_inputs(request.user, chain):
            data["default_inputs"] = None
        return data

    def step_specs(self) -> list[StepSpec]:
        step_serializer = StepSerializer()
        return [step_serializer.to_spec(step) for step in self.validated_data["steps"]]


class RunStartSerializer(UnknownKeysRefused, serializers.Serializer):
    """Start a run of the chain."""

    inputs = BoundedJSONField(required=False, help_text=(
        "Any JSON value, given to the first stage; defaults to the chain's inputs."))


class NoInputSerializer(UnknownKeysRefused, serializers.Serializer):
    """The action takes no input: an empty body (or `{}`)."""


class StepAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = StepAttempt
        fields = ["number", "status", "ended_by", "task_id", "worker", "error", "traceback",
                  "log", "started_at", "finished_at"]


class ApprovalSerializer(serializers.ModelSerializer):
    decided_by: serializers.StringRelatedField = serializers.StringRelatedField(help_text=(
        "Who approved or rejected; null while undecided and for a timeout."))

    class Meta:
        model = Approval
        fields = ["message", "approvers_group", "due_at", "decision", "decided_by",
                  "decided_at", "comment", "created_at"]


# The counts of a map step's items by status.
ITEM_COUNTS_SCHEMA = {
    "type": "object", "nullable": True,
    "properties": {status.value: {"type": "integer"} for status in MAP_ITEM_STATUSES},
}


class StepRunSerializer(serializers.ModelSerializer):
    # Annotated by selectors.step_runs_with_results (None where a step is read without them).
    task_status = serializers.SerializerMethodField()
    traceback = serializers.SerializerMethodField()
    duration = serializers.FloatField(read_only=True, allow_null=True)
    log_size = serializers.SerializerMethodField()
    earlier_attempts = StepAttemptSerializer(many=True, read_only=True, help_text=(
        "Every attempt before the one this row shows, oldest first (a retry, a resume or a "
        "lost worker starts a new attempt; none is overwritten)."))
    items = serializers.SerializerMethodField()
    approvals = serializers.SerializerMethodField()
    queued_at = serializers.SerializerMethodField()

    class Meta:
        model = StepRun
        fields = ["index", "stage", "name", "step_type", "params", "queue", "map", "when",
                  "retry_backoff", "retry_backoff_max", "task_id", "status",
                  "task_status", "worker", "result", "error", "traceback", "attempts",
                  "queued_at", "started_at", "finished_at", "duration", "progress",
                  "progress_message", "log_size", "earlier_attempts", "items_total",
                  "items_done", "items", "approvals"]

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_queued_at(self, step_run: StepRun) -> str | None:
        """When the step's message was published (selectors.step_queued_times: the run's
        publishing for the first stage, the end of the stage before for a later one, a
        retry's or resume's publishing for a step tried again); null while the stage before
        it has not finished."""
        queued = getattr(step_run, "queued_at", None)
        return None if queued is None else serializers.DateTimeField().to_representation(queued)

    @extend_schema_field(ITEM_COUNTS_SCHEMA)
    def get_items(self, step_run: StepRun) -> dict[str, int] | None:
        """A map step's items by status (list them at /api/runs/{id}/steps/{index}/items/);
        null for other steps."""
        return getattr(step_run, "item_counts", None) if step_run.map else None

    @extend_schema_field(ApprovalSerializer(many=True, allow_null=True))
    def get_approvals(self, step_run: StepRun) -> list[dict] | None:
        """A flow.approval step's requests for a decision, oldest first (a retried run asks
        again; earlier decisions stay); null for other steps."""
        if step_run.step_type != APPROVAL:
            return None
        return list(ApprovalSerializer(step_run.approvals.all(), many=True).data)

    def get_task_status(self, step_run: StepRun) -> str | None:
        return getattr(step_run, "task_status", None)

    def get_traceback(self, step_run: StepRun) -> str | None:
        return getattr(step_run, "task_traceback", None)

    def get_log_size(self, step_run: StepRun) -> int:
        """Characters the step logged: read them at /api/runs/{id}/steps/{index}/log/."""
        return getattr(step_run, "log_size", None) or 0



class StepLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = StepRun
        fields = ["index", "step_type", "log"]


class RunSerializer(serializers.ModelSerializer):
    chain_name = serializers.CharField(source="chain.name", default=None, read_only=True)
    created_by: serializers.StringRelatedField = serializers.StringRelatedField()
    parent_run = serializers.SerializerMethodField()
    version = serializers.SerializerMethodField()
    current_version = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = ["id", "chain", "chain_name", "task_type", "description", "status", "trigger",
                  "inputs", "result", "error", "steps_done", "steps_total", "created_by",
                  "created_at", "started_at", "finished_at", "retries", "retried_status",
                  "retried_error", "retried_at", "parent_run", "depth", "version",
                  "current_version"]

    def get_version(self, run: Run) -> int | None:
        """The number of the chain version the run ran (GET /api/chains/{chain}/versions/
        {version}/); null for a seed task's run."""
        if hasattr(run, "version_number"):  # selectors.with_version_numbers
            return run.version_number
        numbers = run_version_numbers(run)
        return numbers[0] if numbers else None

    def get_current_version(self, run: Run) -> int | None:
        """The number of the chain's current version (compare the two with GET
        /api/chains/{chain}/versions/diff/?a={version}&b={current_version}); null without a
        chain."""
        if hasattr(run, "current_version_number"):  # selectors.with_version_numbers
            return run.current_version_number
        return latest_version_number(run.chain_id)

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_parent_run(self, run: Run) -> str | None:
        """The run whose flow.chain step started this one; null for a top run."""
        parent = parent_run_of(run)
        return None if parent is None else str(parent)


class RunDetailSerializer(RunSerializer):
    steps = serializers.SerializerMethodField()
    child_runs = serializers.SerializerMethodField()

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "child_runs", "steps"]

    @extend_schema_field(StepRunSerializer(many=True))
    def get_steps(self, run: Run) -> list[dict]:
        return list(StepRunSerializer(step_runs_in_detail(run), many=True).data)

    @extend_schema_field(serializers.ListField(child=serializers.UUIDField()))
    def get_child_runs(self, run: Run) -> list[str]:
        """The runs this run's flow.chain steps started, oldest first."""
        return [str(pk) for pk in child_run_ids(run)]


class RunFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[(s.value, s.label) for s in states.RUN_STATUSES],
                                     required=False)
    trigger = serializers.ChoiceField(choices=RunTrigger.choices, required=False)
    chain = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    task_type = serializers.ChoiceField(choices=list(PRESETS), required=False)


class DecisionSerializer(UnknownKeysRefused, serializers.Serializer):
    """Approve or reject the approval the run waits for."""

    comment = serializers.CharField(required=False, allow_blank=True, default="",
                                    max_length=2000,
                                    help_text="Kept with the decision; a rejection's run "
                                    "fails with \"rejected by <user>: <comment>\".")


class MapItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = MapItem
        fields = ["index", "status", "result", "error", "attempts", "worker", "started_at",
                  "finished_at"]


class MapItemFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[(s.value, s.label) for s in MAP_ITEM_STATUSES],
                                     required=False)


class TaskTypeSerializer(serializers.Serializer):
    key = serializers.CharField()
    description = serializers.CharField()
    config_schema = serializers.JSONField(help_text="JSON Schema of the task type's `config`.")


class StepTypeSerializer(serializers.Serializer):
    key = serializers.CharField()
    family = serializers.CharField()
    description = serializers.CharField()
    params_schema = serializers.JSONField()


class ChainScheduleSerializer(BoundedModelSerializer):
    """Fields only: chains.services.schedule_save checks and writes."""

    next_fire_times = serializers.SerializerMethodField()
    owner: serializers.StringRelatedField = serializers.StringRelatedField(source="created_by")

    class Meta:
        model = ChainSchedule
        fields = ["id", "chain", "name", "kind", "every_seconds", "minute", "hour",
                  "day_of_month", "month_of_year", "day_of_week", "run_at", "timezone", "inputs",
                  "enabled", "overlap", "skipped_firings", "last_skipped_at", "disabled_reason",
                  "owner", "next_fire_times", "created_at"]
        read_only_fields = ["created_at", "disabled_reason", "skipped_firings", "last_skipped_at"]

    def to_representation(self, schedule: ChainSchedule) -> dict:
        data = super().to_representation(schedule)
        request = self.context.get("request")
        if request is not None and not can_read_schedule_inputs(request.user, schedule):
            data["inputs"] = None  # its owner's, as a chain's default inputs are its author's
        return data

    def get_next_fire_times(self, schedule: ChainSchedule) -> list[str]:


        if not schedule.enabled:
            return []
        last = schedule.periodic_task.last_run_at if schedule.periodic_task else None
        try:
            times = next_fire_times(schedule, after=timezone.now(), last_run_at=last)
        except (OverflowError, ValueError, TypeError):  # a row no check ever saw
            return []
        return [t.isoformat() for t in times]


class WorkerSerializer(serializers.Serializer):
    name = serializers.CharField()
    queues = serializers.ListField(child=serializers.CharField())
    active = serializers.IntegerField()


class QueueSerializer(serializers.Serializer):
    name = serializers.CharField()
    messages = serializers.IntegerField(allow_null=True)
    workers = serializers.IntegerField()


class TokenSerializer(serializers.Serializer):
    key = serializers.CharField(allow_null=True)
    created = serializers.DateTimeField(allow_null=True)
