"""Management commands, without a worker."""
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
    assert capsys.readouterr().out.count("started (1 steps)") == 2


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
