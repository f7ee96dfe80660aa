"""Chains and their steps (definitions); runs and step runs (executions)."""
import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from rest_framework.authtoken.models import TokenProxy

from chains import states
from chains.states import RunStatus
from chains.steps import STEP_TYPES


def _step_type_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """The registered step types grouped by family, built-in and declared ones alike (read
    when a form is made, so types declared by any app are there)."""
    families: dict[str, list[tuple[str, str]]] = {}
    for key in STEP_TYPES:
        families.setdefault(key.split(".", 1)[0], []).append((key, key))
    return list(families.items())


class Chain(models.Model):
    """A reusable definition: an ordered list of steps, some of them parallel."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True, help_text="Disabled chains cannot be started.")
    default_inputs = models.JSONField(
        default=dict, blank=True, help_text="Given to the first stage when a run has no inputs."
    )
    inputs_schema = models.JSONField(
        null=True, blank=True,
        help_text="A JSON Schema every run's inputs must fit (checked when a run starts).",
    )
    max_active_runs = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="At most this many runs of the chain at once (PENDING, RUNNING or WAITING); "
        "more wait as QUEUED and start, oldest first, as runs end. Empty: no limit.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="chains",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name



class ChangeSource(models.TextChoices):
    """Where a change came from."""

    ADMIN = "admin", "Admin"
    API = "api", "API"
    IMPORT = "import", "Import"
    COMMAND = "command", "Command"
    RESTORE = "restore", "Restore"
    BEAT = "beat", "Beat"
    WORKER = "worker", "Worker"


class ChainVersion(models.Model):
    """One immutable version of a chain's definition (its name, description, default inputs,
    inputs schema and steps), numbered from 1. A new one is written by every save that changes
    the definition; a run records the version it ran."""

    chain = models.ForeignKey(Chain, null=True, on_delete=models.SET_NULL,
                              related_name="versions",
                              help_text="Empty once the chain is deleted (its runs keep it).")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                               on_delete=models.SET_NULL, related_name="+")
    source = models.CharField(max_length=16, choices=ChangeSource.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["chain", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "number"], name="chainversion_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.chain or 'deleted chain'} version {self.number}"


class Step(models.Model):
    """One step of a chain. Steps sharing a stage run in parallel as a Celery group."""

    chain = models.ForeignKey(Chain, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(help_text="Order of the step within its chain.")
    stage = models.PositiveIntegerField(
        default=0,
        help_text="Steps with the same stage run in parallel; the next stage receives the "
        "list of their results.",
    )
    name = models.CharField(max_length=100, blank=True)
    step_type = models.CharField(max_length=64, choices=_step_type_choices)
    params = models.JSONField(default=dict, blank=True)
    max_retries = models.PositiveSmallIntegerField(
        default=0, help_text="Retries after an unexpected error (not after a step's own error)."
    )
    time_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds; empty means the project default."
    )
    queue = models.CharField(
        max_length=64, blank=True, help_text="Empty means the step family's queue."
    )
    map = models.BooleanField(
        default=False, help_text="Run once per item of the list the stage receives, in "
        "parallel; the result is the list of the items' results. Alone in its stage.")
    when = models.JSONField(
        null=True, blank=True,
        help_text='Run only if {"path": "a.b", "op": ">", "value": 1} holds for the input; '
        "otherwise the step is SKIPPED.")
    retry_backoff = models.PositiveIntegerField(
        null=True, blank=True, help_text="Seconds before the first retry, doubling each time "
        "with full jitter; empty means 2 s each time.")
    retry_backoff_max = models.PositiveIntegerField(
        default=600, help_text="The longest wait between retries (seconds).")

    class Meta:
        ordering = ["chain", "position"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "position"], name="step_unique_position"),
            models.CheckConstraint(
                condition=Q(max_retries__lte=10), name="step_max_retries_lte_10"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.chain}: step {self.position + 1} ({self.name or self.step_type})"


class RunTrigger(models.TextChoices):
    ADMIN = "admin", "Admin"
    API = "api", "API"
    SCHEDULE = "schedule", "Schedule"
    COMMAND = "command", "Command"
    PARENT = "parent", "Parent run"


class ResultMode(models.TextChoices):
    LAST_STAGE = "last_stage", "Result of the last stage"
    ALL_STEPS = "all_steps", "Results of every step, in order"


class Run(models.Model):
    """One execution of a chain (or of a seed task type), with its own copy of the steps."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    chain = models.ForeignKey(
        Chain, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    task_type = models.CharField(
        max_length=32, blank=True, help_text="Seed task type (math_chain, ...) if submitted so."
    )
    description = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    trigger = models.CharField(max_length=16, choices=RunTrigger.choices)
    inputs = models.JSONField(default=dict, blank=True)
    result_mode = models.CharField(
        max_length=16, choices=ResultMode.choices, default=ResultMode.LAST_STAGE
    )
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    steps_total = models.PositiveIntegerField(default=0)
    steps_done = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="runs",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When the canvas last reached the broker; empty while it has not (outbox).",
    )
    last_progress_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time a step of this run started or finished."
    )
    resumes = models.PositiveSmallIntegerField(
        default=0, help_text="Times the reconciler re-published this run after it stalled."
    )
    retries = models.PositiveIntegerField(
        default=0, help_text="Times the run was retried after it failed or was cancelled."
    )
    retried_status = models.CharField(
        max_length=16, choices=RunStatus.choices, blank=True,
        help_text="How the run ended before its latest retry (FAILED or CANCELLED).")
    retried_error = models.TextField(
        blank=True, help_text="The error the run ended with before its latest retry."
    )
    retried_at = models.DateTimeField(null=True, blank=True,
                                      help_text="When the run was last retried.")
    schedule = models.ForeignKey(
        "ChainSchedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    scheduled_for = models.DateTimeField(
        null=True, blank=True, help_text="The schedule's time slot this run was started for."
    )
    # No foreign key in the database (Django still sets it to NULL when the step goes): the
    # purge deletes a million steps at a time, and each constraint on a step is a check per
    # deleted step (on PostgreSQL a query each, at commit). The purge unlinks it itself.
    parent_step = models.ForeignKey(
        "StepRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="child_runs",
        db_constraint=False, help_text="The flow.chain step of another run that started this one.")
    depth = models.PositiveSmallIntegerField(
        default=0, help_text="How deep this run is nested in sub-chains (0: a top run).")
    version = models.ForeignKey(
        ChainVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs",
        help_text="The version of its chain the run executes.")

    class Meta:
        ordering = ["-created_at"]
        permissions = [("approve_run", "Can approve or reject a run waiting for approval")]
        constraints = [
            models.CheckConstraint(
                condition=Q(steps_done__lte=F("steps_total")), name="run_steps_done_lte_total"
            ),
            # At most one run per schedule and time slot, however often beat fires.
            models.UniqueConstraint(
                fields=["schedule", "scheduled_for"], name="run_one_per_schedule_slot",
                condition=Q(schedule__isnull=False),
            ),
        ]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="run_status_created"),
            models.Index(fields=["created_by", "-created_at"], name="run_owner_created"),
            models.Index(fields=["chain", "-created_at"], name="run_chain_created"),
            # Newest first with no filter (admin run list, /api/runs/): the pk breaks ties
            # as the admin's ordering does, so no sort of the whole table.
            models.Index(fields=["-created_at", "-id"], name="run_newest_first"),
            # /tasks/statistics of a user who is not staff counts by status from the index
            # alone; /tasks?status= of such a user reads it newest first.
            models.Index(fields=["created_by", "status", "-created_at"],
                         name="run_owner_status_created"),
            models.Index(
                fields=["last_progress_at"], name="run_open_progress",
                condition=Q(status__in=["PENDING", "RUNNING"]),
            ),
            # The dashboard's recent failures: the newest FAILED runs without a sort (only
            # those: the status index stays the one of counts by status).
            models.Index(fields=["status", "-finished_at"], name="run_failed_finished",
                         condition=Q(status="FAILED")),
            # The runs ever retried (few): how many (/tasks/statistics, the dashboard) and
            # the ones retried after a failure, without reading every run.
            models.Index(fields=["created_by"], name="run_retried", condition=Q(retries__gt=0)),
        ]

    def __str__(self) -> str:
        return f"{self.chain or self.task_type or 'run'} {self.id}"

    @property
    def is_finished(self) -> bool:
        return self.status in states.FINAL


