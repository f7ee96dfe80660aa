"""The rules of the workflow features, without a worker: conditions, what a map, approval or
sub-chain step may be, typed run inputs from every entry point, retry backoff."""
import random

import pytest
from django.test import override_settings

from chains import services
from chains.conditions import describe, holds, when_problems
from chains.errors import ChainError
from chains.models import Chain, ChainSchedule, Run, StepRun
from chains.presets import StepSpec
from chains.steps import StepFailed
from tests.factories import make_chain, make_run
from tests.helpers import unchanged

pytestmark = pytest.mark.django_db

DATA = {"stats": {"value": {"mean": 150.0}}, "rows": [3, 4], "tag": "x", "empty": []}


# --- Conditions -----------------------------------------------------------------------------


@pytest.mark.parametrize(("when", "expected"), [
    ({"path": "stats.value.mean", "op": ">", "value": 100}, True),
    ({"path": "stats.value.mean", "op": "<=", "value": 100}, False),
    ({"path": "rows.0", "op": "==", "value": 3}, True),
    ({"path": "rows.-1", "op": "==", "value": 4}, True),
    ({"path": "rows.5", "op": "exists"}, False),
    ({"path": "stats", "op": "exists"}, True),
    ({"path": "tag", "op": "in", "value": ["x", "y"]}, True),
    ({"path": "tag", "op": "not_in", "value": ["x", "y"]}, False),
    ({"path": "empty", "op": "truthy"}, False),
    ({"path": "tag", "op": "!=", "value": "y"}, True),
    ({"path": "tag", "op": ">", "value": 1}, False),  # a string is not compared with a number
    ({"path": "missing.deeper", "op": "==", "value": None}, False),  # nowhere: false
])
def test_a_condition_looks_up_its_path_and_compares_once(when, expected):
    assert when_problems(when) == []
    assert holds(when, DATA) is expected


def test_the_whole_input_is_the_empty_path():
    assert holds({"path": "", "op": ">", "value": 100}, 101)
    assert not holds({"path": "", "op": ">", "value": 100}, 6)
    assert describe({"path": "", "op": ">", "value": 100}) == "when input > 100"
    assert describe({"path": "a.b", "op": "exists"}) == "when a.b exists"


@pytest.mark.parametrize(("when", "problem"), [
    ("x > 1", 'must be an object like {"path": "", "op": ">", "value": 100}'),
    ({"path": "", "op": "=~", "value": 1},
     "op must be one of == != < <= > >= in not_in exists truthy"),
    ({"path": "", "op": ">"}, "op > needs a value"),
    ({"path": "", "op": "exists", "value": 1}, "op exists takes no value"),
    ({"path": "", "op": "in", "value": 1}, "op in needs a list as its value"),
    ({"path": "", "op": "==", "value": 1, "eval": "x"}, "unknown key 'eval'"),
])
def test_a_bad_condition_is_named(when, problem):
    assert problem in when_problems(when)


# --- What a step may be ---------------------------------------------------------------------


def refused(steps: list[dict], **fields) -> dict:
    """The errors of saving a chain with `steps` through the API's service."""
    specs = [StepSpec(**{"params": {}, "stage": 0, **step}) for step in steps]
    with unchanged(), pytest.raises(ChainError) as caught:
        services.chain_save(name="refused", steps=specs, **fields)
    return caught.value.errors


def test_a_map_step_and_a_pausing_step_are_each_alone_in_their_stage():
    assert refused([{"step_type": "math.add", "map": True}, {"step_type": "math.add"}]) == {
        "steps.0.map": ["a map step is alone in its stage: give it a stage of its own"]}
    errors = refused([{"step_type": "flow.approval"}, {"step_type": "math.add"}])
    assert errors == {"steps.0.stage": [
        "a flow.approval step is alone in its stage: give it a stage of its own"]}
    assert refused([{"step_type": "flow.approval", "map": True}]) == {
        "steps.0.map": ["flow.approval cannot map over a list"]}


