"""Bulk cancel, retry and delete (services.bulk): each run checked as its single action is,
the runs walked in chunks; POST /api/runs/bulk/ in the request and as a job; no worker."""
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.db import connection

from chains import services
from chains.models import BulkJob, BulkJobStatus, Run, RunStatus, RunTrigger
from chains.presets import StepSpec
from chains.services import bulk
from chains.tasks import runs_bulk_job
from tests.factories import make_chain, make_run, make_user

pytestmark = pytest.mark.django_db

ADD = StepSpec("math.add", {"numbers": [1]}, 0)


def runs_of(user, n: int, status: str = RunStatus.PENDING, chain=None) -> list[Run]:
    """`n` runs of `user` in `status`, made by the service (with their steps)."""
    made = [make_run(ADD, user=user, chain=chain) for _ in range(n)]
    Run.objects.filter(id__in=[r.id for r in made]).update(status=status)
    return made


def bare_runs(user, n: int, status: str = RunStatus.PENDING) -> None:
    """`n` runs without steps, written in batches (for counts, not for execution)."""
    Run.objects.bulk_create(
        [Run(task_type="math_chain", trigger=RunTrigger.API, status=status, created_by=user)
         for _ in range(n)], batch_size=2000)


def statuses(runs) -> list[str]:
    return [Run.objects.get(id=r.id).status for r in runs]


# --- The service -------------------------------------------------------------------------------


def test_bulk_cancel_acts_on_open_runs_and_skips_finished_ones_with_a_reason(admin_user):
    open_runs = runs_of(admin_user, 3)
    finished = runs_of(admin_user, 2, RunStatus.COMPLETED)
    result = services.runs_bulk(user=admin_user, action="cancel", runs={})
    assert result == {"done": 3, "skipped": {"wrong status": 2}}
    assert statuses(open_runs) == [RunStatus.CANCELLED] * 3
    assert statuses(finished) == [RunStatus.COMPLETED] * 2
    assert Run.objects.get(id=open_runs[0].id).error.startswith("cancelled (bulk)")


def test_bulk_retry_retries_failed_runs_and_skips_completed_ones(admin_user):
    failed = runs_of(admin_user, 2, RunStatus.FAILED)
    completed = runs_of(admin_user, 1, RunStatus.COMPLETED)
    result = services.runs_bulk(user=admin_user, action="retry",
                                runs=Run.objects.all())
    assert result == {"done": 2, "skipped": {"wrong status": 1}}
    assert statuses(failed) == [RunStatus.PENDING] * 2
    assert [Run.objects.get(id=r.id).retries for r in failed] == [1, 1]
    assert statuses(completed) == [RunStatus.COMPLETED]


def test_bulk_delete_deletes_with_the_run_service(admin_user):
    runs = runs_of(admin_user, 3, RunStatus.FAILED)
    assert services.runs_bulk(user=admin_user, action="delete", runs={}) == {
        "done": 3, "skipped": {}}
    assert not Run.objects.filter(id__in=[r.id for r in runs]).exists()


def test_a_users_bulk_never_touches_runs_they_cannot_see(user, other_user):
    mine = runs_of(user, 2)
    theirs = runs_of(other_user, 3)
    assert services.runs_bulk(user=user, action="cancel", runs={}) == {"done": 2, "skipped": {}}
    assert statuses(mine) == [RunStatus.CANCELLED] * 2
    assert statuses(theirs) == [RunStatus.PENDING] * 3
    # Given the runs outright, the single-run rule still refuses them.
    assert services.runs_bulk(user=user, action="delete", runs=Run.objects.filter(
        created_by=other_user)) == {"done": 0, "skipped": {"not permitted": 3}}
    assert Run.objects.filter(created_by=other_user).count() == 3


def test_view_only_staff_are_not_permitted(admin_user):
    viewer = make_user("viewer", view_only=True)
    runs = runs_of(admin_user, 2, RunStatus.FAILED)
    for action in bulk.ACTIONS:
        assert services.runs_bulk(user=viewer, action=action, runs={}) == {
            "done": 0, "skipped": {"not permitted": 2}}
    assert statuses(runs) == [RunStatus.FAILED] * 2


