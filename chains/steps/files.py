"""What a running step may read and write in the data directory. Reads: anything, except the
output folders of other users' runs (runs/<run id>/). Writes: the run's own output folder, or
a writable area an operator configured (CHAINS_WRITABLE_DIRS); each run writes at most
CHAINS_MAX_RUN_WRITE_BYTES."""
import io
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from chains.steps.base import StepContext, StepFailed
from chains.steps.paths import data_dir, data_file_for_step

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


def _bytes_in(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


class _Budgeted(io.RawIOBase):
    """A file opened for writing that fails the step once the run has written its limit."""

    def __init__(self, path: Path, allowance: int):
        self._file = path.open("wb")
        self._path = path
        self._left = allowance

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        size = len(data)
        if size > self._left:
            self._file.close()
            self._path.unlink(missing_ok=True)
            raise StepFailed(
                f"the run would write more than {settings.CHAINS_MAX_RUN_WRITE_BYTES} bytes "
                "(CHAINS_MAX_RUN_WRITE_BYTES)")
        self._left -= size
        return self._file.write(data)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        super().close()


def open_output(context: StepContext, path: Path) -> BinaryIO:
    """`path` opened for writing in binary; what the run wrote before counts against its
    CHAINS_MAX_RUN_WRITE_BYTES."""
    used = _bytes_in(context.output_dir)
    if path.is_relative_to(context.output_dir) and path.exists():
        used -= path.stat().st_size  # rewritten, not added to
    return io.BufferedWriter(_Budgeted(path, settings.CHAINS_MAX_RUN_WRITE_BYTES - used))
