"""What a running step knows and may do: where it runs (`run_id`, `step_index`, `attempt`),
a key for external side effects that stays the same across redeliveries and retries
(`idempotency_key`), paths in the data directory with the io steps' refusals (`data_path`),
progress shown live (`progress`) and a log kept with the step (`log`)."""
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from chains.steps.base import StepFailed
from chains.steps.files import open_output, readable, writable

LOG_CUT_MARKER = "\n… (log cut: over {limit} bytes)\n"


def _no_progress(fraction: float, message: str) -> None:
    """Outside a worker (a unit test, a benchmark) progress goes nowhere."""


@dataclass(frozen=True)
class StepContext:
    """What a running step knows about where it runs."""

    run_id: str
    step_index: int
    # Whether this run may read the output folder of the run with this id (its owner's runs,
    # or any run when this run's owner is staff or an operator): see chains.steps.files.
    may_read_run: Callable[[str], bool] = field(default=lambda run_id: False, compare=False)
    attempt: int = 1  # 1 for the step's first start, 2 after a retry or a redelivery, ...
    report_progress: Callable[[float, str], None] = field(default=_no_progress, compare=False)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("chains.step"),
                                compare=False)

    @property
    def idempotency_key(self) -> str:
        """The same for every delivery and retry of this step of this run: give it to an
        external service so that a repeated call does its work once."""
        return f"{self.run_id}:{self.step_index}"

    @property
    def data_dir(self) -> Path:
        return Path(settings.CHAINS_DATA_DIR).resolve()

    @property
    def output_dir(self) -> Path:
        """runs/<run id>/ in the data directory: where this run's steps write."""
        return self.data_dir / "runs" / self.run_id

    def output_path(self, filename: str) -> Path:
        """A fresh file under runs/<run id>/ in the data directory for this step's output."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        return self.output_dir / f"step{self.step_index + 1}-{filename}"

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.data_dir))

    def data_path(self, relative: str, *, write: bool = False) -> Path:
        """`relative` inside the data directory, refused as the io steps refuse it (outside
        the directory, another user's run folder; for `write`, outside this run's folder and
        the writable areas): a StepFailed that says why. Write through `open_output` so the
        bytes count against the run's CHAINS_MAX_RUN_WRITE_BYTES."""
        return writable(self, relative) if write else readable(self, relative)

    def open_output(self, path: Path) -> BinaryIO:
        """`path` (from `data_path(..., write=True)` or `output_path`) opened for writing,
        counted against the run's write budget."""
        return open_output(self, path)

    def progress(self, fraction: float, message: str = "") -> None:
        """How far the step is (0 to 1), and what it is doing: shown live on the run page,
        in the API and by `run_chain --wait`."""
        if not isinstance(fraction, int | float) or not math.isfinite(fraction):
            raise StepFailed(f"progress must be a number from 0 to 1, not {fraction!r}")
        self.report_progress(min(max(float(fraction), 0.0), 1.0), str(message)[:200])


class StepLog(logging.Handler):
    """Keeps a step's log records as text, up to `limit` bytes, then a marker that says the
    rest was cut."""

    def __init__(self, *, limit: int | None = None) -> None:
        super().__init__(level=logging.DEBUG)
        self.limit = limit or settings.CHAINS_MAX_STEP_LOG_BYTES
        self.parts: list[str] = []
        self.size = 0
        self.cut = False
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if self.cut:
            return
        line = self.format(record) + "\n"
        size = len(line.encode())
        if self.size + size > self.limit:
            self.cut = True
            self.parts.append(LOG_CUT_MARKER.format(limit=self.limit))
            return
        self.parts.append(line)
        self.size += size

    @property
    def text(self) -> str:
        return "".join(self.parts)
