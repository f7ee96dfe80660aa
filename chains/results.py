"""The Celery result backend: django-celery-results' database backend, writing each task state
with one upsert, gathering a finished chord header's results with one query, and failing a
step's run when it records a failure the step could not report itself."""
import logging
from typing import Any

from celery import maybe_signature, states
from celery.exceptions import ChordError
from celery.result import AsyncResult
from django.db import connection, router, transaction
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend, trigger_callback
from django_celery_results.models import ChordCounter, TaskResult

from chains import services
from chains.steps.base import TASK_NAME_PREFIX

logger = logging.getLogger(__name__)

# What a state write may change on an existing row (date_created stays the first write's).
UPSERT_FIELDS = ["status", "result", "traceback", "meta", "content_type", "content_encoding",
                 "periodic_task_name", "task_name", "task_args", "task_kwargs", "worker",
                 "date_done"]


_NOT_COUNTED = object()
_COUNTED_BEFORE = object()


def _chord_count_down(group_id: str) -> int | None:
    """One statement: the chord's counter goes down by one; how many parts are left (None
    when the group has no counter)."""
    table = connection.ops.quote_name(ChordCounter._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET count = count - 1 WHERE group_id = %s "
                       "RETURNING count", [group_id])
        row = cursor.fetchone()
    return row[0] if row else None