def test_staff_with_change_but_not_delete_may_cancel_but_not_delete(admin_user):
    changer = make_user("changer", staff=True)
    changer.user_permissions.add(Permission.objects.get(codename="change_run"))
    runs_of(admin_user, 2)
    assert services.runs_bulk(user=changer, action="delete", runs={}) == {
        "done": 0, "skipped": {"not permitted": 2}}
    assert services.runs_bulk(user=changer, action="cancel", runs={}) == {
        "done": 2, "skipped": {}}


def test_a_run_deleted_during_the_walk_is_counted_gone(admin_user, monkeypatch):
    runs = runs_of(admin_user, 3)
    real_chunks = bulk.selectors.run_id_chunks

    def chunks_then_delete(queryset, size):
        for ids in real_chunks(queryset, size):
            Run.objects.filter(id=ids[0]).delete()  # someone else deleted it meanwhile
            yield ids

    monkeypatch.setattr(bulk.selectors, "run_id_chunks", chunks_then_delete)
    assert services.runs_bulk(user=admin_user, action="cancel", runs={}) == {
        "done": 2, "skipped": {"gone": 1}}
    assert statuses(runs[1:]) == [RunStatus.CANCELLED] * 2


class ChunkReads:
    """Counts the queries that read a chunk of run ids (and keeps their SQL)."""

    def __init__(self):
        self.sql: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        if sql.startswith('SELECT "chains_run"."created_at" AS "created_at", "chains_run"."id"'):
            self.sql.append(sql)
        return execute(sql, params, many, context)


def bulk_with_progress(**kwargs) -> tuple[dict, list, ChunkReads]:
    seen: list[tuple[int, dict]] = []
    reads = ChunkReads()
    with connection.execute_wrapper(reads):
        result = services.runs_bulk(
            **kwargs, progress=lambda done, skipped: seen.append((done, dict(skipped))))
    return result, seen, reads


@pytest.mark.slow
def test_bulk_cancel_over_10000_runs_goes_in_chunks_with_counts(admin_user):
    bare_runs(admin_user, 9_800, RunStatus.PENDING)
    bare_runs(admin_user, 200, RunStatus.QUEUED)
    bare_runs(admin_user, 50, RunStatus.COMPLETED)
    result, seen, reads = bulk_with_progress(user=admin_user, action="cancel", runs={},
                                             chunk=1000)
    assert result == {"done": 10_000, "skipped": {"wrong status": 50}}
    # 11 chunks of at most 1,000 ids: progress after each, the counts growing chunk by chunk.
    assert [done + sum(skipped.values()) for done, skipped in seen] == [
        *range(1000, 10_001, 1000), 10_050]
    assert seen[-1] == (10_000, {"wrong status": 50})
    # Each chunk is one keyset read: LIMIT 1000 after the last row, never an OFFSET.
    assert len(reads.sql) == 11
    assert all("LIMIT 1000" in sql and "OFFSET" not in sql for sql in reads.sql)
    assert Run.objects.filter(status=RunStatus.CANCELLED).count() == 10_000
    assert Run.objects.filter(status=RunStatus.COMPLETED).count() == 50


