"""What a step does through its context: progress, a kept log, its attempt, a stable
idempotency key and data paths, seen in the API and on the run page."""
import pytest
from django.urls import reverse
from pydantic import BaseModel

from chains import services
from chains.models import StepRun
from chains.presets import StepSpec
from chains.steps import STEP_TYPES, StepContext, StepFailed, step
from chains.steps.context import StepLog
from tests.factories import make_run, token_client

pytestmark = pytest.mark.django_db

SEEN: dict = {}


class Nothing(BaseModel):
    path: str = ""


@pytest.fixture(autouse=True)
def _reporting_step():
    known = dict(STEP_TYPES)

    @step("test.report", params=Nothing)
    def report(params: Nothing, previous, context: StepContext):
        SEEN.update(attempt=context.attempt, key=context.idempotency_key)
        context.progress(0.5, "half way")
        context.log.info("working on %s", previous)
        context.log.warning("careful")
        if params.path:
            return str(context.data_path(params.path))
        return previous

    yield
    STEP_TYPES.clear()
    STEP_TYPES.update(known)
    SEEN.clear()


def test_a_step_reports_progress_and_keeps_its_log(user):
    run = make_run(StepSpec("test.report", {}, 0), user=user, inputs=7)
    step_run = run.step_runs.get()
    assert services.step_execute(step_run_id=step_run.id, previous=7) == 7
    step_run.refresh_from_db()
    assert (step_run.progress, step_run.progress_message) == (0.5, "half way")
    lines = step_run.log.splitlines()
    assert lines[0].endswith("INFO working on 7") and lines[1].endswith("WARNING careful")
    assert SEEN == {"attempt": 1, "key": f"{run.id}:0"}

    api = token_client(user)
    detail = api.get(f"/api/runs/{run.id}/").json()["steps"][0]
    assert (detail["progress"], detail["progress_message"]) == (0.5, "half way")
    assert detail["log_size"] == len(step_run.log)
    log = api.get(f"/api/runs/{run.id}/steps/0/log/")
    assert log.status_code == 200
    assert log.json() == {"index": 0, "step_type": "test.report", "log": step_run.log}
    assert api.get(f"/api/runs/{run.id}/steps/5/log/").status_code == 404


def test_the_key_stays_and_the_attempt_counts_across_a_retry(user):
    run = make_run(StepSpec("test.report", {}, 0), user=user)
    step_run = run.step_runs.get()
    StepRun.objects.filter(id=step_run.id).update(attempts=1)  # a delivery whose worker died
    services.step_execute(step_run_id=step_run.id, previous=1)
    assert SEEN == {"attempt": 2, "key": f"{run.id}:0"}


def test_data_paths_are_refused_as_the_io_steps_refuse_them(user, data_dir):
    (data_dir / "in.txt").write_text("x")
    run = make_run(StepSpec("test.report", {"path": "in.txt"}, 0), user=user)
    step_run = run.step_runs.get()
    assert services.step_execute(step_run_id=step_run.id, previous=1) == str(
        (data_dir / "in.txt").resolve())
    outside = make_run(StepSpec("test.report", {"path": "../etc/passwd"}, 0), user=user)
    with pytest.raises(StepFailed, match="passwd"):
        services.step_execute(step_run_id=outside.step_runs.get().id, previous=1)


def test_the_log_is_cut_with_a_marker():
    import logging

    kept = StepLog(limit=100)
    logger = logging.Logger("cut")
    logger.addHandler(kept)
    for n in range(20):
        logger.info("line %d", n)
    assert kept.size <= 100 and kept.text.endswith("… (log cut: over 100 bytes)\n")


def test_a_step_of_a_type_no_app_declares_fails_with_its_name(user):
    run = make_run(StepSpec("test.report", {}, 0), user=user)
    STEP_TYPES.pop("test.report")
    with pytest.raises(StepFailed, match="unknown step type 'test.report'"):
        services.step_execute(step_run_id=run.step_runs.get().id, previous=1)


def test_the_run_page_shows_progress_and_links_the_log(admin_client, admin_user):
    run = make_run(StepSpec("test.report", {}, 0), user=admin_user)
    step_run = run.step_runs.get()
    services.step_execute(step_run_id=step_run.id, previous=1)
    StepRun.objects.filter(id=step_run.id).update(status="RUNNING")  # seen while it runs
    page = admin_client.get(reverse("admin:chains_run_change", args=[run.pk])).content.decode()
    assert "50% · half way" in page
    assert f'href="/api/runs/{run.pk}/steps/0/log/" class="tc-step-log"' in page


def test_a_steps_log_reaches_the_worker_log_as_the_project_allows(user, caplog):
    import logging

    run = make_run(StepSpec("test.report", {}, 0), user=user, inputs=3)
    with caplog.at_level(logging.WARNING, logger="chains.step"):
        services.step_execute(step_run_id=run.step_runs.get().id, previous=3)
    passed = [r.getMessage() for r in caplog.records if r.name.startswith("chains.step")]
    assert passed == ["careful"]  # the INFO line is kept with the step, not logged here
    assert "working on 3" in run.step_runs.get().log


def test_a_retried_step_keeps_its_log_with_the_attempt_and_starts_clean(user):
    run = make_run(StepSpec("test.report", {}, 0), user=user, inputs=2)
    step_run = run.step_runs.get()
    services.step_execute(step_run_id=step_run.id, previous=2)  # progress and a log...
    StepRun.objects.filter(id=step_run.id).update(status="RUNNING")
    services.step_fail(step_run_id=step_run.id, error="then it failed")
    run = services.run_retry(run=run)
    step_run.refresh_from_db()
    assert (step_run.progress, step_run.progress_message, step_run.log) == (None, "", "")
    (kept,) = step_run.earlier_attempts.all()
    assert "working on 2" in kept.log and kept.error == "then it failed"