class StepRun(models.Model):
    """One step of one run. Its Celery task id is chosen before the canvas is published, so
    django-celery-results' TaskResult row for the step is found by that id."""

    # Looked up by the (run, index) constraint's index: one of its own would only be one more
    # for every insert and delete to keep.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="step_runs",
                            db_index=False)
    index = models.PositiveIntegerField(help_text="0-based order of the step in the run.")
    stage = models.PositiveIntegerField()
    name = models.CharField(max_length=100, blank=True)
    step_type = models.CharField(max_length=64)
    params = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=64)
    max_retries = models.PositiveSmallIntegerField(default=0)
    time_limit = models.PositiveIntegerField(null=True, blank=True)
    map = models.BooleanField(default=False)
    when = models.JSONField(null=True, blank=True)
    retry_backoff = models.PositiveIntegerField(null=True, blank=True)
    retry_backoff_max = models.PositiveIntegerField(default=600)
    items_total = models.PositiveIntegerField(
        null=True, blank=True, help_text="A map step's items (once it has started).")
    items_done = models.PositiveIntegerField(default=0)
    task_id = models.CharField(max_length=255, unique=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True,
                              help_text="Host name of the worker that last started the step.")
    worker_pid = models.PositiveIntegerField(
        null=True, blank=True, help_text="Process id of that worker (its main process).")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    progress = models.FloatField(null=True, blank=True,
                                 help_text="How far the running step says it is, 0 to 1.")
    progress_message = models.CharField(max_length=200, blank=True)
    log = models.TextField(blank=True, help_text="What the step logged (context.log), bounded "
                                                 "by CHAINS_MAX_STEP_LOG_BYTES.")

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="steprun_unique_index"),
        ]

    def __str__(self) -> str:
        return f"step {self.index + 1} ({self.name or self.step_type})"

    @property
    def duration(self) -> float | None:
        """Seconds from the step's last start to its end."""
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class MapItem(models.Model):
    """One item of a map step: the step's function run on one element of its input list."""

    # What hangs off a step is linked to it without a database constraint and found by its
    # unique constraint's index (see Run.parent_step); Django still cascades.
    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="items",
                                 db_index=False, db_constraint=False)
    index = models.PositiveIntegerField(help_text="0-based position in the input list.")
    task_id = models.CharField(max_length=255, unique=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["step_run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["step_run", "index"], name="mapitem_unique_index"),
        ]
        indexes = [models.Index(fields=["step_run", "status"], name="mapitem_step_status")]

    def __str__(self) -> str:
        return f"item {self.index} of {self.step_run}"


class Decision(models.TextChoices):
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    TIMED_OUT = "timed_out", "Timed out"


class Approval(models.Model):
    """A flow.approval step waiting for (or given) a person's decision. A retry of the run asks
    again: a new row; earlier decisions stay."""

    # As MapItem.step_run: no database constraint, its unique constraint's index.
    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="approvals",
                                 db_index=False, db_constraint=False)
    task_id = models.CharField(max_length=255, help_text="The step's task that asked.")
    message = models.TextField(blank=True)
    approvers_group = models.CharField(max_length=150, blank=True)
    input = models.JSONField(null=True, blank=True,
                             help_text="What the step passes on once approved.")
    due_at = models.DateTimeField()
    decision = models.CharField(max_length=16, choices=Decision.choices, blank=True)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step_run", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["step_run", "task_id"], name="approval_per_task"),
        ]
        indexes = [
            models.Index(fields=["due_at"], name="approval_open_due",
                         condition=Q(decision="")),
        ]

    def __str__(self) -> str:
        return f"approval of {self.step_run}"


