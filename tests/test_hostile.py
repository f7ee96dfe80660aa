"""Hostile users, replayed as they attacked: each test sends what the attacker sent and checks
the answer and that nothing refused was saved."""
import json

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from chains import services
from chains.bounds import DEPTH_REASON
from chains.errors import ChainError
from chains.models import Chain, ChainSchedule, Run, Step, StepRun
from chains.presets import Preset, StepSpec
from chains.steps import StepFailed
from tests.factories import make_user
from tests.helpers import unchanged

pytestmark = pytest.mark.django_db

CHAIN = {"name": "c1", "steps": [{"step_type": "math.add", "params": {"numbers": [1]}}]}


def nested(depth: int, leaf=1):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_body(depth: int) -> str:
    """A JSON text nested `depth` levels deep, written without recursion."""
    return "[" * depth + "1" + "]" * depth


# --- 1. queues come from an allow-list ---------------------------------------------------------


@pytest.mark.parametrize("queue", ["unacked", "unacked_index", "_kombu.binding.celery", "x" * 64])
def test_a_queue_outside_the_allow_list_is_400_and_saves_nothing(api, queue):
    body = {**CHAIN, "steps": [{**CHAIN["steps"][0], "queue": queue}]}
    response = api.post("/api/chains/", body, format="json")
    assert response.status_code == 400
    assert "unknown queue" in response.json()["steps.0.queue"][0]
    assert not Chain.objects.exists() and not Step.objects.exists()


def test_a_stored_step_with_a_bad_queue_cannot_start(api, user):
    chain = services.chain_save(name="old", steps=[StepSpec("math.add", {}, 0)], user=user)
    chain.steps.update(queue="unacked")  # a row written before queues were checked
    response = api.post(f"/api/chains/{chain.id}/run/", {"inputs": 1}, format="json")
    assert response.status_code == 400
    assert "steps.0.queue" in response.json()
    assert not Run.objects.exists()


def test_configured_and_declared_queues_are_allowed(user, settings):
    settings.CHAINS_QUEUES = ["celery", "bulk"]
    chain = services.chain_save(name="q", user=user, steps=[
        StepSpec("math.add", {}, 0, queue="bulk"), StepSpec("math.add", {}, 1, queue="math")])
    assert list(chain.steps.values_list("queue", flat=True)) == ["bulk", "math"]


# --- 2. JSON nesting is bounded everywhere -------------------------------------------------------


@pytest.mark.parametrize("depth", [33, 700, 900, 950])
def test_deeply_nested_run_inputs_are_400_naming_the_field(api, user, depth):
    chain = services.chain_save(name="c", steps=[StepSpec("flow.wait", {"seconds": 0}, 0)],
                                user=user)
    response = api.post(f"/api/chains/{chain.id}/run/", {"inputs": nested(depth)},
                        format="json")
    assert response.status_code == 400, response.content
    body = response.json()
    assert "inputs" in body or "detail" in body, body
    assert not Run.objects.exists()


def test_inputs_at_the_depth_limit_are_accepted(api, user):
    chain = services.chain_save(name="c", steps=[StepSpec("flow.wait", {"seconds": 0}, 0)],
                                user=user)
    limit = settings.CHAINS_MAX_JSON_DEPTH
    response = api.post(f"/api/chains/{chain.id}/run/", {"inputs": nested(limit)},
                        format="json")
    assert response.status_code == 201, response.content
    with unchanged():
        too_deep = api.post(f"/api/chains/{chain.id}/run/", {"inputs": nested(limit + 1)},
                            format="json")
    assert too_deep.status_code == 400
    assert too_deep.json()["inputs"] == [DEPTH_REASON.format(
        depth=f"more than {limit}", limit=limit)]


@pytest.mark.parametrize("url", ["/tasks/submit", "/api/chains/{id}/run/", "/api/schedules/",
                                 "/api/chains/"])
