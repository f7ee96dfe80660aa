"""Run comparison: the structure (chains.comparison via selectors.run_comparison) for two runs
of different versions of one chain (a step added, a param changed, a status differing), the
API (200, 400 naming a or b, 404 for a run one may not see), the runs list's action with one,
two and three runs selected, the run page's Compare button and picker, and the page itself."""
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from chains import selectors, services
from chains.comparison import durations_differ
from chains.models import Run, RunStatus, StepRun
from chains.presets import Preset, StepSpec
from tests.factories import make_run, make_user, token_client

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ADD = StepSpec("math.add", {"numbers": [1]}, 0)


def run_of(chain, *, user, inputs=1) -> Run:
    """A run of the chain's current version, as the services start one (not published)."""
    return services.run_create(
        preset=Preset(specs=services.chain_step_specs(chain), inputs=inputs), chain=chain,
        trigger="api", user=user, version=services.current_version(chain))


def finish(run: Run, index: int, *, status=RunStatus.COMPLETED, result=None, error="",
           seconds: float = 1.0, start: float = 0.0) -> None:
    StepRun.objects.filter(run=run, index=index).update(
        status=status, result=result, error=error, started_at=T0 + timedelta(seconds=start),
        finished_at=T0 + timedelta(seconds=start + seconds))


@pytest.fixture
def two_versions(user):
    """Version 1: add 1, then double. Version 2: add 1, then triple (a param changed), then
    add 5 (a step added). The run of version 1 completed; in the run of version 2 the
    second step failed."""
    chain = services.chain_save(name="pipeline", user=user, steps=[
        ADD, StepSpec("math.multiply", {"numbers": [2]}, 1)])
    old = run_of(chain, user=user)
    finish(old, 0, result=2)
    finish(old, 1, result=4, start=1)
    Run.objects.filter(id=old.id).update(status=RunStatus.COMPLETED, result=4,
                                         started_at=T0, finished_at=T0 + timedelta(seconds=2))
    services.chain_save(chain=chain, name="pipeline", user=user, steps=[
        ADD, StepSpec("math.multiply", {"numbers": [3]}, 1),
        StepSpec("math.add", {"numbers": [5]}, 2)])
    new = run_of(chain, user=user)
    finish(new, 0, result=2)
    finish(new, 1, status=RunStatus.FAILED, error="step 2 (math.multiply): boom", start=1,
           seconds=5)
    StepRun.objects.filter(run=new, index=2).update(status=RunStatus.CANCELLED)
    Run.objects.filter(id=new.id).update(status=RunStatus.FAILED, error="step 2: boom",
                                         started_at=T0, finished_at=T0 + timedelta(seconds=6))
    return chain, old, new


def test_two_versions_of_a_chain_side_by_side(user, two_versions):
    chain, old, new = two_versions
    comparison = selectors.run_comparison(user=user, a=old.id, b=new.id)
    a, b = comparison["a"], comparison["b"]
    assert (a["version"], b["version"], comparison["same_chain"]) == (1, 2, True)
    assert (a["chain_name"], a["status"], b["status"]) == ("pipeline", "COMPLETED", "FAILED")
    differs = {row["field"] for row in comparison["summary"] if row["differs"]}
    assert differs == {"version", "status", "duration", "result", "error"}
    first, second, third = comparison["steps"]
    assert (first["change"], first["differs"]) == ("same", [])
    assert second["change"] == "changed"
    assert second["differs"] == ["status", "duration", "params", "result", "error"]
    assert (second["a"]["params"], second["b"]["params"]) == ({"numbers": [2]}, {"numbers": [3]})
    assert (second["a"]["duration"], second["b"]["duration"]) == (1.0, 5.0)
    assert (third["change"], third["a"], third["b"]["step_type"]) == ("added", None, "math.add")
    assert comparison["counts"] == {"same": 1, "changed": 1, "added": 1, "removed": 0}
    # What changed in the definition between the two versions, from the versions' own diff.
    assert [(c["where"], c["change"]) for c in comparison["version_changes"]] == [
        ("step 2 params", "changed"), ("step 3", "added")]
    # Swapped, the third step is one the base has and the other does not: removed.
    swapped = selectors.run_comparison(user=user, a=new.id, b=old.id)
    assert swapped["steps"][2]["change"] == "removed" and swapped["steps"][2]["b"] is None


def test_durations_are_marked_only_when_far_apart():
    assert not durations_differ(0.002, 0.005)  # twice as long, but by 3 ms
    assert not durations_differ(10.0, 14.0)  # 4 s longer, but not twice
    assert durations_differ(1.0, 5.0) and durations_differ(None, 1.0)
    assert not durations_differ(None, None)


def test_runs_of_no_chain_compare_too(user):
    one = make_run(ADD, user=user)
    two = make_run(ADD, StepSpec("math.add", {"numbers": [2]}, 1), user=user)
    comparison = selectors.run_comparison(user=user, a=one.id, b=two.id)
    assert comparison["same_chain"] is False and comparison["version_changes"] is None
    assert [s["change"] for s in comparison["steps"]] == ["same", "added"]


# --- API ----------------------------------------------------------------------------------------


def test_the_api_answers_the_same_structure(api, user, two_versions):
    _, old, new = two_versions
    response = api.get("/api/runs/compare/", {"a": str(old.id), "b": str(new.id)})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["a"]["id"], body["b"]["id"]) == (str(old.id), str(new.id))
    assert (body["a"]["version"], body["b"]["version"]) == (1, 2)
    assert [s["change"] for s in body["steps"]] == ["same", "changed", "added"]
    assert body["steps"][1]["differs"] == ["status", "duration", "params", "result", "error"]
    assert body["steps"][1]["b"]["error"] == "step 2 (math.multiply): boom"
    assert body["a"]["inputs"] == 1 and body["a"]["started_at"] == "2026-11-29T12:00:00Z"
    assert body["counts"] == {"same": 1, "changed": 1, "added": 1, "removed": 0}
    assert {row["field"]: row["differs"] for row in body["summary"]}["trigger"] is False


