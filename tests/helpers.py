"""Small helpers shared by tests."""
import time

from chains.models import Run


def wait_for_run(run_id, *, timeout: float = 30) -> Run:
    """Poll the database until the run is finished; fail the test if it is not in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.get(id=run_id)
        if run.is_finished:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout}s")


def write_csv(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
