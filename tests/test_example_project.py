"""Task Chain as an app in a project of its own (tests/example_project), run for real: its
own settings, URLs and Celery app, a worker and a web server in their own processes, and an
app `shop` whose step types mix with the built-in ones. Nothing of config/ is used."""
import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.services import ROOT, CeleryWorker, free_port, stop, wait_for_port

pytestmark = [pytest.mark.flow]

SETTINGS = "tests.example_project.settings"


def _env(tmp_path, broker: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "CHAINS_", "DATABASE_URL", "REDIS_URL"))}
    return {**env, "DJANGO_SETTINGS_MODULE": SETTINGS, "EXAMPLE_DIR": str(tmp_path),
            "EXAMPLE_BROKER_URL": broker, **extra}


def manage(env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "django", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=check)


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def call(self, method: str, path: str, body=None):
        request = urllib.request.Request(
            self.base + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def wait_for_run(self, run_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status, run = self.call("GET", f"/api/runs/{run_id}/")
            if run["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                return run
            assert time.monotonic() < deadline, run
            time.sleep(0.2)


@pytest.fixture(scope="module")
def project(tmp_path_factory, broker):
    """The example project migrated, with a user and a token, a worker on its queues and its
    web server."""
    tmp_path = tmp_path_factory.mktemp("example")
    env = _env(tmp_path, broker)
    manage(env, "migrate", "-v0")
    manage(env, "shell", "-c", "from django.contrib.auth.models import User; "
           "User.objects.create_superuser('shopkeeper', 'shop@example.com', 'pw-shop')")
    token = manage(env, "drf_create_token", "shopkeeper").stdout.split()[2]
    worker = CeleryWorker(env=env, log_path=tmp_path / "worker.log", name="shop",
                          app="tests.example_project", queues="celery,math,data,io,shop")
    port = free_port()
    web_log = (tmp_path / "web.log").open("wb")
    web = subprocess.Popen([sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}",
                            "--noreload"], cwd=ROOT, env=env, stdout=web_log,
                           stderr=subprocess.STDOUT)
    try:
        worker.wait_ready()
        wait_for_port(port, timeout=30)
        yield env, Api(f"http://127.0.0.1:{port}", token), worker
    finally:
        stop(web)
        web_log.close()
        worker.stop()


CHAIN = {"name": "checkout", "steps": [
    {"step_type": "math.add", "params": {"numbers": [10, 5]}},
    {"step_type": "shop.price", "stage": 1, "params": {
        "rounding": "up", "discount": {"percent": 10, "code": "WINTER"}, "extras": [2.5]}},
    {"step_type": "shop.invoice", "stage": 2, "params": {"customer": "acme", "lines": [1]}},
]}


def test_a_chain_of_built_in_and_shop_steps_runs_on_the_projects_worker(project):
    env, api, worker = project
    status, types = api.call("GET", "/api/step-types/")
    assert status == 200
    keys = [row["key"] for row in types]
    assert {"math.add", "shop.price", "shop.invoice"} <= set(keys)
    assert api.call("POST", "/api/chains/", {**CHAIN, "name": "typo", "steps": [
        {"step_type": "shop.price", "params": {"rounding": "sideways"}}]}) == (400, {
            "steps.0.params.rounding": ["Input should be 'up' or 'down'"]})

    status, chain = api.call("POST", "/api/chains/", CHAIN)
    assert status == 201, chain
    status, run = api.call("POST", f"/api/chains/{chain['id']}/run/", {"inputs": 0})
    assert status == 201, run
    run = api.wait_for_run(run["id"])
    # 0 + 10 + 5 = 15; + 2.5 = 17.5; -10 % = 15.75; up: 16; invoice: 16 + 1.
    assert (run["status"], run["result"]) == ("COMPLETED", {"customer": "acme", "total": 17.0})
    priced = run["steps"][1]
    assert priced["progress"] == 0.75 and priced["progress_message"] == "discounting"
    assert priced["worker"].startswith("shop-")  # the project's worker ran it
    status, log = api.call("GET", f"/api/runs/{run['id']}/steps/1/log/")
    lines = log["log"].splitlines()
    assert lines[0].endswith("INFO extras [2.5] make 17.5")
    assert lines[1].endswith("INFO discount 10.0% (WINTER) makes 15.75")

    # The same chain from the command line: the bare run id, then the result.
    done = manage(env, "run_chain", "checkout", "--input", "1", "--wait", "--timeout", "60")
    run_id, result = done.stdout.splitlines()
    assert json.loads(result) == {"customer": "acme", "total": 18.0}  # 16+2.5 -10% up: 17 +1
    assert api.call("GET", f"/api/runs/{run_id}/")[1]["status"] == "COMPLETED"


def test_chains_with_shop_steps_export_and_import_as_they_were(project, tmp_path):
    env, api, _ = project
    status, chain = api.call("POST", "/api/chains/", {**CHAIN, "name": "exported"})
    assert status == 201, chain
    first = manage(env, "export_chains", "exported").stdout
    (tmp_path / "chains.json").write_text(first)
    assert api.call("DELETE", f"/api/chains/{chain['id']}/")[0] == 204
    assert "imported 1 chain(s): exported" in manage(
        env, "import_chains", str(tmp_path / "chains.json")).stdout
    assert manage(env, "export_chains", "exported").stdout == first
    steps = json.loads(first)["chains"][0]["steps"]
    assert [s["step_type"] for s in steps] == ["math.add", "shop.price", "shop.invoice"]
    assert steps[1]["params"]["discount"] == {"percent": 10.0, "code": "WINTER"}


@pytest.mark.parametrize(("app", "module", "message"), [
    ("duplicate", "steps", "step type 'math.add' is already declared by "
                           "chains.steps.math.math_add"),
    ("malformed", "steps", "step type 'Shop Double' is not a valid key"),
    ("not_pydantic", "steps", "step type 'shop.plain' has params <class"),
    ("not_json", "steps", "step type 'shop.locked' has a default for 'lock' that is not JSON"),
])
def test_a_bad_step_declaration_stops_the_process_at_startup(tmp_path, app, module, message):
    env = _env(tmp_path, "redis://127.0.0.1:1/0",
               EXAMPLE_BROKEN_APP=f"tests.example_project.broken.{app}")
    result = manage(env, "check", check=False)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("django.core.exceptions.ImproperlyConfigured: "
                            f"tests.example_project.broken.{app}.{module}: ")
    assert message in error


@pytest.mark.browser
def test_the_builder_offers_the_shop_steps_with_their_forms(project, monkeypatch):
    playwright = pytest.importorskip("playwright.sync_api")
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.skip("Chromium is not installed")
    _, api, _ = project
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(20_000)
        page.goto(f"{api.base}/admin/login/")
        page.fill("#id_username", "shopkeeper")
        page.fill("#id_password", "pw-shop")
        page.click("input[type=submit]")
        page.goto(f"{api.base}/admin/chains/chain/add/")
        page.click(".tc-steps .add-row a")
        picker = page.locator("#id_steps-0-step_type")
        families = picker.locator("optgroup").evaluate_all("groups => groups.map(g => g.label)")
        assert families == ["math", "data", "io", "flow", "shop"]
        picker.select_option("shop.price")
        form = page.locator("#steps-0 [data-django-jsonform-container]")
        form.get_by_text("Price the previous amount").wait_for()
        # The enum is a choice, the nested model a sub-form, the list a list.
        assert form.locator("select").first.evaluate(
            "s => Array.from(s.options).map(o => o.value).filter(Boolean)") == ["up", "down"]
        assert form.get_by_text("percent", exact=False).count() >= 1
        assert form.get_by_text("extras", exact=False).count() >= 1
        page.screenshot(path=str(ROOT / "tests" / "artifacts" / "example-shop-step.png"),
                        full_page=True)
        browser.close()
