"""The audit trail in the admin (read only, superusers included; filters, search, links to
objects that still exist) and at /api/audit/ (staff only, filters, newest first)."""
import html
import re

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Permission
from django.urls import reverse

from chains import audit, services
from chains.models import Chain
from chains.presets import Preset, StepSpec
from tests.factories import make_user, token_client
from tests.helpers import unchanged

pytestmark = pytest.mark.django_db

LIST = "/admin/auditlog/logentry/"


@pytest.fixture
def trail(api, admin_user, user):
    """A few entries of each kind: a chain created and changed in the API by alice from one
    address, a run started and deleted, a schedule created, a token made."""
    chain_id = api.post("/api/chains/", {"name": "audited", "steps": [
        {"step_type": "math.add", "params": {"numbers": [1]}}]}, format="json",
        REMOTE_ADDR="198.51.100.4").json()["id"]
    api.patch(f"/api/chains/{chain_id}/", {"description": "changed"}, format="json",
              REMOTE_ADDR="198.51.100.4")
    run = api.post(f"/api/chains/{chain_id}/run/", {}, format="json").json()["id"]
    gone = services.run_create(preset=Preset(specs=[StepSpec("math.add", {"numbers": [1]}, 0)],
                                             inputs=0), trigger="api", user=user)
    gone_id = str(gone.pk)
    services.run_delete(run=gone)
    schedule = services.schedule_save(chain=Chain.objects.get(pk=chain_id), user=admin_user,
                                      fields={"kind": "interval", "every_seconds": 3600})
    key = api.post("/api/token/").json()["key"]
    return {"key": key, "chain": chain_id, "run": run, "gone": gone_id, "schedule": schedule.pk}


def plain(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html.unescape(response.content.decode())).split())


# --- The admin --------------------------------------------------------------------------------


def test_the_audit_list_shows_who_what_when_and_from_where(admin_client, trail):
    response = admin_client.get(LIST)
    assert response.status_code == 200
    text = plain(response)
    assert "alice chain changed chain audited api 198.51.100.4" in text
    assert "alice chain created chain audited api 198.51.100.4" in text
    assert "run deleted" in text and "(gone)" in text  # a deleted run is not linked
    page = response.content.decode()
    assert f'href="{reverse("admin:chains_chain_change", args=[trail["chain"]])}"' in page
    assert f'href="{reverse("admin:chains_run_change", args=[trail["run"]])}"' in page
    # a schedule links to its chain's page; a token is named by its prefix only
    assert f"token alice ({trail['key'][:4]}…)" in text and trail["key"] not in page
    assert 'name="_selected_action"' not in page  # no actions, so no delete_selected


def test_a_superuser_may_not_add_change_or_delete_an_entry(admin_client, trail):
    entry = LogEntry.objects.order_by("id").first()
    with unchanged(LogEntry):
        assert admin_client.get(LIST + "add/").status_code == 403
        detail = admin_client.get(LIST + f"{entry.pk}/change/")
        assert detail.status_code == 200  # read only: no Save, no Delete
        page = detail.content.decode()
        assert 'name="_save"' not in page and "deletelink" not in page
        assert "chain created" in plain(detail)
        assert admin_client.post(LIST + f"{entry.pk}/change/", {
            "object_repr": "rewritten"}).status_code == 403
        assert admin_client.post(LIST + f"{entry.pk}/delete/", {
            "post": "yes"}).status_code == 403
        assert admin_client.post(LIST, {"action": "delete_selected",
                                        "_selected_action": [entry.pk]}).status_code in (
            200, 302)  # no such action: nothing happens
    assert LogEntry.objects.filter(pk=entry.pk, object_repr="audited").exists()


def test_who_may_read_the_audit_list(client, trail):
    staff = make_user("staffer", staff=True)
    client.force_login(staff)
    assert client.get(LIST).status_code == 403  # staff without auditlog.view_logentry
    assert "Log entries" not in plain(client.get("/admin/"))
    staff.user_permissions.add(Permission.objects.get(codename="view_logentry",
                                                          content_type__app_label="auditlog"))
    client.force_login(type(staff).objects.get(pk=staff.pk))
    assert client.get(LIST).status_code == 200
    assert "Log entries" in plain(client.get("/admin/"))  # in the app list and the sidebar
    changer = make_user("changer", staff=True)
    changer.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="auditlog",
        codename__in=["change_logentry", "delete_logentry", "add_logentry"]))
    client.force_login(changer)
    assert client.get(LIST).status_code == 403