def test_bulk_over_10000_matching_runs_is_chunked_and_counted(admin_user):
    """The quick one: 10,000 matching runs, each checked (the viewer may act on none), and 30
    open runs cancelled by someone who may."""
    bare_runs(admin_user, 9_970, RunStatus.PENDING)
    bare_runs(admin_user, 30, RunStatus.QUEUED)
    viewer = make_user("viewer", view_only=True)
    result, seen, reads = bulk_with_progress(user=viewer, action="cancel", runs={}, chunk=1000)
    assert result == {"done": 0, "skipped": {"not permitted": 10_000}}
    assert [sum(skipped.values()) for _, skipped in seen] == list(range(1000, 10_001, 1000))
    assert len(reads.sql) == 11  # ten full chunks, then the empty read that ends the walk
    assert all("OFFSET" not in sql for sql in reads.sql)
    assert Run.objects.filter(status=RunStatus.CANCELLED).count() == 0
    result, seen, reads = bulk_with_progress(user=admin_user, action="cancel",
                                             runs={"status": RunStatus.QUEUED}, chunk=8)
    assert result == {"done": 30, "skipped": {}}
    assert seen == [(8, {}), (16, {}), (24, {}), (30, {})]
    assert len(reads.sql) == 4
    assert Run.objects.filter(status=RunStatus.CANCELLED).count() == 30


def test_an_unknown_action_is_refused_naming_the_field(admin_user):
    with pytest.raises(services.bulk.ChainError) as refused:
        services.runs_bulk(user=admin_user, action="pause", runs={})  # type: ignore[arg-type]
    assert "action" in refused.value.errors


# --- The API -----------------------------------------------------------------------------------


def test_api_bulk_answers_the_counts_in_the_request(api, user, other_user):
    chain = make_chain("c", user=user)
    failed = runs_of(user, 3, RunStatus.FAILED, chain=chain)
    runs_of(user, 1, RunStatus.COMPLETED, chain=chain)
    runs_of(user, 1, RunStatus.FAILED)  # another chain's
    others = runs_of(other_user, 2, RunStatus.FAILED, chain=chain)
    response = api.post("/api/runs/bulk/", {"action": "retry", "filter": {"chain": chain.id}},
                        format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"action": "retry", "matched": 4, "done": 3,
                               "skipped": {"wrong status": 1}}
    assert statuses(failed) == [RunStatus.PENDING] * 3
    assert statuses(others) == [RunStatus.FAILED] * 2


def test_api_bulk_filters_like_the_run_list(admin_api, admin_user):
    failed = runs_of(admin_user, 2, RunStatus.FAILED)
    pending = runs_of(admin_user, 2)
    response = admin_api.post("/api/runs/bulk/", {"action": "delete",
                                                  "filter": {"status": "FAILED"}}, format="json")
    assert response.json() == {"action": "delete", "matched": 2, "done": 2, "skipped": {}}
    assert not Run.objects.filter(id__in=[r.id for r in failed]).exists()
    assert statuses(pending) == [RunStatus.PENDING] * 2


@pytest.mark.parametrize(("body", "field"), [
    ({"action": "pause", "filter": {}}, "action"),
    ({"action": "cancel"}, "filter"),
    ({"action": "cancel", "filter": {"owner": 3}}, "filter.owner"),
    ({"action": "cancel", "filter": {"status": "LOST"}}, "filter.status"),
    ({"action": "cancel", "filter": {"chain": "x"}}, "filter.chain"),
    ({"action": "cancel", "filter": {}, "dry_run": True}, "dry_run"),
])
def test_api_bulk_refuses_bad_bodies_naming_the_field(api, user, body, field):
    runs = runs_of(user, 1)
    response = api.post("/api/runs/bulk/", body, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert statuses(runs) == [RunStatus.PENDING]


def test_api_bulk_over_the_limit_is_a_job_to_poll(api, user, other_api, monkeypatch,
                                                   django_capture_on_commit_callbacks):
    monkeypatch.setattr(bulk, "IN_REQUEST_LIMIT", 3)
    sent = []
    monkeypatch.setattr(bulk.app, "send_task", lambda name, kwargs: sent.append((name, kwargs)))
    runs = runs_of(user, 5)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/runs/bulk/", {"action": "cancel", "filter": {}},
                            format="json")
    assert response.status_code == 202, response.content
    job = response.json()
    assert job["status"] == "PENDING" and job["action"] == "cancel"
    assert job["url"] == f"/api/runs/bulk/{job['id']}/"
    assert sent == [("chains.runs_bulk_job", {"job_id": job["id"]})]
    assert statuses(runs) == [RunStatus.PENDING] * 5  # nothing done in the request

    runs_bulk_job(job_id=job["id"])  # the task as the worker runs it
    polled = api.get(job["url"]).json()
    assert polled["status"] == "COMPLETED"
    assert (polled["matched"], polled["done"], polled["skipped"]) == (5, 5, {})
    assert polled["progress"] == 1.0 and polled["finished_at"]
    assert statuses(runs) == [RunStatus.CANCELLED] * 5
    assert other_api.get(job["url"]).status_code == 404  # somebody else's job
    assert api.get(f"/api/runs/bulk/{uuid.uuid4()}/").status_code == 404