def test_a_body_nested_100000_deep_is_400_not_500(api, user, url):
    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)], user=user)
    url = url.format(id=chain.id)
    body = '{"inputs": ' + deep_body(100_000) + "}"
    with unchanged():
        response = api.post(url, body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert "nested too deeply" in response.json()["detail"]


def test_deep_params_defaults_and_schedule_inputs_are_400(api, user):
    # One level past the limit in the value, within the body's allowance: the field is named.
    steps = [{"step_type": "math.add", "params": {"numbers": nested(32)}}]
    response = api.post("/api/chains/", {"name": "p", "steps": steps}, format="json")
    assert response.status_code == 400 and "steps.0.params" in response.json()
    response = api.post("/api/chains/", {**CHAIN, "default_inputs": {"a": nested(32)}},
                        format="json")
    assert response.status_code == 400 and "default_inputs" in response.json()
    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)], user=user)
    response = api.post("/api/schedules/", {"chain": chain.id, "kind": "interval",
                                            "every_seconds": 3600, "inputs": nested(33)},
                        format="json")
    assert response.status_code == 400 and "inputs" in response.json()
    assert Chain.objects.count() == 1 and not chain.schedules.exists()


def test_a_deep_import_fails_naming_the_field(user):
    export = {"version": 1, "chains": [{"name": "i", "default_inputs": nested(40),
                                        "steps": [{"step_type": "math.add", "params": {},
                                                   "stage": 0}]}]}
    with pytest.raises(ChainError) as info:
        services.chains_import(data=json.loads(json.dumps(export)))
    assert "chains.0.default_inputs" in info.value.errors
    assert not Chain.objects.exists()


def test_a_step_result_too_deep_fails_the_step(user):
    run = services.run_create(
        preset=Preset(specs=[StepSpec("flow.wait", {"seconds": 0}, 0)], inputs=1),
        trigger="api", user=user)
    step = run.step_runs.get()
    with pytest.raises(StepFailed, match="its result is nested"):
        services.step_execute(step_run_id=step.id, previous=nested(40))
    assert StepRun.objects.get(id=step.id).status != "COMPLETED"


def test_the_admin_refuses_deep_inputs_without_a_500(admin_client, admin_user):
    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)],
                                user=admin_user)
    response = admin_client.post(f"/admin/chains/chain/{chain.id}/run/",
                                 {"inputs": deep_body(100_000)})
    assert response.status_code == 200
    assert b"nested" in response.content
    assert not Run.objects.exists()


# --- 3. tokens are secrets -----------------------------------------------------------------------


def view_only_staff(username: str = "viewer"):
    return make_user(username, view_only=True)


def test_view_only_staff_cannot_list_tokens(client, admin_user):
    admin_key = Token.objects.create(user=admin_user).key
    client.force_login(view_only_staff())
    assert client.get("/admin/chains/apitoken/").status_code == 403
    assert client.get("/admin/authtoken/tokenproxy/").status_code == 404  # not registered
    assert admin_key not in client.get("/admin/").content.decode()


def test_superusers_see_a_prefix_of_other_keys_and_may_revoke(admin_client, user):
    key = Token.objects.create(user=user).key
    page = admin_client.get("/admin/chains/apitoken/").content.decode()
    assert f"{key[:4]}…" in page and key not in page
    detail = admin_client.get(f"/admin/chains/apitoken/{user.pk}/change/")
    assert detail.status_code == 200 and key not in detail.content.decode()
    revoked = admin_client.post(f"/admin/chains/apitoken/{user.pk}/delete/",
                                {"post": "yes"})
    assert revoked.status_code == 302 and not Token.objects.filter(key=key).exists()


def test_a_user_sees_and_regenerates_their_own_token(client, user):
    old = Token.objects.create(user=user).key
    other = Token.objects.create(user=make_user("carol")).key
    api = APIClient()
    api.force_authenticate(user)
    assert api.get("/api/token/").json()["key"] == old
    new = api.post("/api/token/").json()["key"]
    assert new != old and not Token.objects.filter(key=old).exists()
    staff = view_only_staff("dave")
    client.force_login(staff)
    page = client.get("/admin/token/").content.decode()
    assert "no API token yet" in page and other not in page and new not in page
    client.post("/admin/token/")
    assert Token.objects.get(user=staff).key in client.get("/admin/token/").content.decode()


# --- 4. schedules need the right to start runs; their runs are their owner's -----------------


def staff_editor_without_add_run():
    from django.contrib.auth.models import Permission

    editor = make_user("editor", staff=True)
    editor.user_permissions.set(Permission.objects.filter(
        content_type__app_label="chains").exclude(codename="add_run"))
    return editor


