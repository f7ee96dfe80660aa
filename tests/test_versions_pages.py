"""Chain versions in the admin and the API: a version per change and none for a save that
changes nothing (admin form and API alike), the versions page and its diff, restore (admin
and API) writing a new version, the run page's version line, runs' version numbers."""
import html
import re

import pytest
from auditlog.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chains import services
from chains.models import Chain, ChainVersion
from chains.presets import StepSpec
from tests.factories import make_user

pytestmark = pytest.mark.django_db

ADD = StepSpec("math.add", {"numbers": [1]}, 0)
DOUBLE = StepSpec("math.multiply", {"numbers": [2]}, 1)


@pytest.fixture
def chain(admin_user):
    return services.chain_save(name="versioned", user=admin_user, steps=[ADD],
                               source="admin")


@pytest.fixture
def admin_web(client, admin_user):
    client.force_login(admin_user)
    return client


def numbers(chain) -> list[int]:
    return list(chain.versions.order_by("number").values_list("number", flat=True))


def edit_form(chain, steps: list[dict], **fields) -> dict:
    """The chain's change form as a browser posts it: its saved steps replaced by `steps`
    (rows of the form; the saved rows beyond them deleted)."""
    saved = list(chain.steps.order_by("position"))
    data = {"name": chain.name, "description": chain.description, "enabled": "on",
            "default_inputs": "{}", "inputs_schema": "",
            "steps-TOTAL_FORMS": str(max(len(steps), len(saved))),
            "steps-INITIAL_FORMS": str(len(saved)), "steps-MIN_NUM_FORMS": "0",
            "steps-MAX_NUM_FORMS": "1000", "schedules-TOTAL_FORMS": "0",
            "schedules-INITIAL_FORMS": "0", "schedules-MIN_NUM_FORMS": "0",
            "schedules-MAX_NUM_FORMS": "1000", **fields}
    for i in range(max(len(steps), len(saved))):
        row = {"position": i, "stage": i, "name": "", "step_type": "math.add",
               "params": "{}", "max_retries": "0", "time_limit": "", "queue": ""}
        if i < len(saved):
            row.update({"id": saved[i].pk, "chain": chain.pk})
        if i < len(steps):
            row.update(steps[i])
        else:
            row["DELETE"] = "on"
        data.update({f"steps-{i}-{key}": value for key, value in row.items()})
    return data


def page_text(response) -> str:
    return html.unescape(response.content.decode())


def plain(text: str) -> str:
    """The page's words: no tags, single spaces."""
    return " ".join(re.sub(r"<[^>]+>", " ", text).split())


# --- A version per change ---------------------------------------------------------------------


def test_the_admin_writes_a_version_per_change_and_none_for_an_unchanged_save(
        admin_web, chain, admin_user):
    url = reverse("admin:chains_chain_change", args=[chain.pk])
    same = edit_form(chain, [{"params": '{"numbers": [1]}'}])
    assert admin_web.post(url, same).status_code == 302
    assert numbers(chain) == [1]  # saved, nothing changed: no version
    changed = edit_form(chain, [{"params": '{"numbers": [1]}'},
                                {"step_type": "math.multiply", "params": '{"numbers": [2]}'}])
    assert admin_web.post(url, changed).status_code == 302
    assert admin_web.post(url, edit_form(Chain.objects.get(pk=chain.pk), [
        {"params": '{"numbers": [1]}'},
        {"step_type": "math.multiply", "params": '{"numbers": [2]}'}])).status_code == 302
    assert numbers(chain) == [1, 2]
    latest = chain.versions.get(number=2)
    assert (latest.author, latest.source) == (admin_user, "admin")
    assert [s["params"] for s in latest.definition["steps"]] == [{"numbers": [1]},
                                                                  {"numbers": [2]}]