def test_a_bad_condition_or_backoff_is_refused_on_its_step():
    errors = refused([{"step_type": "math.add", "when": {"path": "", "op": "like"},
                       "retry_backoff": 0, "retry_backoff_max": 100_000}])
    assert errors == {
        "steps.0.when": ["op must be one of == != < <= > >= in not_in exists truthy"],
        "steps.0.retry_backoff": ["must be between 1 and 3600 seconds"],
        "steps.0.retry_backoff_max": ["must be between 1 and 3600 seconds"],
    }


def test_a_sub_chain_must_exist_make_no_cycle_and_nest_at_most_max_depth(settings):
    assert refused([{"step_type": "flow.chain", "params": {"chain": "nowhere"}}]) == {
        "steps.0.params.chain": ["no chain named 'nowhere'"]}
    assert refused([{"step_type": "flow.chain", "params": {"chain": "refused"}}]) == {
        "steps.0.params.chain": ["a cycle: refused calls refused"]}
    a = make_chain("a", steps=[StepSpec("math.add", {}, 0)])
    services.chain_save(name="b", steps=[StepSpec("flow.chain", {"chain": "a"}, 0)])
    with unchanged(), pytest.raises(ChainError) as caught:  # a calls b calls a
        services.chain_save(chain=a, name="a", steps=[StepSpec("flow.chain", {"chain": "b"}, 0)])
    assert caught.value.errors == {"steps.0.params.chain": ["a cycle: a calls b calls a"]}
    settings.CHAINS_MAX_DEPTH = 2
    services.chain_save(name="c", steps=[StepSpec("flow.chain", {"chain": "b"}, 0)])  # c>b>a
    assert refused([{"step_type": "flow.chain", "params": {"chain": "c"}}]) == {
        "steps.0.params.chain": ["sub-chains would nest 3 deep; the limit is 2 "
                                 "(CHAINS_MAX_DEPTH)"]}


def test_validate_reports_what_saving_would_refuse():
    make_chain("gone", steps=[StepSpec("math.add", {}, 0)])
    chain = make_chain("v", steps=[StepSpec("flow.chain", {"chain": "gone"}, 0)])
    Chain.objects.filter(name="gone").delete()  # the chain it calls is deleted since
    assert services.chain_problems(chain) == ["steps.0.params.chain: no chain named 'gone'"]


# --- Running them ---------------------------------------------------------------------------


@override_settings(CHAINS_MAX_MAP_ITEMS=10)
def test_a_map_over_more_items_than_allowed_fails_with_the_limit():
    run = make_run(StepSpec("math.add", {}, 0, map=True))
    step = StepRun.objects.get(run=run)
    with pytest.raises(StepFailed, match=r"^map: 11 items is over the limit of 10 "
                                         r"\(CHAINS_MAX_MAP_ITEMS\)$"):
        services.step_execute(step_run_id=step.id, previous=list(range(11)))


def test_a_sub_chain_deeper_than_max_depth_fails_its_step(settings):
    make_chain("leaf", steps=[StepSpec("math.add", {}, 0)])
    run = make_run(StepSpec("flow.chain", {"chain": "leaf"}, 0))
    Run.objects.filter(id=run.id).update(depth=settings.CHAINS_MAX_DEPTH)
    step = StepRun.objects.get(run=run)
    with pytest.raises(StepFailed, match="sub-chains nest deeper than 5"):
        services.step_execute(step_run_id=step.id, previous=1)


# --- Typed run inputs -----------------------------------------------------------------------


SCHEMA = {"type": "object", "properties": {"n": {"type": "number", "minimum": 0}},
          "required": ["n"]}


def test_a_chain_refuses_a_schema_that_is_not_one_and_defaults_that_do_not_fit():
    assert refused([{"step_type": "math.add"}], inputs_schema={"type": "nonsense"}) == {
        "inputs_schema": ["not a valid JSON Schema: 'nonsense' is not valid under any of the "
                          "given schemas (at type)"]}
    assert refused([{"step_type": "math.add"}], inputs_schema=SCHEMA,
                   default_inputs={"n": -1}) == {
        "default_inputs.n": ["-1 is less than the minimum of 0"]}