def test_staff_without_add_run_cannot_schedule_runs(admin_user):
    from django_celery_beat.models import PeriodicTask

    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)],
                                user=admin_user)
    editor = staff_editor_without_add_run()
    api = APIClient()
    api.force_authenticate(editor)
    assert api.post("/tasks/submit", {"task_type": "math_chain", "config": {
        "operation": "add", "numbers": [1]}}, format="json").status_code == 403
    assert not Run.objects.exists()
    response = api.post("/api/schedules/", {"chain": chain.id, "kind": "interval",
                                            "every_seconds": 2}, format="json")
    assert response.status_code == 403
    assert "chain" in response.json()
    assert not ChainSchedule.objects.exists() and not PeriodicTask.objects.filter(
        task="chains.run_scheduled").exists()


def test_the_admin_inline_is_read_only_without_add_run(client, admin_user):
    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)],
                                user=admin_user)
    services.schedule_save(chain=chain, user=admin_user, fields={
        "kind": "interval", "every_seconds": 3600})
    client.force_login(staff_editor_without_add_run())
    page = client.get(f"/admin/chains/chain/{chain.id}/change/").content.decode()
    assert 'name="schedules-0-every_seconds"' not in page  # shown, not editable
    assert '<div class="readonly">3600</div>' in page


def test_a_scheduled_run_is_its_owners_and_a_revoked_right_stops_the_schedule(admin_user):
    from django.contrib.auth.models import Permission

    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)],
                                user=admin_user)
    owner = make_user("planner", staff=True)
    owner.user_permissions.set(Permission.objects.filter(
        codename__in=["add_run", "change_chain", "add_chainschedule"]))
    schedule = services.schedule_save(chain=chain, user=owner, fields={
        "kind": "interval", "every_seconds": 3600})
    run = services.run_start_scheduled(schedule_id=schedule.id)
    assert run.created_by == owner  # not the chain's author
    owner.user_permissions.remove(Permission.objects.get(codename="add_run"))
    from django.utils import timezone
    later = timezone.now() + timezone.timedelta(hours=2)
    assert services.run_start_scheduled(schedule_id=schedule.id, now=later) is None
    schedule.refresh_from_db()
    assert not schedule.enabled
    assert schedule.disabled_reason == (
        "stopped: its owner planner may no longer start runs of this chain")
    assert not schedule.periodic_task.enabled
    assert Run.objects.count() == 1


# --- 6. numbers are bounded before saving; listing survives any row ---------------------------


@pytest.mark.parametrize(("fields", "field"), [
    ({"kind": "interval", "every_seconds": 1099511627776}, "every_seconds"),
    ({"kind": "interval", "every_seconds": 10 * 365 * 24 * 3600 + 1}, "every_seconds"),
    ({"kind": "crontab", "minute": "0", "hour": "0", "day_of_month": "30",
      "month_of_year": "2"}, "day_of_month"),
    ({"kind": "once", "run_at": "2020-01-01T00:00:00Z"}, "run_at"),
    ({"kind": "once", "run_at": "9999-01-01T00:00:00Z"}, "run_at"),
    ({"kind": "interval", "every_seconds": 3600, "name": "n" * 101}, "name"),
    ({"kind": "interval", "every_seconds": 3600, "periodic_task": 1}, "periodic_task"),
])
def test_a_refused_schedule_is_400_and_leaves_nothing_saved(api, user, fields, field):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)], user=user)
    response = api.post("/api/schedules/", {"chain": chain.id, **fields}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not ChainSchedule.objects.exists()
    assert not PeriodicTask.objects.filter(task="chains.run_scheduled").exists()
    assert not IntervalSchedule.objects.filter(every__gt=10**9).exists()
    assert api.get("/api/schedules/").status_code == 200


def test_a_row_no_check_saw_does_not_break_the_list_or_the_chain_page(
        api, admin_client, user):
    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)], user=user)
    ChainSchedule.objects.bulk_create([ChainSchedule(  # written around every check
        chain=chain, kind="interval", every_seconds=2**31 - 1, created_by=user)])
    listed = api.get("/api/schedules/")
    assert listed.status_code == 200 and listed.json()["results"][0]["next_fire_times"]
    assert admin_client.get(f"/admin/chains/chain/{chain.id}/change/").status_code == 200