class AttemptEnd(models.TextChoices):
    """Why an attempt of a step was followed by another."""

    STEP_RETRIED = "step_retried", "the step raised and was tried again (max_retries)"
    RUN_RETRIED = "run_retried", "the run was retried"
    RUN_RESUMED = "run_resumed", "the run stalled and was resumed"
    WORKER_LOST = "worker_lost", "its worker or its message was lost"


class StepAttempt(models.Model):
    """An attempt of a step that another attempt followed. The step's own row holds its latest
    attempt; these rows keep every one before it, so a retry never overwrites a failure."""

    # As MapItem.step_run: no database constraint, its unique constraint's index.
    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE,
                                 related_name="earlier_attempts", db_index=False,
                                 db_constraint=False)
    number = models.PositiveIntegerField(help_text="1 for the step's first attempt.")
    task_id = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=RunStatus.choices)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    log = models.TextField(blank=True, help_text="What the attempt logged (context.log).")
    worker = models.CharField(max_length=255, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.CharField(max_length=16, choices=AttemptEnd.choices)

    class Meta:
        ordering = ["step_run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["step_run", "number"], name="stepattempt_unique"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.step_run}"


class OverlapPolicy(models.TextChoices):
    """What a firing does while the schedule's previous run is still active."""

    ALLOW = "allow", "Allow: start another run"
    SKIP = "skip", "Skip the firing (recorded)"
    BUFFER_ONE = "buffer_one", "Buffer one: it waits for the active run (at most one waits)"
    CANCEL_OTHER = "cancel_other", "Cancel the active run and start"


class ScheduleKind(models.TextChoices):
    INTERVAL = "interval", "Every N seconds"
    CRONTAB = "crontab", "Crontab"
    ONCE = "once", "Once, at a time"


class ChainSchedule(models.Model):
    """When a chain runs by itself. Kept in sync with a django-celery-beat PeriodicTask whose
    task is always chains.run_scheduled: nobody types a task name."""

    chain = models.ForeignKey(Chain, on_delete=models.CASCADE, related_name="schedules")
    name = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=16, choices=ScheduleKind.choices,
                            default=ScheduleKind.INTERVAL)
    every_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="For an interval schedule.")
    minute = models.CharField(max_length=64, default="0", blank=True)
    hour = models.CharField(max_length=64, default="*", blank=True)
    day_of_month = models.CharField(max_length=64, default="*", blank=True)
    month_of_year = models.CharField(max_length=64, default="*", blank=True)
    day_of_week = models.CharField(max_length=64, default="*", blank=True,
                                   help_text="0-6, Sunday is 0.")
    run_at = models.DateTimeField(null=True, blank=True, help_text="For a one-off schedule.")
    timezone = models.CharField(max_length=64, default="UTC",
                                help_text="An IANA name such as Europe/Berlin.")
    inputs = models.JSONField(null=True, blank=True,
                              help_text="Empty means the chain's default inputs.")
    enabled = models.BooleanField(default=True)
    overlap = models.CharField(
        max_length=16, choices=OverlapPolicy.choices, default=OverlapPolicy.ALLOW,
        help_text="What a firing does while this schedule's previous run is still active.")
    skipped_firings = models.PositiveIntegerField(
        default=0, editable=False, help_text="Firings skipped by the overlap policy.")
    last_skipped_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
        related_name="chain_schedules", editable=False,
        help_text="The owner: its runs are theirs, and each firing checks their right to start "
        "runs. Empty for schedules an operator imported: their runs belong to nobody.",
    )
    disabled_reason = models.CharField(
        max_length=255, blank=True, editable=False,
        help_text="Why the schedule stopped by itself (its owner lost the right to start runs).",
    )
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", null=True, blank=True, editable=False,
        on_delete=models.SET_NULL, related_name="chain_schedule",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["chain", "id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind="interval") | Q(every_seconds__gte=1),
                name="schedule_interval_has_seconds",
            ),
            models.CheckConstraint(
                condition=~Q(kind="once") | Q(run_at__isnull=False),
                name="schedule_once_has_time",
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"{self.chain} ({self.describe()})"

    def describe(self) -> str:
        if self.kind == ScheduleKind.INTERVAL:
            return f"every {self.every_seconds} s"
        if self.kind == ScheduleKind.ONCE:
            return f"once at {self.run_at:%Y-%m-%d %H:%M} {self.timezone}"
        return (f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year} "
                f"{self.day_of_week} ({self.timezone})")