@pytest.mark.parametrize(("query", "errors"), [
    ({}, {"a": ["This field is required."], "b": ["This field is required."]}),
    ({"a": "nope", "b": "1234"}, {"a": ["Must be a valid UUID."], "b": ["Must be a valid UUID."]}),
    ({"a": "SAME", "b": "SAME"}, {"b": ["the same run as a: pick another run"]}),
    ({"a": "RUN", "b": "123"}, {"b": ["Must be a valid UUID."]}),
])
def test_bad_ids_are_400_naming_a_or_b(api, user, query, errors):
    run = make_run(ADD, user=user)
    query = {k: str(run.id) if v in ("RUN", "SAME") else v for k, v in query.items()}
    response = api.get("/api/runs/compare/", query)
    assert response.status_code == 400
    assert response.json() == errors


def test_a_run_one_may_not_see_is_404(api, other_api, user, other_user):
    mine = make_run(ADD, user=user)
    theirs = make_run(ADD, user=other_user)
    response = api.get("/api/runs/compare/", {"a": str(mine.id), "b": str(theirs.id)})
    assert response.status_code == 404
    assert response.json()["detail"].startswith("b: no run")
    absent = "00000000-0000-4000-8000-000000000000"
    assert api.get("/api/runs/compare/", {"a": absent, "b": str(mine.id)}).status_code == 404
    # Staff see every run: the same pair compares.
    staff = make_user("staffer", staff=True)
    assert token_client(staff).get("/api/runs/compare/", {
        "a": str(mine.id), "b": str(theirs.id)}).status_code == 200


def test_the_compare_route_is_not_a_run_id(api):
    assert api.get("/api/runs/compare/").status_code == 400  # not "no run 'compare'"


# --- admin --------------------------------------------------------------------------------------


@pytest.fixture
def admin_web(client, admin_user):
    client.force_login(admin_user)
    return client


def action(client, runs) -> object:
    return client.post(reverse("admin:chains_run_changelist"), {
        "action": "compare_selected_runs", "_selected_action": [str(r.id) for r in runs]})


def test_the_action_compares_exactly_two(admin_web, admin_user):
    runs = [make_run(ADD, user=admin_user) for _ in range(3)]
    response = action(admin_web, runs[:2])
    assert response.status_code == 302
    older, newer = sorted(runs[:2], key=lambda r: (r.created_at, r.id))
    assert response["Location"] == (f"{reverse('admin:chains_run_compare')}?a={older.id}"
                                    f"&b={newer.id}")
    for picked in (runs[:1], runs):
        response = action(admin_web, picked)
        assert response.status_code == 302
        assert response["Location"] == reverse("admin:chains_run_changelist")
        said = [str(m) for m in get_messages(response.wsgi_request)]
        assert said == [f"Select exactly two runs to compare ({len(picked)} selected)."]
        admin_web.get(response["Location"])  # the list shows the message (and consumes it)


def test_the_compare_page_marks_what_differs(admin_web, two_versions):
    _, old, new = two_versions
    url = f"{reverse('admin:chains_run_compare')}?a={old.id}&b={new.id}"
    page = admin_web.get(url).content.decode()
    assert 'id="tc-compare-steps"' in page and "version 1 → version 2" in page
    assert page.count('data-change="changed"') == 1 and page.count('data-change="added"') == 1
    assert "not in run A: added in B" in page
    step_two = page.split('data-step="1"')[1].split("</tr>")[0]
    assert step_two.count("tc-differs") == 4 * 2  # status, duration, params, outcome; twice
    assert "{&quot;numbers&quot;: [3]}" in step_two


def test_the_run_page_offers_compare_and_the_picker_lists_the_chains_runs(admin_web,
                                                                         two_versions):
    chain, old, new = two_versions
    other_chain = make_run(ADD)
    run_page = admin_web.get(reverse("admin:chains_run_change", args=[new.id])).content.decode()
    assert f'href="{reverse("admin:chains_run_compare")}?a={new.id}"' in run_page
    picker = admin_web.get(reverse("admin:chains_run_compare"), {"a": str(new.id)})
    assert picker.status_code == 200
    text = picker.content.decode()
    assert f'value="{old.id}"' in text and str(other_chain.id) not in text
    assert f'value="{new.id}"' in text  # the hidden a
    # A pasted id wins over the picked one; a bad one says which and keeps the picker.
    pasted = admin_web.get(reverse("admin:chains_run_compare"), {
        "a": str(new.id), "b": str(old.id), "b_id": str(other_chain.id)})
    assert pasted.status_code == 200
    assert f'id="tc-compare-b" title="{other_chain.id}"' in pasted.content.decode()
    bad = admin_web.get(reverse("admin:chains_run_compare"), {"a": str(new.id), "b_id": "zz"})
    assert bad.status_code == 400 and "b: not a run id" in bad.content.decode()


def test_the_compare_page_is_404_for_a_run_that_is_not_there(admin_web, admin_user):
    run = make_run(ADD, user=admin_user)
    url = reverse("admin:chains_run_compare")
    absent = "00000000-0000-4000-8000-000000000000"
    assert admin_web.get(url, {"a": str(run.id), "b": absent}).status_code == 404
    assert admin_web.get(url, {"a": absent}).status_code == 404
    assert admin_web.get(url).status_code == 404