def test_users_who_are_not_staff_keep_to_the_interval_and_count_limits(api, user, settings):
    settings.CHAINS_MAX_SCHEDULES_PER_USER = 2
    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)], user=user)
    body = {"chain": chain.id, "kind": "interval", "every_seconds": 1}
    fast = api.post("/api/schedules/", body, format="json")
    assert fast.status_code == 400
    assert "CHAINS_MIN_INTERVAL_SECONDS" in fast.json()["every_seconds"][0]
    for _ in range(2):
        assert api.post("/api/schedules/", {**body, "every_seconds": 60},
                        format="json").status_code == 201
    third = api.post("/api/schedules/", {**body, "every_seconds": 60}, format="json")
    assert third.status_code == 429
    assert "CHAINS_MAX_SCHEDULES_PER_USER" in third.json()["non_field_errors"][0]
    assert ChainSchedule.objects.count() == 2


def test_users_see_only_their_own_schedules(api, other_api, user):
    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)], user=user)
    services.schedule_save(chain=chain, user=user, fields={
        "kind": "interval", "every_seconds": 3600, "inputs": {"apikey": "s3cr3t"}})
    assert api.get("/api/schedules/").json()["count"] == 1
    assert other_api.get("/api/schedules/").json()["count"] == 0
    assert "s3cr3t" not in other_api.get("/api/chains/").content.decode()


# --- 9. imports take the documented fields only ------------------------------------------------


def test_an_import_cannot_take_over_another_chains_schedule(admin_user, tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    chain = services.chain_save(name="admin's", steps=[StepSpec("math.add", {}, 0)],
                                user=admin_user)
    theirs = services.schedule_save(chain=chain, user=admin_user, fields={
        "kind": "interval", "every_seconds": 3600})
    for extra in ({"id": theirs.id, "created_at": "2026-01-01T00:00:00Z",
                   "periodic_task_id": theirs.periodic_task_id}, {"id": theirs.id}):
        export = {"version": 1, "chains": [{
            "name": "mine", "steps": [{"step_type": "math.add", "params": {}, "stage": 0}],
            "schedules": [{"kind": "interval", "every_seconds": 60, **extra}]}]}
        path = tmp_path / "export.json"
        path.write_text(json.dumps(export))
        with pytest.raises(CommandError, match="chains.0.schedules.0.id: unknown field"):
            call_command("import_chains", str(path))
    theirs.refresh_from_db()
    assert theirs.chain == chain and theirs.periodic_task.kwargs == (
        f'{{"schedule_id": {theirs.id}}}')
    assert list(Chain.objects.values_list("name", flat=True)) == ["admin's"]


@pytest.mark.parametrize(("item", "field"), [
    ({"id": 5}, "chains.0.id"),
    ({"created_by": 1}, "chains.0.created_by"),
    ({"steps": [{"step_type": "math.add", "params": {}, "stage": 0, "id": 3}]},
     "chains.0.steps.0.id"),
])
def test_an_import_refuses_ids_and_unknown_keys(item, field):
    export = {"version": 1, "chains": [{
        "name": "x", "steps": [{"step_type": "math.add", "params": {}, "stage": 0}], **item}]}
    with pytest.raises(ChainError) as info:
        services.chains_import(data=export)
    assert field in info.value.errors
    assert not Chain.objects.exists()


# --- unknown keys, absurd stages ------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field"), [
    ({**CHAIN, "owner": 1}, "owner"),
    ({**CHAIN, "steps": [{**CHAIN["steps"][0], "max_retrys": 3}]}, "steps.0.max_retrys"),
    ({**CHAIN, "steps": [{**CHAIN["steps"][0], "stage": 99999999999}]}, "steps.0.stage"),
])
def test_unknown_keys_and_absurd_stages_are_400(api, body, field):
    response = api.post("/api/chains/", body, format="json")
    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not Chain.objects.exists()


def test_a_chain_read_back_can_be_sent_again(api):
    created = api.post("/api/chains/", CHAIN, format="json").json()
    again = api.put(f"/api/chains/{created['id']}/", created, format="json")
    assert again.status_code == 200, again.content


