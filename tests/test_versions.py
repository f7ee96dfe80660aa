"""Chain versions: one per change of the definition and none for a save that changes nothing;
a run records its version; a diff says what changed; a restore writes a new version; purge
keeps what runs refer to."""
from datetime import timedelta

import pytest
from django.utils import timezone

from chains import selectors, services
from chains.models import ChainVersion, Run
from chains.presets import Preset, StepSpec

pytestmark = pytest.mark.django_db

ADD = StepSpec("math.add", {"numbers": [1]}, 0)
DOUBLE = StepSpec("math.multiply", {"numbers": [2]}, 1)


def numbers(chain) -> list[int]:
    return list(chain.versions.order_by("number").values_list("number", flat=True))


def test_each_change_of_the_definition_is_a_version_and_an_unchanged_save_is_not(user):
    chain = services.chain_save(name="v", steps=[ADD], user=user, source="api")
    assert numbers(chain) == [1]
    services.chain_save(chain=chain, name="v", steps=[ADD], user=user)  # nothing changed
    services.chain_save(chain=chain, name="v", steps=[ADD], enabled=False)  # not definition
    assert numbers(chain) == [1]
    services.chain_save(chain=chain, name="v", steps=[ADD, DOUBLE], user=user, source="admin")
    services.chain_save(chain=chain, name="v", steps=[ADD, DOUBLE], inputs_schema={
        "type": "number"}, source="command")
    assert numbers(chain) == [1, 2, 3]
    v2 = chain.versions.get(number=2)
    assert (v2.author, v2.source) == (user, "admin")
    assert [s["step_type"] for s in v2.definition["steps"]] == ["math.add", "math.multiply"]
    assert v2.definition["inputs_schema"] is None
    assert chain.versions.get(number=3).definition["inputs_schema"] == {"type": "number"}


def test_a_run_records_the_version_it_ran(user):
    chain = services.chain_save(name="v", steps=[ADD])
    first = services.run_create(preset=services_preset(chain), chain=chain, trigger="api",
                                version=services.current_version(chain))
    services.chain_save(chain=chain, name="v", steps=[ADD, DOUBLE])
    again = services.run_again(run=first)
    assert (first.version.number, again.version.number) == (1, 1)  # the same steps
    assert services.current_version(chain).number == 2


def services_preset(chain):
    return Preset(specs=services.chain_step_specs(chain), inputs=0)


def test_a_diff_names_each_change_and_aligns_steps_by_position():
    chain = services.chain_save(name="v", steps=[ADD])
    services.chain_save(chain=chain, name="v", description="now doubles",
                        steps=[StepSpec("math.add", {"numbers": [5]}, 0), DOUBLE])
    old, new = (chain.versions.get(number=n).definition for n in (1, 2))
    diff = services.version_diff(old, new)
    assert [(d["where"], d["change"]) for d in diff] == [
        ("description", "changed"), ("step 1 params", "changed"), ("step 2", "added")]
    assert diff[1]["old"] == {"numbers": [1]} and diff[1]["new"] == {"numbers": [5]}
    back = services.version_diff(new, old)
    assert back[-1]["change"] == "removed" and back[-1]["old"]["step_type"] == "math.multiply"


def test_restoring_a_version_writes_a_new_one_with_its_definition(user):
    chain = services.chain_save(name="v", steps=[ADD])
    services.chain_save(chain=chain, name="v", steps=[ADD, DOUBLE])
    services.version_restore(version=chain.versions.get(number=1), user=user)
    assert numbers(chain) == [1, 2, 3]
    latest = chain.versions.get(number=3)
    assert (latest.source, latest.author) == ("restore", user)
    assert latest.definition == chain.versions.get(number=1).definition
    assert [s.step_type for s in chain.steps.all()] == ["math.add"]


def test_purge_keeps_versions_runs_refer_to_and_each_chains_current_one():
    chain = services.chain_save(name="v", steps=[ADD])
    run = services.run_create(preset=services_preset(chain), chain=chain, trigger="api",
                              version=services.current_version(chain))
    services.chain_save(chain=chain, name="v", steps=[ADD, DOUBLE])
    services.chain_save(chain=chain, name="v", steps=[DOUBLE])
    later = timezone.now() + timedelta(days=1)
    assert services.versions_purge(older_than=later) == 1  # version 2: no run, not current
    assert numbers(chain) == [1, 3]
    Run.objects.filter(id=run.id).delete()
    assert services.versions_purge(older_than=later) == 1
    assert numbers(chain) == [3]


def test_exports_carry_the_version_number_and_imports_accept_it():
    chain = services.chain_save(name="v", steps=[ADD])
    services.chain_save(chain=chain, name="v", steps=[ADD, DOUBLE])
    data = selectors.chains_export(["v"])
    assert data["chains"][0]["version"] == 2
    data["chains"][0]["name"] = "w"
    (imported,) = services.chains_import(data=data)
    assert numbers(imported) == [1]
    assert ChainVersion.objects.get(chain=imported).source == "import"


def test_purge_removes_the_versions_of_a_deleted_chain_no_run_refers_to():
    chain = services.chain_save(name="v", steps=[ADD])
    run = services.run_create(preset=services_preset(chain), chain=chain, trigger="api",
                              version=services.current_version(chain))
    services.chain_save(chain=chain, name="v", steps=[ADD, DOUBLE])
    services.chain_delete(chain=chain)
    later = timezone.now() + timedelta(days=1)
    assert services.versions_purge(older_than=later) == 1  # version 2: no run refers to it
    assert list(ChainVersion.objects.values_list("chain", "number")) == [(None, 1)]
    Run.objects.filter(id=run.id).delete()
    assert services.versions_purge(older_than=later) == 1
    assert not ChainVersion.objects.exists()


def test_a_retry_that_takes_the_fixed_params_records_the_current_version():
    chain = services.chain_save(name="v", steps=[StepSpec("math.divide", {"numbers": [0]}, 0)])
    run = services.run_start(chain=chain, inputs=1)
    services.run_end(run.id, "FAILED", error="division by zero")
    services.chain_save(chain=chain, name="v", steps=[StepSpec("math.divide", {"numbers": [2]},
                                                               0)])
    retried = services.run_retry(run=Run.objects.get(id=run.id))
    assert retried.version.number == 2