def test_the_api_writes_a_version_per_change_and_none_for_an_unchanged_save(api, user):
    body = {"name": "api-versioned", "steps": [{"step_type": "math.add",
                                                "params": {"numbers": [1]}}]}
    chain_id = api.post("/api/chains/", body, format="json").json()["id"]
    assert api.put(f"/api/chains/{chain_id}/", body, format="json").status_code == 200
    assert api.patch(f"/api/chains/{chain_id}/", {"enabled": False},
                     format="json").status_code == 200
    chain = Chain.objects.get(pk=chain_id)
    assert numbers(chain) == [1]
    assert api.patch(f"/api/chains/{chain_id}/", {"description": "twice"},
                     format="json").status_code == 200
    assert numbers(chain) == [1, 2]
    listed = api.get(f"/api/chains/{chain_id}/versions/").json()
    assert listed["count"] == 2
    assert [(v["number"], v["author"], v["source"], v["current"])
            for v in listed["results"]] == [(2, "alice", "api", True), (1, "alice", "api", False)]


# --- The versions page ------------------------------------------------------------------------


def test_the_versions_page_lists_versions_and_diffs_the_previous_with_the_current(
        admin_web, chain, admin_user):
    services.chain_save(chain=chain, name="versioned", description="now doubles",
                        steps=[StepSpec("math.add", {"numbers": [5]}, 0), DOUBLE],
                        user=admin_user, source="admin")
    response = admin_web.get(reverse("admin:chains_chain_versions", args=[chain.pk]))
    assert response.status_code == 200
    text = page_text(response)
    assert "version 2" in text and "version 1" in text
    assert text.count('class="tc-current-badge"') == 1
    words = plain(text)
    assert "What changed from version 1 to version 2 (3 changes)" in words
    # per field: old -> new; a step added in one line
    assert "description changed (empty) now doubles" in words
    assert "step 1 params changed numbers [1] → [5]" in words
    assert 'step 2 added - math.multiply · stage 1 · params {"numbers": [2]}' in words
    # any two, picked: the same pair backwards says the step was removed
    back = page_text(admin_web.get(reverse("admin:chains_chain_versions", args=[chain.pk]),
                                   {"a": 2, "b": 1}))
    assert "What changed from version 2 to version 1" in back and ">removed<" in back
    # the chain page links to the page
    change = page_text(admin_web.get(reverse("admin:chains_chain_change", args=[chain.pk])))
    assert reverse("admin:chains_chain_versions", args=[chain.pk]) in change
    assert "Versions (2)" in change


def test_the_versions_page_names_a_bad_number_and_says_when_nothing_differs(
        admin_web, chain):
    url = reverse("admin:chains_chain_versions", args=[chain.pk])
    text = page_text(admin_web.get(url, {"a": "x", "b": "9"}))
    assert "a: not a version number: 'x'" in text
    assert "b: versioned has no version 9" in text
    assert "The first version: nothing to compare it with." in text
    same = page_text(admin_web.get(url, {"a": 1, "b": 1}))
    assert "compared with itself" in same


def test_view_only_staff_see_versions_but_cannot_restore(client, chain, admin_user):
    services.chain_save(chain=chain, name="versioned", steps=[ADD, DOUBLE], user=admin_user)
    client.force_login(make_user("viewer", view_only=True))
    page = page_text(client.get(reverse("admin:chains_chain_versions", args=[chain.pk])))
    assert "Restore this version" not in page
    restore = reverse("admin:chains_chain_version_restore", args=[chain.pk, 1])
    assert client.post(restore).status_code == 403
    assert numbers(chain) == [1, 2]
    client.force_login(make_user("outsider"))  # not staff: not in the admin at all
    assert client.get(reverse("admin:chains_chain_versions",
                              args=[chain.pk])).status_code == 302


# --- Restore ----------------------------------------------------------------------------------