# --- 5. runs write only into their own folder; other users' outputs are not readable ----------


def start(user, *specs: StepSpec, inputs=0) -> Run:
    return services.run_create(preset=Preset(specs=list(specs), inputs=inputs),
                                trigger="api", user=user)


def execute(run: Run, index: int = 0, previous=None):
    step = run.step_runs.get(index=index)
    return services.step_execute(step_run_id=step.id, previous=previous)


@pytest.mark.parametrize("destination", ["scores.csv", "runs/3f1c0a4e/step2-clean.csv",
                                         "runs/x.csv"])
def test_a_copy_over_shared_or_other_files_is_400(api, data_dir, destination):
    (data_dir / "scores.csv").write_text("name,score\na,1\n")
    steps = [{"step_type": "io.copy", "params": {"path": "scores.csv",
                                                 "destination": destination}}]
    response = api.post("/api/chains/", {"name": "cp", "steps": steps}, format="json")
    assert response.status_code == 400
    assert "CHAINS_WRITABLE_DIRS" in response.json()["steps.0.params.destination"][0]
    assert not Chain.objects.exists() and not Step.objects.exists()
    assert (data_dir / "scores.csv").read_text() == "name,score\na,1\n"


def test_a_writable_area_takes_copies_but_not_through_a_symlink(user, data_dir, settings):
    import os

    settings.CHAINS_WRITABLE_DIRS = ["shared"]
    (data_dir / "scores.csv").write_text("name,score\na,1\n")
    (data_dir / "shared").mkdir()
    os.symlink(data_dir / "scores.csv", data_dir / "shared" / "sneaky.csv")
    run = start(user, StepSpec("io.copy", {"path": "scores.csv", "destination": "shared/ok.csv"},
                               0),
                StepSpec("io.copy", {"path": "scores.csv", "destination": "shared/sneaky.csv"},
                         1))
    assert execute(run, 0)["copy"] == "shared/ok.csv"
    with pytest.raises(StepFailed, match="outside this run's output folder"):
        execute(run, 1)
    assert (data_dir / "scores.csv").read_text() == "name,score\na,1\n"


def test_reading_another_users_run_output_fails_the_step(user, other_user, data_dir):
    theirs = start(other_user, StepSpec("math.add", {}, 0))
    folder = data_dir / "runs" / str(theirs.id)
    folder.mkdir(parents=True)
    (folder / "step2-clean.csv").write_text("name,score\nsecret,1\n")
    path = f"runs/{theirs.id}/step2-clean.csv"
    mine = start(user, StepSpec("io.read", {"path": path}, 0),
                 StepSpec("data.clean", {}, 1), inputs={"file": path})
    with pytest.raises(StepFailed, match="a run that is not yours"):
        execute(mine, 0)
    with pytest.raises(StepFailed, match="a run that is not yours"):
        execute(mine, 1, previous={"file": path})
    their_own = start(other_user, StepSpec("io.read", {"path": path}, 0))
    assert "secret" in execute(their_own)["content"]
    operator = start(None, StepSpec("io.read", {"path": path}, 0))
    assert "secret" in execute(operator)["content"]


def test_a_run_writes_at_most_its_byte_budget(user, data_dir, settings):
    settings.CHAINS_MAX_RUN_WRITE_BYTES = 10_000
    (data_dir / "big.bin").write_bytes(b"x" * 6_000)
    run = start(user, StepSpec("io.copy", {"path": "big.bin"}, 0),
                StepSpec("io.copy", {"path": "big.bin"}, 1))
    execute(run, 0)
    with pytest.raises(StepFailed, match="CHAINS_MAX_RUN_WRITE_BYTES"):
        execute(run, 1)
    folder = data_dir / "runs" / str(run.id)
    assert sorted(p.name for p in folder.iterdir()) == [
        ".bytes-written", "step1-big.bin"]  # the refused copy is removed
    assert (folder / ".bytes-written").read_text() == "6000"  # and its bytes given back