@pytest.mark.parametrize(("query", "events"), [
    ({"event": "chain changed"}, {"chain changed"}),
    ({"object_type": "run"}, {"run started", "run cancelled", "run deleted"}),
    ({"object_type": "chainschedule"}, {"schedule created"}),
    ({"object_type": "apitoken"}, {"token created"}),
])
def test_the_audit_list_filters(admin_client, trail, query, events):
    response = admin_client.get(LIST, query)
    assert response.status_code == 200
    shown = {audit.event_of(entry) for entry in response.context["cl"].result_list}
    assert shown == events


def test_the_audit_list_filters_by_user_date_and_object(admin_client, trail, user,
                                                        admin_user):
    by_user = admin_client.get(LIST, {"actor__id__exact": admin_user.pk})
    assert {audit.event_of(e) for e in by_user.context["cl"].result_list} == {
        "schedule created"}
    today = LogEntry.objects.latest("timestamp").timestamp
    dated = admin_client.get(LIST, {"timestamp__year": today.year,
                                    "timestamp__month": today.month,
                                    "timestamp__day": today.day})
    assert len(dated.context["cl"].result_list) == LogEntry.objects.count()
    searched = admin_client.get(LIST, {"q": trail["gone"]})
    assert {audit.event_of(e) for e in searched.context["cl"].result_list} == {
        "run started", "run cancelled", "run deleted"}
    one = admin_client.get(LIST, {"object_type": "chain", "object_pk": trail["chain"]})
    assert [audit.event_of(e) for e in one.context["cl"].result_list] == [
        "chain changed", "chain created"]


# --- The API ----------------------------------------------------------------------------------


def test_the_audit_api_is_for_staff_only(api, client):
    assert api.get("/api/audit/").status_code == 403
    assert client.get("/api/audit/").status_code in (401, 403)
    staff = token_client(make_user("staffer", staff=True))
    assert staff.get("/api/audit/").status_code == 200


def test_the_audit_api_lists_newest_first_with_every_field(admin_api, trail):
    body = admin_api.get("/api/audit/").json()
    assert body["count"] == LogEntry.objects.count()
    first = body["results"][0]
    assert set(first) == {"time", "user", "event", "source", "remote_addr", "object_type",
                          "object_id", "object_repr", "changes", "data"}
    times = [row["time"] for row in body["results"]]
    assert times == sorted(times, reverse=True)
    assert first["event"] == "token created" and first["object_type"] == "apitoken"
    assert first["object_id"] == trail["key"][:4] + "…" and trail["key"] not in str(body)


def test_the_audit_api_filters(admin_api, trail, user, admin_user):
    def events(**query) -> list[str]:
        response = admin_api.get("/api/audit/", query)
        assert response.status_code == 200, response.json()
        return [row["event"] for row in response.json()["results"]]

    assert events(user=user.username, object_type="chain") == ["chain changed",
                                                               "chain created"]
    assert events(user=admin_user.pk) == ["schedule created"]
    assert events(event="run deleted") == ["run deleted"]
    assert events(object_type="run", object_id=trail["gone"]) == [
        "run deleted", "run cancelled", "run started"]
    assert events(object_type="chainschedule", object_id=str(trail["schedule"])) == [
        "schedule created"]
    changed = LogEntry.objects.get(additional_data__event="chain changed").timestamp
    assert "chain changed" not in events(until=changed.isoformat())
    assert events(since=changed.isoformat(), object_type="chain") == ["chain changed"]
    row = admin_api.get("/api/audit/", {"event": "chain changed"}).json()["results"][0]
    assert (row["user"], row["source"], row["remote_addr"], row["object_id"],
            row["object_repr"], row["data"]) == (
        user.username, "api", "198.51.100.4", str(trail["chain"]), "audited", {"version": 2})


@pytest.mark.parametrize(("query", "field"), [
    ({"event": "chain eaten"}, "event"),
    ({"object_type": "user"}, "object_type"),
    ({"since": "yesterday"}, "since"),
    ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
])
def test_the_audit_api_names_a_bad_filter(admin_api, query, field):
    response = admin_api.get("/api/audit/", query)
    assert response.status_code == 400
    assert field in response.json()