class WorkerHeartbeat(models.Model):
    """A worker process that is alive: written when it starts and every
    CHAINS_HEARTBEAT_SECONDS. A step RUNNING on a worker without a recent heartbeat, or on one
    that started after the step did, lost its worker."""

    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    booted_at = models.DateTimeField()
    seen_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hostname", "pid"], name="worker_heartbeat_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.hostname} ({self.pid})"


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key on a request that started a run: the same key and body
    within CHAINS_IDEMPOTENCY_SECONDS give that run again instead of a new one."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the request.")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_per_user"),
        ]
        indexes = [
            # The reconciler deletes expired keys by age.
            models.Index(fields=["created_at"], name="idempotency_key_created"),
        ]

    def __str__(self) -> str:
        return self.key


class ApiToken(TokenProxy):
    """An API token as the admin lists it: its user and a prefix of the key, never the key."""

    class Meta:
        proxy = True
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.user} ({self.key[:4]}…)"


class MetricCount(models.Model):
    """One stored sample of a Prometheus counter or histogram (chains.metrics): a counter's
    value, or a histogram's bucket (not cumulative), sum or count, for one set of label
    values. Services add to it in the transaction of the event it counts; /metrics reads the
    whole table, which stays small (a row per label set and bucket, not per run)."""

    name = models.CharField(max_length=100, help_text="The sample's name, e.g. "
                                                      "chains_runs_started_total.")
    labels = models.TextField(help_text="The label values as a JSON list, in the metric's "
                                        "label order.")
    value = models.FloatField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "labels"], name="metriccount_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name}{self.labels} = {self.value:g}"