def test_the_write_budget_counts_writable_areas_and_every_step(user, data_dir, settings):
    settings.CHAINS_MAX_RUN_WRITE_BYTES = 10_000
    settings.CHAINS_WRITABLE_DIRS = ["shared"]
    (data_dir / "big.bin").write_bytes(b"x" * 6_000)
    run = start(user, StepSpec("io.copy", {"path": "big.bin", "destination": "shared/a.bin"}, 0),
                StepSpec("io.copy", {"path": "big.bin", "destination": "shared/b.bin"}, 0))
    execute(run, 0)
    with pytest.raises(StepFailed, match="CHAINS_MAX_RUN_WRITE_BYTES"):
        execute(run, 1)
    assert not (data_dir / "shared" / "b.bin").exists()


# --- low: formulas behind blanks, chain inputs of others ---------------------------------------


@pytest.mark.parametrize("cell", [" =HYPERLINK(\"x\")", "\t=1+1", "  @SUM(A1)", "\r+1+1"])
def test_a_formula_behind_blanks_is_escaped_by_transform_alone(user, data_dir, cell):
    from chains.steps.data import format_cell

    assert format_cell(cell) == "'" + cell
    import csv

    with (data_dir / "in.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["v", "t"], [1, cell], [2, "x"]])
    run = start(user, StepSpec("data.transform", {"path": "in.csv"}, 0))
    out = execute(run)
    with (data_dir / out["file"]).open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1] == ["0", "'" + cell]


@pytest.mark.parametrize("cell", ["-5", " -5", "+3.5", "text"])
def test_numbers_and_text_are_not_escaped(cell):
    from chains.steps.data import format_cell

    assert format_cell(cell) == cell


def test_only_the_author_and_staff_read_a_chains_default_inputs(api, other_api, admin_api):
    waits = [{"step_type": "flow.wait", "params": {"seconds": 0}}]  # takes any input
    created = api.post("/api/chains/", {**CHAIN, "steps": waits,
                                        "default_inputs": {"apikey": "s3cr3t"}},
                       format="json").json()
    url = f"/api/chains/{created['id']}/"
    assert api.get(url).json()["default_inputs"] == {"apikey": "s3cr3t"}
    assert admin_api.get(url).json()["default_inputs"] == {"apikey": "s3cr3t"}
    assert other_api.get(url).json()["default_inputs"] is None
    assert "s3cr3t" not in other_api.get("/api/chains/").content.decode()


def test_clean_keeps_its_duplicate_check_in_bounded_memory(user, data_dir, monkeypatch):
    from chains.steps.data import SeenRows

    monkeypatch.setattr(SeenRows, "MEMORY_ROWS", 100)  # past 100 rows, the check is on disk
    lines = [f"{n % 700},{n % 700}" for n in range(2_000)]  # 700 distinct rows
    (data_dir / "in.csv").write_text("a,b\n" + "\n".join(lines) + "\n")
    out = execute(start(user, StepSpec("data.clean", {"path": "in.csv"}, 0)))
    assert out["rows"] == 700
    kept = (data_dir / out["file"]).read_text().splitlines()[1:]
    assert kept == [f"{n},{n}" for n in range(700)]


# --- low: sign-in lockout, anonymous and wrong-token throttling -------------------------------


def test_failed_admin_sign_ins_lock_the_name_even_for_the_right_password(client, admin_user,
                                                                         settings):
    settings.CHAINS_LOGIN_FAILURES = 3
    for _ in range(3):
        page = client.post("/admin/login/", {"username": "root", "password": "wrong"})
        assert "correct username and password" in page.content.decode()
    locked = client.post("/admin/login/", {"username": "root", "password": "pw-root"})
    assert locked.status_code == 200 and "Too many failed sign-ins" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    api_login = client.post("/api-auth/login/", {"username": "root", "password": "pw-root"})
    assert "_auth_user_id" not in client.session and api_login.status_code == 200


def test_failed_sign_ins_from_one_address_lock_it_for_every_name(client, settings):
    settings.CHAINS_LOGIN_FAILURES_PER_ADDRESS = 4
    for n in range(4):
        client.post("/admin/login/", {"username": f"guess{n}", "password": "x"})
    make_user("erin", staff=True)
    page = client.post("/admin/login/", {"username": "erin", "password": "pw-erin"})
    assert "Too many failed sign-ins" in page.content.decode()


