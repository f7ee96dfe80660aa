"""What a running step may read and write in the data directory. Reads: anything, except the
output folders of other users' runs (runs/<run id>/). Writes: the run's own output folder, or
a writable area an operator configured (CHAINS_WRITABLE_DIRS); each run writes at most
CHAINS_MAX_RUN_WRITE_BYTES, wherever it writes."""
from __future__ import annotations

import fcntl
import io
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from django.conf import settings

from chains.steps.base import StepFailed
from chains.steps.paths import data_dir, data_file_for_step

if TYPE_CHECKING:
    from chains.steps.context import StepContext

RUNS_DIR = "runs"


def _run_folder_of(path: Path) -> str | None:
    """The name of the run folder under runs/ that holds `path`, if any."""
    runs = data_dir() / RUNS_DIR
    if path == runs or not path.is_relative_to(runs):
        return None
    return path.relative_to(runs).parts[0]


def readable(context: StepContext, value: str) -> Path:
    """The existing file `value` names, if this run may read it."""
    path = data_file_for_step(value)
    owner_run = _run_folder_of(path)
    if owner_run is not None and owner_run != context.run_id and not context.may_read_run(
        owner_run
    ):
        raise StepFailed(f"path {value!r} is in the output folder of a run that is not yours")
    return path


def writable_areas() -> list[Path]:
    return [(data_dir() / area).resolve() for area in settings.CHAINS_WRITABLE_DIRS]


def writable(context: StepContext, value: str) -> Path:
    """Where `value` may be written: inside this run's output folder or a writable area."""
    path = data_file_for_step(value, must_exist=False)
    own = context.output_dir.resolve()
    if not any(path.is_relative_to(area) for area in [own, *writable_areas()]):
        raise StepFailed(
            f"path {value!r} is outside this run's output folder ({RUNS_DIR}/{context.run_id}/) "
            f"and the writable areas ({', '.join(settings.CHAINS_WRITABLE_DIRS) or 'none'}; "
            "CHAINS_WRITABLE_DIRS)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def destination_problem(value: str) -> str | None:
    """When a chain is saved: a destination must lie in a writable area (a run's own folder
    is its default, and its name is not known before the run)."""
    areas = settings.CHAINS_WRITABLE_DIRS
    parts = Path(value).parts
    if not any(parts[: len(Path(area).parts)] == Path(area).parts for area in areas):
        return ("must be inside a writable area (CHAINS_WRITABLE_DIRS: "
                f"{', '.join(areas) or 'none is configured'}); leave it out to write into the "
                f"run's own folder {RUNS_DIR}/<run id>/")
    return None


class RunWriteBudget:
    """What a run has written, counted in runs/<run id>/.bytes-written under a file lock: every
    step of the run (parallel ones too) and every destination count against one
    CHAINS_MAX_RUN_WRITE_BYTES. Steps reserve a block at a time and give back what they did
    not use."""

    FILE = ".bytes-written"
    BLOCK = 1 << 20

    def __init__(self, context: StepContext):
        context.output_dir.mkdir(parents=True, exist_ok=True)
        self.path = context.output_dir / self.FILE

    def _change(self, decide) -> int:
        with self.path.open("a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            used = int(handle.read() or 0)
            delta = decide(used)
            handle.seek(0)
            handle.truncate()
            handle.write(str(max(0, used + delta)).encode())
            return delta

    def reserve(self, needed: int) -> int:
        """A block of at least `needed` bytes (0 when the run may not write that much)."""
        limit = settings.CHAINS_MAX_RUN_WRITE_BYTES
        return self._change(
            lambda used: min(max(needed, self.BLOCK), limit - used)
            if limit - used >= needed else 0)

    def release(self, unused: int) -> None:
        if unused:
            self._change(lambda used: -unused)


class _Budgeted(io.RawIOBase):
    """A file opened for writing that fails the step once its run has written its limit."""

    def __init__(self, path: Path, budget: RunWriteBudget):
        self._file = path.open("wb")
        self._path = path
        self._budget = budget
        self._allowance = 0
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        size = len(data)
        if size > self._allowance:
            granted = self._budget.reserve(size - self._allowance)
            if not granted:
                self._fail()
            self._allowance += granted
        self._allowance -= size
        self._written += size
        return self._file.write(data)

    def _fail(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)  # what it wrote is gone, and given back
        self._budget.release(self._written + self._allowance)
        self._written = self._allowance = 0
        raise StepFailed(
            f"the run would write more than {settings.CHAINS_MAX_RUN_WRITE_BYTES} bytes "
            "(CHAINS_MAX_RUN_WRITE_BYTES)")

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            self._budget.release(self._allowance)
            self._allowance = 0
        super().close()


def open_output(context: StepContext, path: Path) -> BinaryIO:
    """`path` opened for writing in binary, counted against its run's write budget."""
    return io.BufferedWriter(_Budgeted(path, RunWriteBudget(context)))
