"""Management commands, without a worker."""
from uuid import uuid4

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from chains import services
from chains.models import Run
from chains.presets import StepSpec

pytestmark = pytest.mark.django_db


def test_ensure_admin_creates_one_account_with_a_generated_password(capsys):
    call_command("ensure_admin")
    out = capsys.readouterr().out
    password = out.split("password: ")[1].split()[0]
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.check_password(password)
    assert len(password) >= 16
    call_command("ensure_admin")
    again = capsys.readouterr().out
    assert "password" not in again
    assert get_user_model().objects.count() == 1


def test_run_chain_starts_a_run_by_name_or_id(capsys):
    chain = services.chain_save(name="c", steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    call_command("run_chain", "c", "--input", "[1, 2]")
    call_command("run_chain", str(chain.pk))
    runs = list(Run.objects.order_by("created_at"))
    assert [r.inputs for r in runs] == [[1, 2], {}]
    assert {r.trigger for r in runs} == {"command"}
    # stdout is the bare run id, one a line, for scripts: RUN=$(manage.py run_chain c)
    assert capsys.readouterr().out.splitlines() == [str(run.id) for run in runs]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no chain named or numbered 'nope'"),
        (["c", "--input", "{bad"], "--input is not JSON"),
    ],
)
def test_run_chain_errors(args, message):
    services.chain_save(name="c", steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    with pytest.raises(CommandError, match=message):
        call_command("run_chain", *args)
    assert not Run.objects.exists()


def test_drf_create_token_gives_a_working_token(capsys, user):
    from rest_framework.test import APIClient

    call_command("drf_create_token", user.username)
    token = capsys.readouterr().out.split()[2]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/tasks/statistics").status_code == 200


def _finished_runs(n: int, status: str = "COMPLETED"):
    from django_celery_results.models import TaskResult

    from chains.models import StepRun

    chain = services.chain_save(name=f"c-{status}-{uuid4().hex[:6]}",
                                steps=[StepSpec("math.add", {"numbers": [1]}, 0)])
    runs = []
    for _ in range(n):
        run = services.run_start(chain=chain)
        if status == "COMPLETED":
            services.run_finish(run_id=run.id, result=1)
        else:
            services.step_fail(step_run_id=run.step_runs.get().id, error="x")
        TaskResult.objects.create(task_id=StepRun.objects.get(run=run).task_id, status="SUCCESS")
        runs.append(run)
    return chain, runs


def test_list_runs_and_chain_stats(capsys):
    import json

    chain, runs = _finished_runs(3)
    call_command("list_runs", "--json", "--limit", "2", "--chain", chain.name)
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [str(runs[2].id), str(runs[1].id)]
    call_command("list_runs", "--status", "FAILED")
    assert capsys.readouterr().out == "no runs\n"
    call_command("list_runs", "--limit", "1")
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "STATUS", "STEPS", "CHAIN", "OR", "TASK", "TYPE", "CREATED"]
    assert row.startswith(f"{runs[2].id}  COMPLETED")
    with pytest.raises(CommandError, match="no chain named"):
        call_command("list_runs", "--chain", "nope")
    call_command("chain_stats", "--json")
    stats = json.loads(capsys.readouterr().out)
    assert stats["runs"]["completed"] == 3
    assert stats["chains"][0]["chain"] == chain.name and stats["chains"][0]["success_rate"] == 1


def test_export_import_export_is_identical(capsys, tmp_path):
    import json

    from chains.models import Chain, ChainSchedule

    chain = services.chain_save(name="exported", description="d", default_inputs=[1],
                                steps=[StepSpec("math.add", {"numbers": [1, 2.5]}, 0, name="x"),
                                       StepSpec("io.stat", {"path": "f"}, 1, time_limit=9)])
    ChainSchedule.objects.create(chain=chain, kind="crontab", minute="5", hour="2",
                                 timezone="Europe/Berlin", inputs=[1])
    call_command("export_chains")
    first = capsys.readouterr().out
    path = tmp_path / "chains.json"
    path.write_text(first)
    Chain.objects.all().delete()
    call_command("import_chains", str(path))
    assert "imported 1 chain(s): exported" in capsys.readouterr().out
    call_command("export_chains")
    assert capsys.readouterr().out == first
    assert json.loads(first)["chains"][0]["steps"][1]["time_limit"] == 9


def test_import_is_all_or_nothing(tmp_path):
    from chains.models import Chain

    data = {"version": 1, "chains": [
        {"name": "good", "steps": [{"step_type": "math.add", "params": {}, "stage": 0}]},
        {"name": "bad", "steps": [{"step_type": "celery.map", "params": {}, "stage": 0}]},
    ]}
    path = tmp_path / "bad.json"
    path.write_text(__import__("json").dumps(data))
    with pytest.raises(CommandError, match="chains.1.steps.0.step_type"):
        call_command("import_chains", str(path))
    assert not Chain.objects.exists()
    path.write_text("{nope")
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_chains", str(path))


def test_purge_runs_leaves_no_orphans(capsys):
    from datetime import timedelta

    from django.utils import timezone
    from django_celery_results.models import TaskResult

    from chains.models import Run, StepRun

    _, old = _finished_runs(5)
    _, failed = _finished_runs(2, status="FAILED")
    Run.objects.update(created_at=timezone.now() - timedelta(days=10))
    _, recent = _finished_runs(1)
    call_command("purge_runs", "--older-than", "7", "--status", "COMPLETED", "--chunk", "2")
    assert "deleted 5 run(s)" in capsys.readouterr().out
    assert set(Run.objects.values_list("id", flat=True)) == {r.id for r in failed + recent}
    remaining_tasks = set(StepRun.objects.values_list("task_id", flat=True))
    assert set(TaskResult.objects.values_list("task_id", flat=True)) == remaining_tasks
    call_command("purge_runs", "--older-than", "7")
    assert Run.objects.count() == 1


def test_purge_runs_removes_the_folders_of_purged_runs(settings, tmp_path):
    from datetime import timedelta

    from django.utils import timezone

    from chains.models import Run

    settings.CHAINS_DATA_DIR = str(tmp_path)
    _, old = _finished_runs(2)
    Run.objects.update(created_at=timezone.now() - timedelta(days=10))
    _, recent = _finished_runs(1)
    folders = [tmp_path / "runs" / str(run.id) for run in (old[0], recent[0])]
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "out.csv").write_text("a\n")
    call_command("purge_runs", "--older-than", "7")
    assert [folder.exists() for folder in folders] == [False, True]


@pytest.mark.broker
@pytest.mark.usefixtures("broker")
def test_cluster_status_without_workers_exits_1():
    with pytest.raises(CommandError, match="no worker answered") as info:
        call_command("cluster_status", "--timeout", "0.3")
    assert info.value.returncode == 1


@pytest.mark.parametrize(("chain", "field"), [
    ({"name": "a", "steps": [{"step_type": "math.add", "params": {}, "stage": 0,
                              "max_retries": 11}]}, "chains.0.steps.0.max_retries"),
    ({"name": "a", "steps": [{"step_type": "math.add", "params": {}, "stage": 0}],
      "schedules": [{"kind": "interval", "every_seconds": 5, "nope": 1}]},
     "chains.0.schedules.0"),
])
def test_import_errors_name_the_field(tmp_path, chain, field):
    import json

    from chains.models import Chain

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"version": 1, "chains": [chain]}))
    with pytest.raises(CommandError, match=field.replace(".", r"\.")):
        call_command("import_chains", str(path))
    assert not Chain.objects.exists()