def test_restore_in_the_admin_asks_first_then_writes_a_new_version(admin_web, chain,
                                                                    admin_user):
    services.chain_save(chain=chain, name="versioned", steps=[ADD, DOUBLE], user=admin_user)
    url = reverse("admin:chains_chain_version_restore", args=[chain.pk, 1])
    confirm = page_text(admin_web.get(url))
    assert "Yes, restore version 1" in confirm and ">removed<" in confirm  # what it changes
    assert numbers(chain) == [1, 2]  # asking wrote nothing
    response = admin_web.post(url, follow=True)
    assert response.redirect_chain[-1][0].endswith(
        reverse("admin:chains_chain_versions", args=[chain.pk]) + "?a=2&b=3")
    text = page_text(response)
    assert "Restored version 1 as version 3" in text
    assert numbers(chain) == [1, 2, 3]
    restored = chain.versions.get(number=3)
    assert (restored.source, restored.author) == ("restore", admin_user)
    assert restored.definition == chain.versions.get(number=1).definition
    assert [s.step_type for s in Chain.objects.get(pk=chain.pk).steps.all()] == ["math.add"]
    entry = LogEntry.objects.filter(additional_data__event="chain changed").latest("id")
    assert (entry.additional_data["source"], entry.additional_data["version"]) == ("admin", 3)
    # restoring what the chain already has writes nothing and says so
    again = page_text(admin_web.post(reverse("admin:chains_chain_version_restore",
                                             args=[chain.pk, 3]), follow=True))
    assert "nothing changed, no version was written" in again
    assert numbers(chain) == [1, 2, 3]


def test_restore_in_the_admin_reports_a_version_that_no_longer_validates(admin_web, chain,
                                                                         admin_user):
    services.chain_save(chain=chain, name="versioned", steps=[ADD, DOUBLE], user=admin_user)
    ChainVersion.objects.filter(chain=chain, number=1).update(definition={
        **chain.versions.get(number=1).definition,
        "steps": [{"step_type": "gone.step", "params": {}, "stage": 0}]})
    text = page_text(admin_web.post(reverse("admin:chains_chain_version_restore",
                                            args=[chain.pk, 1]), follow=True))
    assert "Version 1 was not restored: steps.0.step_type" in text
    assert numbers(chain) == [1, 2]


def test_restore_through_the_api(admin_api, api, chain, admin_user):
    services.chain_save(chain=chain, name="versioned", steps=[ADD, DOUBLE], user=admin_user)
    url = f"/api/chains/{chain.pk}/versions/1/restore/"
    refused = api.post(url)  # alice may not change root's chain
    assert refused.status_code == 403
    response = admin_api.post(url)
    assert response.status_code == 201
    body = response.json()
    assert (body["number"], body["source"], body["author"], body["current"]) == (
        3, "restore", "root", True)
    assert body["definition"]["steps"] == chain.versions.get(number=1).definition["steps"]
    assert admin_api.post(url).status_code == 200  # the same definition: nothing written
    assert numbers(chain) == [1, 2, 3]


# --- The API's reads --------------------------------------------------------------------------


def test_the_api_gives_a_version_with_its_definition_and_a_diff(api, chain, admin_user):
    services.chain_save(chain=chain, name="versioned", default_inputs=8675309,
                        steps=[ADD, DOUBLE], user=admin_user)
    one = api.get(f"/api/chains/{chain.pk}/versions/2/")
    assert one.status_code == 200
    assert one.json()["chain"] == chain.pk
    assert [s["step_type"] for s in one.json()["definition"]["steps"]] == [
        "math.add", "math.multiply"]
    assert "8675309" not in one.content.decode()  # alice may not read root's inputs
    diff = api.get(f"/api/chains/{chain.pk}/versions/diff/", {"a": 1, "b": 2}).json()
    assert (diff["a"], diff["b"]) == (1, 2)
    assert [(c["where"], c["change"]) for c in diff["changes"]] == [
        ("default_inputs", "changed"), ("step 2", "added")]
    assert "8675309" not in str(diff)
    assert diff["changes"][1]["new"]["step_type"] == "math.multiply"