def test_inputs_that_do_not_fit_the_schema_start_nothing_from_the_api(admin_api):
    chain = services.chain_save(name="typed", inputs_schema={"type": "number", "minimum": 0},
                                steps=[StepSpec("math.add", {}, 0)])
    with unchanged(Run, StepRun):
        response = admin_api.post(f"/api/chains/{chain.id}/run/", {"inputs": -1},
                                  format="json")
    assert response.status_code == 400
    assert response.json() == {"inputs": ["-1 is less than the minimum of 0"]}
    with unchanged(Run, StepRun):
        response = admin_api.post(f"/api/chains/{chain.id}/run/", {"inputs": "x"},
                                  format="json")
    assert response.json() == {"inputs": ["'x' is not of type 'number'"]}


def test_each_field_that_does_not_fit_is_named(admin_api):
    chain = services.chain_save(name="typed", inputs_schema=SCHEMA,
                                steps=[StepSpec("math.add", {}, 0)])
    with pytest.raises(ChainError) as caught:
        services.run_start(chain=chain, inputs={"n": -2})
    assert caught.value.errors == {"inputs.n": ["-2 is less than the minimum of 0"]}
    with pytest.raises(ChainError) as caught:
        services.run_start(chain=chain, inputs={})
    assert caught.value.errors == {"inputs": ["'n' is a required property"]}


def test_a_schedule_whose_inputs_do_not_fit_is_refused_when_saved(user):
    chain = services.chain_save(name="typed", inputs_schema=SCHEMA, default_inputs={"n": 1},
                                steps=[StepSpec("flow.wait", {"seconds": 0}, 0)], user=user)
    with unchanged(ChainSchedule), pytest.raises(ChainError) as caught:
        services.schedule_save(chain=chain, user=user, fields={
            "kind": "interval", "every_seconds": 3600, "inputs": {"n": "one"}})
    assert caught.value.errors == {"inputs.n": ["'one' is not of type 'number'"]}
    services.schedule_save(chain=chain, user=user, fields={  # the defaults fit
        "kind": "interval", "every_seconds": 3600, "inputs": None})


# --- Retry backoff --------------------------------------------------------------------------


def test_retry_backoff_doubles_with_full_jitter_up_to_its_cap(settings):
    settings.CHAINS_VISIBILITY_TIMEOUT = 600
    random.seed(7)
    plain = services.RetryPolicy(max_retries=3)
    assert [plain.delay(n) for n in range(3)] == [2, 2, 2]
    policy = services.RetryPolicy(max_retries=9, backoff=4, backoff_max=100)
    for retries, ceiling in [(0, 4), (1, 8), (2, 16), (3, 32), (5, 100), (9, 100)]:
        delays = [policy.delay(retries) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole range: full jitter
    capped = services.RetryPolicy(max_retries=9, backoff=1000, backoff_max=3600)
    assert max(capped.delay(0) for _ in range(100)) <= 300  # half the visibility timeout


def test_a_steps_retry_policy_is_read_from_its_row():
    run = make_run(StepSpec("math.add", {}, 0, max_retries=3, retry_backoff=5,
                            retry_backoff_max=60))
    step = StepRun.objects.get(run=run)
    assert services.step_retry_policy(step_run_id=step.id) == services.RetryPolicy(3, 5, 60)


def test_each_item_done_counts_once_and_moves_the_steps_progress():
    run = make_run(StepSpec("math.multiply", {"numbers": [3]}, 0, map=True))
    step = StepRun.objects.get(run=run)
    assert services.step_execute(step_run_id=step.id, previous=[1, 2, 3, 4]) is None
    tasks = dict(step.items.values_list("index", "task_id"))
    assert services.map_item_execute(step_run_id=step.id, index=1, value=2,
                                     task_id=tasks[1]) == 6
    assert services.map_item_execute(step_run_id=step.id, index=1, value=2,
                                     task_id=tasks[1]) == 6  # delivered again: stored
    step.refresh_from_db()
    assert (step.items_total, step.items_done, step.progress, step.status) == (
        4, 1, 0.25, "RUNNING")
    for index, value in [(0, 1), (2, 3), (3, 4)]:
        services.map_item_execute(step_run_id=step.id, index=index, value=value,
                                  task_id=tasks[index])
    step.refresh_from_db()
    run.refresh_from_db()
    assert (step.status, step.result, step.items_done) == ("COMPLETED", [3, 6, 9, 12], 4)
    assert (run.status, run.result) == ("COMPLETED", [3, 6, 9, 12])