# Notification rules and deliveries live in their own module (registered here with the app).
from chains.notification_models import (  # noqa: E402
    Delivery as Delivery,
)
from chains.notification_models import (  # noqa: E402
    NotificationRule as NotificationRule,
)


class BulkJobStatus(models.TextChoices):
    PENDING = "PENDING", "Pending"
    RUNNING = "RUNNING", "Running"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"


class BulkJob(models.Model):
    """A bulk action over more runs than one request acts on (services.bulk): what was asked,
    by whom, and how far it got, for GET /api/runs/bulk/<id>/ and the admin's progress page."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="bulk_jobs")
    action = models.CharField(max_length=16)
    filter = models.JSONField(default=dict, blank=True,
                              help_text="The run filter (the keys of GET /api/runs/).")
    source = models.CharField(max_length=16, default="api", help_text="api or admin.")
    status = models.CharField(max_length=16, choices=BulkJobStatus.choices,
                              default=BulkJobStatus.PENDING)
    matched = models.PositiveIntegerField(null=True, blank=True,
                                          help_text="Runs matching the filter when it started.")
    done = models.PositiveIntegerField(default=0)
    skipped = models.JSONField(default=dict, blank=True, help_text="{reason: count}")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.action} {self.filter} ({self.status})"

    @property
    def progress(self) -> float | None:
        """The share of the matched runs acted on or skipped so far, 0 to 1."""
        if not self.matched:
            return 1.0 if self.status == BulkJobStatus.COMPLETED else None
        return min(1.0, (self.done + sum(self.skipped.values())) / self.matched)


# The rows whose task ids have TaskResult rows, which go when they go: a step's latest attempt,
# its earlier ones, a map item (a failure is stored) and the task that asked for an approval.
TASK_ID_MODELS = (StepRun, MapItem, StepAttempt, Approval)