def test_anonymous_requests_and_wrong_tokens_are_throttled(monkeypatch):
    from chains.api.throttles import AddressThrottle

    monkeypatch.setattr(AddressThrottle, "rate", "5/min", raising=False)
    anonymous = APIClient()
    codes = [anonymous.get("/tasks/statistics").status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]
    from django.core.cache import cache

    cache.clear()
    guessing = APIClient()
    guessing.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    codes = [guessing.get("/api/runs/").status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]


# --- low: the embedded Redis keeps queued messages across a restart ---------------------------


def test_the_embedded_redis_keeps_queued_messages_across_a_restart():
    import shutil

    import redis

    from tests.services import EmbeddedRedis

    server = EmbeddedRedis(persist=True)
    try:
        redis.Redis(port=server.port).lpush("math", *[f"message {n}" for n in range(88)])
        server.stop()
        server.start()
        assert redis.Redis(port=server.port).llen("math") == 88
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


# --- low: a lost answer can be retried safely ----------------------------------------------------


def test_the_same_idempotency_key_and_body_give_the_same_run(api, user):
    body = {"task_type": "math_chain", "config": {"operation": "add", "numbers": [1, 2]}}
    first = api.post("/tasks/submit", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post("/tasks/submit", body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["task_id"] == again.json()["task_id"]
    other = api.post("/tasks/submit", {**body, "description": "else"}, format="json",
                     HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 409 and "Idempotency-Key" in other.json()
    assert Run.objects.count() == 1
    assert api.post("/tasks/submit", body, format="json").status_code == 201  # no key: new
    assert Run.objects.count() == 2


def test_idempotency_keys_are_per_user_and_per_endpoint(api, other_api, user):
    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)], user=user)
    url = f"/api/chains/{chain.id}/run/"
    mine = api.post(url, {"inputs": 1}, format="json", HTTP_IDEMPOTENCY_KEY="same")
    theirs = other_api.post(url, {"inputs": 1}, format="json", HTTP_IDEMPOTENCY_KEY="same")
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    assert api.post(url, {"inputs": 1}, format="json",
                    HTTP_IDEMPOTENCY_KEY="same").json()["id"] == mine.json()["id"]


def test_an_expired_key_starts_a_new_run(api, user, settings):
    from chains.models import IdempotencyKey

    body = {"task_type": "math_chain", "config": {"operation": "add", "numbers": [1]}}
    first = api.post("/tasks/submit", body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    IdempotencyKey.objects.update(created_at="2020-01-01T00:00:00Z")
    again = api.post("/tasks/submit", body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert again.status_code == 201 and again.json()["task_id"] != first.json()["task_id"]
    assert IdempotencyKey.objects.count() == 1  # the expired one was replaced
    IdempotencyKey.objects.update(created_at="2020-01-01T00:00:00Z")
    services.reconcile_runs()  # and the reconciler removes expired keys
    assert not IdempotencyKey.objects.exists()


def test_a_stopped_schedule_lists_no_fire_times(api, admin_client, user):
    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)], user=user)
    schedule = services.schedule_save(chain=chain, user=user, fields={
        "kind": "interval", "every_seconds": 3600})
    services.schedule_disable(schedule=schedule, reason="stopped: a test")
    listed = api.get("/api/schedules/").json()["results"][0]
    assert (listed["enabled"], listed["disabled_reason"], listed["next_fire_times"]) == (
        False, "stopped: a test", [])
    page = admin_client.get(f"/admin/chains/chain/{chain.id}/change/").content.decode()
    assert "none: the schedule is disabled" in page and "stopped: a test" in page


def test_pages_hold_at_most_the_page_size(api, user, settings):
    settings.CHAINS_MAX_PAGE_SIZE = 3
    for n in range(5):
        services.chain_save(name=f"c{n}", steps=[StepSpec("math.add", {}, 0)], user=user)
    assert len(api.get("/api/chains/?limit=1000").json()["results"]) == 3


def test_deleting_a_user_does_not_show_their_token(admin_client, user):
    key = Token.objects.create(user=user).key
    page = admin_client.get(f"/admin/auth/user/{user.pk}/delete/").content.decode()
    assert f"{key[:4]}…" in page and key not in page