def test_a_job_reports_progress_after_each_chunk(admin_user, monkeypatch):
    runs_of(admin_user, 5)
    job = services.bulk_job_create(user=admin_user, action="cancel", filter={})
    seen = []
    real = bulk.runs_bulk

    def spy(**kwargs):
        outer = kwargs["progress"]

        def progress(done, skipped):
            outer(done, skipped)
            fresh = BulkJob.objects.get(id=job.id)
            seen.append((fresh.status, fresh.matched, fresh.done, fresh.progress))
        return real(**{**kwargs, "progress": progress})

    monkeypatch.setattr(bulk, "runs_bulk", spy)
    services.bulk_job_run(job_id=job.id, chunk=2)
    assert seen == [("RUNNING", 5, 2, 0.4), ("RUNNING", 5, 4, 0.8), ("RUNNING", 5, 5, 1.0)]
    job.refresh_from_db()
    assert job.status == BulkJobStatus.COMPLETED and job.done == 5
    # A redelivered task leaves a started job alone.
    assert services.bulk_job_run(job_id=job.id).done == 5


# --- The admin ---------------------------------------------------------------------------------

LIST = "/admin/chains/run/"


@pytest.fixture
def admin_web(client, admin_user):
    client.force_login(admin_user)
    return client


def act(client, action: str, runs, **extra):
    return client.post(LIST, {"action": action, "_selected_action": [str(r.pk) for r in runs],
                              **extra}, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_admin_cancel_and_retry_selected_runs_report_done_and_skipped(admin_web, admin_user):
    open_runs = runs_of(admin_user, 2)
    done = runs_of(admin_user, 1, RunStatus.COMPLETED)
    response = act(admin_web, "cancel_selected_runs", open_runs + done)
    assert messages_of(response) == ["Cancelled 2 runs. Skipped 1: 1 wrong status."]
    assert statuses(open_runs) == [RunStatus.CANCELLED] * 2
    response = act(admin_web, "retry_selected_runs", open_runs + done)
    assert messages_of(response) == ["Retried 2 runs. Skipped 1: 1 wrong status."]
    assert statuses(open_runs) == [RunStatus.PENDING] * 2


def test_admin_delete_selected_asks_first_with_the_counts(admin_web, admin_user):
    runs = runs_of(admin_user, 2, RunStatus.FAILED) + runs_of(admin_user, 1)
    asked = act(admin_web, "delete_selected_runs", runs)
    page = asked.content.decode()
    assert "Delete these runs" in page
    assert asked.context["counts"] == [("PENDING", 1), ("FAILED", 2)]
    assert Run.objects.count() == 3  # nothing deleted yet
    response = act(admin_web, "delete_selected_runs", runs, post="yes")
    assert messages_of(response) == ["Deleted 3 runs."]
    assert Run.objects.count() == 0


def test_admin_offers_only_bulk_actions_the_user_may_take(client, admin_user):
    viewer = make_user("viewer", view_only=True)
    client.force_login(viewer)
    runs_of(admin_user, 1)
    actions = dict(client.get(LIST).context["action_form"].fields["action"].choices)
    assert "cancel_selected_runs" not in actions and "delete_selected_runs" not in actions
    assert "delete_selected" not in actions
    client.force_login(admin_user)
    actions = dict(client.get(LIST).context["action_form"].fields["action"].choices)
    assert {"cancel_selected_runs", "retry_selected_runs", "delete_selected_runs"} <= set(
        actions)
    assert "delete_selected" not in actions  # Django's own delete, which bypasses the service


def test_the_list_links_a_filter_to_the_confirmation_page(admin_web, admin_user):
    runs_of(admin_user, 2, RunStatus.FAILED)
    assert admin_web.get(LIST).context["bulk_url"] is None  # no filter: no link
    page = admin_web.get(LIST, {"status__exact": "FAILED"})
    assert page.context["bulk_url"] == "/admin/chains/run/bulk/?status=FAILED"
    assert "all 2 runs matching this filter" in page.content.decode()
    # A filter the page cannot act on (a date, a search) offers no link.
    assert admin_web.get(LIST, {"status__exact": "FAILED", "q": "x"}).context[
        "bulk_url"] is None


def test_the_confirmation_page_shows_counts_then_acts(admin_web, admin_user):
    chain = make_chain("nightly", user=admin_user)
    failed = runs_of(admin_user, 3, RunStatus.FAILED, chain=chain)
    runs_of(admin_user, 2, RunStatus.COMPLETED, chain=chain)
    other = runs_of(admin_user, 1, RunStatus.FAILED)
    page = admin_web.get("/admin/chains/run/bulk/", {"chain": chain.id})
    assert page.status_code == 200
    assert page.context["counts"] == [("COMPLETED", 2), ("FAILED", 3)]
    assert [(a, n) for a, _, _, n in page.context["choices"]] == [
        ("cancel", 0), ("retry", 3), ("delete", 5)]
    text = page.content.decode()
    assert "nightly" in text and "Nothing has been done yet" in text
    # Cancel would act on none of them: offered, but not to be picked; retry is picked.
    assert 'value="cancel" id="tc-bulk-cancel" disabled' in text
    assert 'value="retry" id="tc-bulk-retry" checked>' in text
    assert statuses(failed) == [RunStatus.FAILED] * 3
    response = admin_web.post("/admin/chains/run/bulk/", {"chain": chain.id,
                                                          "action": "retry"}, follow=True)
    assert messages_of(response) == ["Retried 3 runs. Skipped 2: 2 wrong status."]
    assert response.redirect_chain[-1][0] == f"/admin/chains/run/?chain__id__exact={chain.id}"
    assert statuses(failed) == [RunStatus.PENDING] * 3
    assert statuses(other) == [RunStatus.FAILED]


def test_the_confirmation_page_refuses_a_bad_filter(admin_web):
    response = admin_web.get("/admin/chains/run/bulk/", {"status": "LOST"}, follow=True)
    assert "status" in messages_of(response)[0]
    response = admin_web.get("/admin/chains/run/bulk/", follow=True)
    assert messages_of(response)[0].startswith("Filter the run list first")


def test_a_large_admin_bulk_is_a_job_with_a_progress_page(admin_web, admin_user, monkeypatch,
                                                          django_capture_on_commit_callbacks):
    monkeypatch.setattr(bulk, "IN_REQUEST_LIMIT", 2)
    monkeypatch.setattr(bulk.app, "send_task", lambda name, kwargs: None)
    runs = runs_of(admin_user, 4)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_web.post("/admin/chains/run/bulk/", {"status": "PENDING",
                                                              "action": "cancel"})
    job = BulkJob.objects.get()
    assert response["Location"] == f"/admin/chains/run/bulk/{job.id}/"
    page = admin_web.get(response["Location"])
    assert 'http-equiv="refresh"' in page.content.decode()
    assert statuses(runs) == [RunStatus.PENDING] * 4
    runs_bulk_job(job_id=str(job.id))
    response = admin_web.get(f"/admin/chains/run/bulk/{job.id}/", follow=True)
    assert messages_of(response) == ["Cancelled 4 runs."]
    assert 'http-equiv="refresh"' not in response.content.decode()
    assert statuses(runs) == [RunStatus.CANCELLED] * 4
    assert BulkJob.objects.get().source == "admin"
