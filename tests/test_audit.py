"""The audit trail: entries from the admin, the API, commands and beat, each saying who, what,
when and from where; a token's entry never holds its key."""
import io
import json

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command

from chains import services, tasks
from chains.models import ChainSchedule, Run
from chains.presets import Preset, StepSpec
from tests.factories import make_chain, make_user

pytestmark = pytest.mark.django_db


def events() -> list[tuple[str, str, str | None]]:
    """(event, source, actor) of each entry, oldest first."""
    return [(e.additional_data["event"], e.additional_data["source"],
             e.actor.username if e.actor else None)
            for e in LogEntry.objects.order_by("timestamp", "id")]


def test_the_api_records_who_changed_a_chain_and_from_where(api, user):
    response = api.post("/api/chains/", {"name": "audited", "steps": [
        {"step_type": "math.add", "params": {"numbers": [1]}}]}, format="json",
        REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 201
    chain_id = response.json()["id"]
    api.patch(f"/api/chains/{chain_id}/", {"enabled": False}, format="json")
    api.patch(f"/api/chains/{chain_id}/", {"description": "now described"}, format="json")
    api.patch(f"/api/chains/{chain_id}/", {"description": "now described"}, format="json")
    assert events() == [("chain created", "api", user.username),
                        ("chain disabled", "api", user.username),
                        ("chain changed", "api", user.username)]  # the repeat changed nothing
    first = LogEntry.objects.order_by("id").first()
    assert (first.remote_addr, first.object_repr, first.action) == (
        "203.0.113.7", "audited", LogEntry.Action.CREATE)
    assert first.additional_data["version"] == 1


def test_run_actions_are_recorded_by_whoever_acted(admin_client, admin_user, user):
    run = services.run_create(preset=services_preset(), trigger="api", user=user)
    services.run_cancel(run=run)
    services.run_retry(run=Run.objects.get(id=run.id))
    response = admin_client.post(f"/admin/chains/run/{run.id}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert events() == [("run started", "system", user.username),
                        ("run cancelled", "system", None),
                        ("run retried", "system", None),
                        ("run cancelled", "admin", admin_user.username),  # deleting it
                        ("run deleted", "admin", admin_user.username)]
    cancelled = LogEntry.objects.filter(additional_data__event="run cancelled").first()
    assert cancelled.changes == {"status": ["PENDING", "CANCELLED"]}


def services_preset():
    return Preset(specs=[StepSpec("math.add", {"numbers": [1]}, 0)], inputs=0)


def test_commands_and_beat_record_their_source(user, tmp_path):
    data = {"version": 1, "chains": [{"name": "imported", "steps": [
        {"step_type": "math.add", "params": {"numbers": [1]}, "stage": 0}]}]}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(data))
    call_command("import_chains", str(path), stdout=io.StringIO())
    chain = make_chain("scheduled", user=user)
    schedule = services.schedule_save(chain=chain, user=user, fields={
        "kind": "interval", "every_seconds": 3600})
    tasks.run_scheduled.apply(kwargs={"schedule_id": schedule.id})
    assert [e for e in events() if e[0] in ("chain created", "schedule created", "run started")
            ] == [("chain created", "command", None), ("chain created", "system", user.username),
                  ("schedule created", "system", user.username),
                  ("run started", "beat", user.username)]


def test_a_schedule_turned_off_and_a_token_are_recorded_without_the_key(api, user):
    chain = make_chain("scheduled", user=user)
    schedule = services.schedule_save(chain=chain, user=user, fields={
        "kind": "interval", "every_seconds": 3600})
    services.schedule_save(schedule=ChainSchedule.objects.get(pk=schedule.pk), chain=chain,
                           user=user, fields={"enabled": False, "every_seconds": 7200})
    assert [e[0] for e in events()][-2:] == ["schedule changed", "schedule disabled"]
    changed = LogEntry.objects.get(additional_data__event="schedule changed")
    assert changed.changes == {"every_seconds": [3600, 7200]}
    key = api.post("/api/token/").json()["key"]
    entry = LogEntry.objects.get(additional_data__event="token created")
    assert entry.actor == user
    assert key[:4] in entry.object_repr and key not in json.dumps(
        [entry.object_repr, entry.changes, entry.additional_data, entry.serialized_data])


def test_approvals_are_recorded_with_the_comment(user):
    boss = make_user("boss", superuser=True)
    run = services.run_create(preset=services_preset(), trigger="api", user=user)
    with pytest.raises(Exception):  # noqa: B017 - waits for no approval: refused, not recorded
        services.run_decide(run=run, user=boss, approve=True)
    assert "run approved" not in [e[0] for e in events()]


def test_a_token_is_named_by_its_prefix_not_by_its_key(api, user):
    key = api.post("/api/token/").json()["key"]
    entry = LogEntry.objects.get(additional_data__event="token created")
    assert (entry.content_type.app_label, entry.content_type.model) == ("chains", "apitoken")
    assert entry.object_pk == f"{key[:4]}…"  # a Token's primary key is its key
    assert key not in json.dumps([entry.object_pk, entry.object_repr, entry.changes,
                                  entry.additional_data, entry.serialized_data])