class ResultBackend(DatabaseBackend):
    """Same table, same rows as the stock backend; fewer round trips. The stock backend reads
    the row before every write and, when a chord's header is done, reads its results one by
    one: with 1,000 parallel steps that was thousands of queries. A step that completes writes
    its result row, and as a chord's header part counts the chord down, in its own
    transaction (store_with_step)."""

    # Task ids whose SUCCESS row their step wrote itself (in this worker process), and of
    # those that are chord header parts, how many parts were left once each was counted
    # (_COUNTED_BEFORE: by an earlier delivery).
    _written_with_step: dict[str, bool] = {}
    _chord_parts_counted: dict[str, object] = {}

    def _store_result(self, task_id, result, status, traceback=None, request=None,
                      using=None):
        if self._written_with_step.pop(task_id, None) and status == states.SUCCESS:
            return None  # written in the step's own transaction (store_with_step)
        row = self._row(task_id, result, status, traceback, request)
        self._write(row, using=using)
        return row.result

    def store_with_step(self, task_id: str, result: Any, request: Any) -> None:
        """A step task's SUCCESS row, written inside the transaction that completes its step
        (one commit for both); the write Celery makes once the task returns is then
        skipped. If that transaction rolls back, the task fails and its failure is written
        as usual."""
        self._write(self._row(task_id, result, states.SUCCESS, None, request))
        self._written_with_step[task_id] = True
        if len(self._written_with_step) > 10_000:  # entries a crash between the two left
            self._written_with_step.clear()
            self._chord_parts_counted.clear()
        if getattr(request, "chord", None) and getattr(request, "group", None):
            # A chord's header step counts itself done in the same transaction.
            self._chord_parts_counted[task_id] = _chord_count_down(request.group)

    def counted_with_step_before(self, task_id: str) -> None:
        """A step delivered again that a first delivery completed: its chord part was counted
        in that completion's transaction, so it is not counted again."""
        if len(self._chord_parts_counted) > 10_000:  # those of steps in no chord stay
            self._chord_parts_counted.clear()
        self._chord_parts_counted[task_id] = _COUNTED_BEFORE

    def on_chord_part_return(self, request, state, result, **kwargs):
        counted = self._chord_parts_counted.pop(request.id, _NOT_COUNTED)
        if counted is _NOT_COUNTED:  # not counted with its step: a failure, a skipped step
            return self._chord_part_counted_now(request)
        if counted is None:
            logger.warning("no chord counter for group %s", request.group)
        elif counted is _COUNTED_BEFORE or counted == 0:
            # The last part goes on to the body now that its step committed; a delivery again
            # does what a first one that died before this left undone (its counter at 0).
            counter = ChordCounter.objects.filter(group_id=request.group, count__lte=0).first()
            if counter is not None and ChordCounter.objects.filter(pk=counter.pk).delete()[0]:
                self._chord_body_call(request, counter)  # by whoever deleted the counter
        return None

    def _row(self, task_id, result, status, traceback, request) -> TaskResult:
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {**self._get_meta_from_request(request),
                "children": self.current_task_children(request)}
        row = TaskResult(
            task_id=task_id, status=status, result=encoded, traceback=traceback,
            meta=self.encode_content(meta)[2], content_type=content_type,
            content_encoding=content_encoding, date_done=timezone.now(),
            **{k: v for k, v in self._get_extended_properties(request, traceback).items()
               if k != "traceback"},
        )
        if status == states.STARTED:
            row.date_started = row.date_done
        return row

    @staticmethod
    def _write(row: TaskResult, *, using=None) -> None:
        fields = list(UPSERT_FIELDS) + (["date_started"] if row.date_started else [])
        TaskResult.objects.using(using or router.db_for_write(TaskResult)).bulk_create(
            [row], update_conflicts=True, unique_fields=["task_id"], update_fields=fields)

    def mark_as_failure(self, task_id, exc, *args, request=None, **kwargs):
        """Every recorded failure comes here: a step's own errors, which it has reported
        already, and those only the worker sees, a hard time limit or a lost process. For a
        step task the run fails with it, in the process that recorded it (no error callback
        in every message, no task to queue)."""
        super().mark_as_failure(task_id, exc, *args, request=request, **kwargs)
        # A worker that does not know the task (its step type is declared by no app there)
        # reports it with the task's `name`.
        task = getattr(request, "task", None) or getattr(request, "name", None) or ""
        if task.startswith(TASK_NAME_PREFIX):
            try:
                # A map step's item stores no result (chains.services.workflows): it fails
                # with the exception at hand.
                if not services.map_item_fail_by_task_id(
                        task_id=task_id, error=f"{type(exc).__name__}: {exc}"):
                    services.step_fail_by_task_id(task_id=task_id)
            except Exception:  # the reconciler fails or resumes the run later
                logger.exception("could not fail the run of step task %s", task_id)

    def _chord_part_counted_now(self, request) -> None:
        tid, gid = request.id, request.group
        if not gid or not tid:
            return
        with transaction.atomic(using=router.db_for_write(ChordCounter)):
            counter = ChordCounter.objects.select_for_update().filter(group_id=gid).first()
            if counter is None:
                logger.warning("no chord counter for group %s", gid)
                return
            counter.count -= 1
            if counter.count:
                counter.save(update_fields=["count"])
                return
            counter.delete()
        self._chord_body_call(request, counter)

    def _chord_body_call(self, request, counter: ChordCounter) -> None:
        header = counter.group_result(app=self.app)
        callback = maybe_signature(request.chord, app=self.app)
        if not all(isinstance(r, AsyncResult) for r in header.results):
            # Nested groups: the stock way, result by result.
            if header.ready():
                trigger_callback(app=self.app, callback=callback, group_result=header)
            return
        self._call_chord_body(callback, [r.id for r in header.results])

    def _call_chord_body(self, callback, task_ids: list[str]) -> None:
        """The body gets the header's results in header order, or the chord fails naming the
        first step that did not succeed."""
        rows = {row.task_id: row for row in TaskResult.objects.filter(task_id__in=task_ids)}
        values: list[Any] = []
        for task_id in task_ids:
            row = rows.get(task_id)
            if row is None or row.status not in states.READY_STATES:
                # Like the stock backend: no body for a header that is not all done; the
                # reconciler resumes the run if it stalls.
                logger.warning("chord header task %s is not finished", task_id)
                return
            if row.status != states.SUCCESS:
                reason = f"Dependency {task_id} raised {row.status}"
                self.chord_error_from_stack(callback, ChordError(reason))
                return
            values.append(self.decode_content(row, row.result))
        try:
            callback.delay(values)
        except Exception as exc:  # noqa: BLE001 - reported to the body's error callbacks
            logger.exception("chord callback %r raised", callback)
            self.chord_error_from_stack(callback, ChordError(f"Callback error: {exc!r}"))