@pytest.mark.parametrize(("url", "status", "field"), [
    ("/api/chains/{chain}/versions/x/", 400, "number"),
    ("/api/chains/{chain}/versions/0/", 400, "number"),
    ("/api/chains/{chain}/versions/99999999999/", 400, "number"),
    ("/api/chains/{chain}/versions/7/", 404, "number"),
    ("/api/chains/{chain}/versions/diff/?a=1", 400, "b"),
    ("/api/chains/{chain}/versions/diff/?a=one&b=1", 400, "a"),
    ("/api/chains/{chain}/versions/diff/?a=1&b=9", 404, "b"),
    ("/api/chains/999999/versions/", 404, "chain"),
])
def test_bad_version_numbers_are_named(admin_api, chain, url, status, field):
    response = admin_api.get(url.format(chain=chain.pk))
    assert response.status_code == status
    assert field in response.json()


def test_versions_are_paged_newest_first(admin_api, chain, admin_user):
    for n in range(2, 6):
        services.chain_save(chain=chain, name="versioned", description=f"v{n}", steps=[ADD],
                            user=admin_user)
    page = admin_api.get(f"/api/chains/{chain.pk}/versions/", {"limit": 2, "offset": 1}).json()
    assert page["count"] == 5
    assert [v["number"] for v in page["results"]] == [4, 3]
    assert page["next"] and page["previous"]


# --- Runs and their versions ------------------------------------------------------------------


def test_runs_say_which_version_they_ran_and_the_current_one(admin_api, chain, admin_user):
    run = services.run_start(chain=chain, user=admin_user)
    services.chain_save(chain=chain, name="versioned", steps=[ADD, DOUBLE], user=admin_user)
    seed = admin_api.post("/tasks/submit", {"task_type": "math_chain", "config": {
        "operation": "add", "numbers": [1]}}, format="json").json()["task_id"]
    detail = admin_api.get(f"/api/runs/{run.pk}/").json()
    assert (detail["version"], detail["current_version"]) == (1, 2)
    with CaptureQueriesContext(connection) as queries:
        listed = admin_api.get("/api/runs/").json()["results"]
    by_id = {r["id"]: (r["version"], r["current_version"]) for r in listed}
    assert by_id == {str(run.pk): (1, 2), seed: (None, None)}
    sqls = [q["sql"] for q in queries.captured_queries]
    assert not [sql for sql in sqls if "chains_chainversion" in sql
                and "chains_run" not in sql]  # read in the list's own query
    counts = [sql for sql in sqls if "COUNT(" in sql.upper() and "chains_run" in sql]
    assert counts and not [sql for sql in counts if "chains_chainversion" in sql]  # not counted
    started = admin_api.post(f"/api/chains/{chain.pk}/run/", {}, format="json").json()
    assert (started["version"], started["current_version"]) == (2, 2)


def test_the_run_page_says_which_version_it_ran_and_links_the_diff(admin_web, chain,
                                                                   admin_user):
    run = services.run_start(chain=chain, user=admin_user)
    page = reverse("admin:chains_run_change", args=[run.pk])
    assert "version 1 (current)" in page_text(admin_web.get(page))
    for params in ([2], [3]):
        services.chain_save(chain=chain, name="versioned", user=admin_user,
                            steps=[StepSpec("math.add", {"numbers": params}, 0)])
    text = page_text(admin_web.get(page))
    diff = reverse("admin:chains_chain_versions", args=[chain.pk]) + "?a=1&b=3"
    assert f'href="{diff}"' in text and ">version 1 (current: 3)</a>" in text
    panel = page_text(admin_web.get(reverse("admin:chains_run_panel", args=[run.pk])))
    assert "version 1 (current: 3)" in panel  # the live panel keeps it
    listed = page_text(admin_web.get(reverse("admin:chains_run_changelist")))
    assert 'title="chain version 1">v1</small>' in listed
    seed = services.run_submit_task(task_type="math_chain", config={
        "operation": "add", "numbers": [1]}, user=admin_user)
    seed_page = page_text(admin_web.get(reverse("admin:chains_run_change", args=[seed.pk])))
    assert "tc-run-version" not in seed_page  # a run without a version says nothing