def test_whoever_saves_a_schedule_owns_it_and_imports_give_it_to_the_chains_author(
        user, admin_user):
    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {}, 0)], user=user)
    schedule = services.schedule_save(chain=chain, user=user, fields={
        "kind": "interval", "every_seconds": 3600})
    services.schedule_save(schedule=schedule, chain=chain, user=admin_user,
                           fields={"every_seconds": 7200})
    assert ChainSchedule.objects.get().created_by == admin_user
    services.chains_import(data={"version": 1, "chains": [{
        "name": "c", "steps": [{"step_type": "math.add", "params": {}, "stage": 0}],
        "schedules": [{"kind": "once", "run_at": "2020-01-01T00:00:00"}]}]})
    imported = ChainSchedule.objects.get()
    assert imported.created_by == user  # the chain's author, whose rights each firing checks
    assert imported.run_at.tzinfo is not None  # a time without a zone is UTC


def test_a_staff_run_of_a_users_chain_reads_no_more_than_the_user(
        user, other_user, admin_user, data_dir):
    theirs = start(other_user, StepSpec("math.add", {}, 0))
    folder = data_dir / "runs" / str(theirs.id)
    folder.mkdir(parents=True)
    (folder / "out.csv").write_text("secret\n")
    path = f"runs/{theirs.id}/out.csv"
    chain = services.chain_save(name="users", steps=[StepSpec("io.read", {"path": path}, 0)],
                                user=user)
    run = services.run_start(chain=chain, inputs=0, user=admin_user)  # e.g. by a schedule
    with pytest.raises(StepFailed, match="not yours"):
        execute(run)


def test_another_users_chain_with_default_inputs_needs_inputs(api, other_api, user):
    chain = services.chain_save(name="c", steps=[StepSpec("flow.wait", {"seconds": 0}, 0)],
                                default_inputs={"apikey": "s3cr3t"}, user=user)
    with unchanged():
        refused = other_api.post(f"/api/chains/{chain.id}/run/", {}, format="json")
    assert refused.status_code == 400 and "inputs" in refused.json()
    assert other_api.post(f"/api/chains/{chain.id}/run/", {"inputs": 1},
                          format="json").status_code == 201
    assert api.post(f"/api/chains/{chain.id}/run/", {}, format="json").status_code == 201
    assert not Run.objects.filter(inputs={"apikey": "s3cr3t"}).exclude(created_by=user).exists()


def test_seed_config_is_bounded_like_any_json(api):
    body = {"task_type": "math_chain", "config": {"operation": "add", "numbers": nested(33)}}
    response = api.post("/tasks/submit", body, format="json")
    assert response.status_code == 400 and "config" in response.json()
    assert not Run.objects.exists()


def test_a_schedules_inputs_are_its_owners_not_the_chain_authors(api, user, admin_api,
                                                                  admin_user):
    waits = [{"step_type": "flow.wait", "params": {"seconds": 0}}]
    chain = api.post("/api/chains/", {**CHAIN, "steps": waits}, format="json").json()
    made = admin_api.post("/api/schedules/", {
        "chain": chain["id"], "kind": "interval", "every_seconds": 3600,
        "inputs": {"secret": "staff-only"}}, format="json")
    assert made.status_code == 201, made.content
    url = f"/api/schedules/{made.json()['id']}/"
    assert admin_api.get(url).json()["inputs"] == {"secret": "staff-only"}
    seen = api.get(url)  # the chain's author sees the schedule, not its owner's inputs
    assert seen.status_code == 200 and seen.json()["inputs"] is None
    assert "staff-only" not in api.get("/api/schedules/").content.decode()
    # Saving it would make it theirs with inputs they may not read: refused, nothing saved.
    taken = api.patch(url, {"name": "taken"}, format="json")
    assert taken.status_code == 403 and "inputs" in taken.json(), taken.content
    schedule = ChainSchedule.objects.get(pk=made.json()["id"])
    assert (schedule.created_by, schedule.name) == (admin_user, "")
    # With inputs of their own, it becomes theirs.
    own = api.patch(url, {"name": "mine", "inputs": {"n": 1}}, format="json")
    assert own.status_code == 200, own.content
    assert own.json()["inputs"] == {"n": 1}
    assert ChainSchedule.objects.get(pk=schedule.pk).created_by == user
