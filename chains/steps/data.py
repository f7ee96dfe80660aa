"""CSV steps. Rows stream from file to file; steps pass a file reference, never the data."""
import csv
import hashlib
import io
import math
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import islice, repeat
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings
from pydantic import Field

from chains.steps.base import Params, StepFailed
from chains.steps.context import StepContext
from chains.steps.files import open_output, readable
from chains.steps.paths import DataPath, data_file_for_step
from chains.steps.registry import step

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
MAX_NUMBER_CHARS = 64
# The steps read (with pyarrow, chains.steps.arrow_csv) this many bytes at a time, so their
# memory is bounded by this, not by the file (1 MiB: smaller blocks cost more calls, larger ones
# gained nothing). Their fallback on read_rows takes ROWS_PER_BLOCK rows at a time.
BLOCK_BYTES = 1 << 20
ROWS_PER_BLOCK = 4096


class LoadParams(Params):
    path: DataPath = Field(description="A CSV file relative to the data directory.")


class FileRefParams(Params):
    path: DataPath | None = Field(
        None, description="A CSV file to read; by default the file the previous step produced."
    )


def parse_number(cell: str) -> float | None:
    """A finite number, or None for anything else (text, blanks, nan, inf)."""
    if not cell or len(cell) > MAX_NUMBER_CHARS:
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def format_cell(value: Any) -> str:
    """Numbers as plain numbers; text that a spreadsheet would run as a formula is escaped."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    text = str(value)
    # A spreadsheet skips leading blanks before a formula, so they do not hide one; a tab or
    # carriage return is itself a formula prefix in some.
    stripped = text.lstrip(" ")
    if stripped.startswith(FORMULA_PREFIXES) and parse_number(stripped.strip()) is None:
        return "'" + text
    return text


def _input_file(params: FileRefParams, previous: Any, context: StepContext) -> str:
    """The file to read (the `path` param, or the file the previous step produced), once this
    run is known to be allowed to read it."""
    if params.path:
        relative = params.path
    elif isinstance(previous, dict) and isinstance(previous.get("file"), str):
        relative = previous["file"]
    else:
        raise StepFailed("needs a 'path' param or a previous step that produced a file")
    readable(context, relative)
    return relative


def _failure(relative: str, handle: TextIO, reader: Any, exc: Exception) -> StepFailed:
    handle.close()
    if isinstance(exc, UnicodeDecodeError):
        return StepFailed(f"file {relative!r} is not UTF-8 text")
    return StepFailed(f"file {relative!r} line {reader.line_num}: {exc}")


def _open_csv(relative: str) -> tuple[TextIO, Any, list[str]]:
    """A bounded, UTF-8 CSV file in the data directory: the open file, its reader and header."""
    path = data_file_for_step(relative)
    size = path.stat().st_size
    if size > settings.CHAINS_MAX_FILE_BYTES:
        raise StepFailed(f"file {relative!r} is {size} bytes, over the limit")
    csv.field_size_limit(settings.CHAINS_MAX_CSV_FIELD_BYTES)
    handle = path.open(newline="", encoding="utf-8")
    reader = csv.reader(handle, strict=True)
    try:
        header = [cell.strip() for cell in next(reader)]
    except StopIteration:
        handle.close()
        raise StepFailed(f"file {relative!r} is empty") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise _failure(relative, handle, reader, exc) from exc
    if len(header) > settings.CHAINS_MAX_CSV_COLUMNS:
        handle.close()
        raise StepFailed(f"file {relative!r} has {len(header)} columns, over the limit")
    return handle, reader, header


def read_rows(relative: str) -> tuple[list[str], Iterator[list[str]]]:
    """The header and a stream of rows of a bounded, UTF-8 CSV file in the data directory."""
    handle, reader, header = _open_csv(relative)

    def rows() -> Iterator[list[str]]:
        with handle:
            try:
                for row in reader:
                    if any("\x00" in cell for cell in row):
                        raise StepFailed(
                            f"file {relative!r} line {reader.line_num} contains a NUL byte"
                        )
                    if len(row) > len(header):
                        raise StepFailed(
                            f"file {relative!r} line {reader.line_num} has {len(row)} fields, "
                            f"the header has {len(header)}"
                        )
                    yield row + [""] * (len(header) - len(row))
            except (csv.Error, UnicodeDecodeError) as exc:
                raise _failure(relative, handle, reader, exc) from exc

    return header, rows()


def _write(context: StepContext, path: Path, header: list[str],
           rows: Iterator[list[Any]]) -> int:
    count = 0
    with io.TextIOWrapper(open_output(context, path), encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([format_cell(cell) for cell in header])
        for row in rows:
            writer.writerow([format_cell(cell) for cell in row])
            count += 1
    return count


def _file_ref(context: StepContext, path: Path, header: list[str], rows: int) -> dict:
    return {"file": context.relative(path), "rows": rows, "columns": header}


def load_csv(params: LoadParams, previous: Any, context: StepContext) -> dict:
    readable(context, params.path)
    header, rows = read_rows(params.path)
    count = sum(1 for _ in rows)
    return {"file": params.path, "rows": count, "columns": header}


def _arrow_blocks(relative: str) -> tuple[list[str], Iterator[tuple[list, bool]]]:
    """The header of a bounded, UTF-8 CSV file in the data directory, and its blocks of rows
    read by pyarrow (a string array per column, and whether the block is plain: see
    arrow_csv.blocks). arrow_csv.Irregular, now or while reading: read_rows must read the file
    (it words the error, if it is one)."""
    from chains.steps import arrow_csv

    handle, _, header = _open_csv(relative)
    handle.close()
    raw = arrow_csv.open_blocks(relative, header)

    def blocks() -> Iterator[tuple[list, bool]]:
        with raw:
            yield from arrow_csv.blocks(raw, len(header), BLOCK_BYTES, csv.field_size_limit())

    return header, blocks()


def _read_through(relative: str) -> None:
    """Read the whole file with read_rows, which raises the StepFailed that words what is
    wrong with it."""
    _, rows = read_rows(relative)
    for _ in rows:
        pass


def _header_line(header: list[str]) -> bytes:
    text = io.StringIO()
    csv.writer(text).writerow([format_cell(cell) for cell in header])
    return text.getvalue().encode()


def clean_csv(params: FileRefParams, previous: Any, context: StepContext) -> dict:
    """Strip cells, drop blank and duplicate rows, write numbers as numbers."""
    from chains.steps import arrow_csv

    source = _input_file(params, previous, context)
    try:
        return _clean_blocks(source, context)
    except arrow_csv.Irregular:
        # An error (read_rows words it), or a file only read_rows reads right: it is one when
        # its header is not, so nothing was written yet.
        _read_through(source)
        return _clean_rows(source, context)


def _clean_blocks(source: str, context: StepContext) -> dict:
    from chains.steps import arrow_csv

    header, blocks = _arrow_blocks(source)
    digest = partial(hashlib.blake2b, digest_size=16)

    def keep(seen: SeenRows) -> Callable[[list[bytes]], list[bool]]:
        return lambda keys: seen.add_all(list(map(methodcaller("digest"), map(digest, keys))))

    out = context.output_path("clean.csv")
    count = 0
    with SeenRows() as seen, open_output(context, out) as handle:
        handle.write(_header_line(header))
        for columns, plain in blocks:
            rows, lines = arrow_csv.clean_block(columns, plain, keep(seen))
            if lines is not None:
                handle.write(lines)
                count += rows
    return _file_ref(context, out, header, count)


def _clean_rows(source: str, context: StepContext) -> dict:
    header, rows = read_rows(source)

    def cleaned(seen: SeenRows) -> Iterator[list[Any]]:
        while block := list(islice(rows, ROWS_PER_BLOCK)):
            kept = [cells for row in block if any(cells := [cell.strip() for cell in row])]
            keys = [hashlib.blake2b("\x1f".join(cells).encode(), digest_size=16).digest()
                    for cells in kept]
            for cells, new in zip(kept, seen.add_all(keys), strict=True):
                if new:
                    yield [number if (number := parse_number(c)) is not None else c
                           for c in cells]

    out = context.output_path("clean.csv")
    with SeenRows() as seen:
        return _file_ref(context, out, header, _write(context, out, header, cleaned(seen)))


class SeenRows:
    """The rows clean has kept (their hashes), for its duplicate check, in bounded memory: a
    set up to MEMORY_ROWS hashes (about 40 MB), then, for the hashes after those, a temporary
    on-disk table with a 64 MB cache (measured: 3 million distinct rows in 47 s and 149 MB,
    against 30 s and 417 MB all in memory). The set stays: copying it to disk took as long as
    checking as many rows there."""

    MEMORY_ROWS = 500_000
    # SQLite's limit on the parameters of a statement (SQLITE_MAX_VARIABLE_NUMBER, 3.32 on).
    PARAMETERS = 32_766

    def __init__(self) -> None:
        self._memory: set[bytes] = set()
        self._disk: sqlite3.Connection | None = None
        self._folder: tempfile.TemporaryDirectory | None = None

    def add_all(self, keys: list[bytes]) -> list[bool]:
        """For each key in order: True if it is new (and now kept), False if seen before."""
        if self._disk is not None:
            return self._add_on_disk(keys)
        memory, add = self._memory, self._memory.add
        new = [key not in memory and not add(key) for key in keys]
        if len(memory) >= self.MEMORY_ROWS:
            self._open_disk()
        return new

    def _add_on_disk(self, keys: list[bytes]) -> list[bool]:
        disk = self._disk
        assert disk is not None  # add_all calls this once the set is full
        # New to the set, once each and in order (a B-tree fills fastest so); SQLite inserts
        # those it does not have and returns them.
        unseen = sorted(dict.fromkeys(keys).keys() - self._memory)
        fresh: dict[bytes, bool] = {}
        for start in range(0, len(unseen), self.PARAMETERS):
            part = unseen[start:start + self.PARAMETERS]
            fresh.update(zip(map(itemgetter(0), disk.execute(
                f"INSERT INTO seen VALUES {','.join(['(?)'] * len(part))} "
                "ON CONFLICT DO NOTHING RETURNING key", part)), repeat(True)))
        # pop gives True the first time a fresh key comes, False after and for the others.
        return list(map(fresh.pop, keys, repeat(False)))

    def _open_disk(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="taskchain-clean-")
        # No statement cache: each cached INSERT of thousands of rows kept megabytes (the
        # peak of a million distinct rows was 138 MB with it, 95 MB without).
        self._disk = sqlite3.connect(Path(self._folder.name) / "seen.sqlite3",
                                     isolation_level=None, cached_statements=0)
        self._disk.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-65536; "
            "CREATE TABLE seen (key BLOB PRIMARY KEY) WITHOUT ROWID; BEGIN")

    def __enter__(self) -> "SeenRows":
        return self

    def __exit__(self, *exc_info) -> None:
        if self._disk is not None:
            self._disk.close()
        if self._folder is not None:
            self._folder.cleanup()


def _numeric_ranges(relative: str) -> tuple[list[str], dict[int, tuple[float, float]]]:
    """Columns whose non-blank cells are all numbers, with their min and max."""
    header, rows = read_rows(relative)
    ranges: dict[int, list[float]] = {}
    text_columns: set[int] = set()
    for row in rows:
        for index, cell in enumerate(row):
            cell = cell.strip()
            if not cell or index in text_columns:
                continue
            number = parse_number(cell)
            if number is None:
                text_columns.add(index)
                ranges.pop(index, None)
                continue
            low_high = ranges.setdefault(index, [number, number])
            low_high[0] = min(low_high[0], number)
            low_high[1] = max(low_high[1], number)
    return header, {i: (lo, hi) for i, (lo, hi) in ranges.items() if i not in text_columns}


def transform_csv(params: FileRefParams, previous: Any, context: StepContext) -> dict:
    """Min-max scale every numeric column to [0, 1] (a constant column becomes 0)."""
    from chains.steps import arrow_csv

    source = _input_file(params, previous, context)
    try:
        header, blocks = _arrow_blocks(source)
        ranges = arrow_csv.numeric_ranges(blocks)
    except arrow_csv.Irregular:
        header, ranges = _numeric_ranges(source)  # or read_rows' StepFailed
        write = _transform_rows
    else:
        write = _transform_blocks
    out = context.output_path("transform.csv")
    ref = _file_ref(context, out, header, write(source, context, out, header, ranges))
    ref["scaled_columns"] = [header[i] for i in sorted(ranges)]
    return ref


def _transform_blocks(source: str, context: StepContext, out: Path, header: list[str],
                      ranges: dict[int, tuple[float, float]]) -> int:
    from chains.steps import arrow_csv

    count = 0
    try:
        _, blocks = _arrow_blocks(source)
        with open_output(context, out) as handle:
            handle.write(_header_line(header))
            for columns, plain in blocks:
                handle.write(arrow_csv.transform_block(columns, plain, ranges))
                count += len(columns[0])
    except arrow_csv.Irregular:  # it read well a moment ago
        _read_through(source)
        raise StepFailed(f"file {source!r} changed while it was read") from None
    return count


def _transform_rows(source: str, context: StepContext, out: Path, header: list[str],
                    ranges: dict[int, tuple[float, float]]) -> int:
    _, rows = read_rows(source)

    def scaled() -> Iterator[list[Any]]:
        for row in rows:
            out: list[Any] = list(row)
            for index, (low, high) in ranges.items():
                number = parse_number(row[index].strip())
                if number is not None:
                    out[index] = (number - low) / (high - low) if high > low else 0.0
            yield out

    return _write(context, out, header, scaled())


class _Column:
    """Count, mean, sum of squared deviations, min and max of a column's numbers, merged block
    by block (Chan et al.); or text, once one of its cells is not a number.

    The blocks' means and deviations are taken of the numbers less a shift, the first block's
    least number: merging blocks then rounds at the scale of the spread of the numbers, not of
    their offset (numbers around 1e9 that vary by 1 keep their standard deviation to 1e-15,
    not 1e-9)."""

    __slots__ = ("count", "mean", "m2", "low", "high", "text", "shift")

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.low, self.high = math.inf, -math.inf
        self.text = False
        self.shift: float | None = None

    def _shift_for(self, low: float) -> float:
        if self.shift is None:
            # Numbers near the largest double could overflow once shifted: those are not.
            self.shift = low if abs(low) < 2.0**1000 else 0.0
        return self.shift

    def add(self, cells: Sequence[str], *, short: bool) -> None:
        """Add a block of cells; `short` promises none is longer than MAX_NUMBER_CHARS."""
        if self.text:
            return
        values = _numbers(cells, short=short)
        if values is None:
            self.text = True
        elif values:
            self._merge(values)

    def add_numbers(self, values: Any) -> None:
        """Add a block of numbers, a pyarrow array (null for a blank)."""
        from chains.steps import arrow_csv

        summary = arrow_csv.summary(values, self._shift_for)
        if summary is None:
            return
        if math.isfinite(summary[1]) and math.isfinite(summary[2]):
            self._combine(*summary)
        else:  # values so large that their sum overflows: as read_rows' path adds them
            self._merge(values.drop_null().to_pylist())

    def _merge(self, values: list[float]) -> None:
        count = len(values)
        low, high = min(values), max(values)
        shift = self._shift_for(low)
        shifted = [value - shift for value in values] if shift else values
        mean = _mean(shifted)
        # Two passes over the block: its mean, then the distance of its values from that mean
        # (squared by multiplying, which overflows to inf rather than raising).
        distance = math.dist(shifted, [mean] * count)
        self._combine(count, mean, distance * distance, low, high)

    def _combine(self, count: int, mean: float, m2: float, low: float, high: float) -> None:
        """Merge a block's count, mean, sum of squared deviations, min and max (Chan et al.)."""
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total
        self.low, self.high = min(self.low, low), max(self.high, high)

    def as_dict(self) -> dict:
        std = math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else None
        return {"count": self.count, "mean": self.mean + (self.shift or 0.0), "min": self.low,
                "max": self.high, "std": std}


def _numbers(cells: Sequence[str], *, short: bool) -> list[float] | None:
    """The numbers of the non-blank cells (parse_number for each, stripped), or None when one
    is not a finite number. Each case runs as whole-list operations, not a loop per cell."""
    try:
        # float() ignores the whitespace that parse_number's caller strips, and fails on a
        # blank that is not empty.
        values = list(map(float, filter(None, cells)))
        if not short and max(map(len, cells)) > MAX_NUMBER_CHARS:
            raise ValueError
    except ValueError:
        cells = list(filter(None, map(str.strip, cells)))
        if cells and max(map(len, cells)) > MAX_NUMBER_CHARS:
            return None
        try:
            values = list(map(float, cells))
        except ValueError:
            return None
    # A non-finite sum is rare: either a nan or inf cell, or finite values that overflow.
    if not math.isfinite(sum(values)) and not all(map(math.isfinite, values)):
        return None
    return values


def _mean(values: list[float]) -> float:
    try:
        return math.fsum(values) / len(values)
    except OverflowError:
        return math.fsum(value / len(values) for value in values)


def _analyze_blocks(relative: str) -> tuple[list[str], int, list[_Column]]:
    from chains.steps import arrow_csv

    header, blocks = _arrow_blocks(relative)
    columns = [_Column() for _ in header]
    count = 0
    for block, _ in blocks:
        count += len(block[0])
        for column, cells in zip(columns, block, strict=True):
            if not column.text:
                values, text = arrow_csv.numbers(cells)
                column.text = text
                if not text:
                    column.add_numbers(values)
    return header, count, columns


def _analyze_rows(relative: str) -> tuple[list[str], int, list[_Column]]:
    header, rows = read_rows(relative)
    columns = [_Column() for _ in header]
    count = 0
    while block := list(islice(rows, ROWS_PER_BLOCK)):
        count += len(block)
        for column, cells in zip(columns, zip(*block, strict=True), strict=True):
            column.add(cells, short=False)
    return header, count, columns


def analyze_csv(params: FileRefParams, previous: Any, context: StepContext) -> dict:
    """Per numeric column: count, mean, min, max and sample standard deviation."""
    from chains.steps import arrow_csv

    source = _input_file(params, previous, context)
    try:
        header, count, columns = _analyze_blocks(source)
    except arrow_csv.Irregular:
        # A NUL byte, too many fields, bad quoting, bad UTF-8, or a header only csv reads
        # right: read the file again the way every data step reads it, which also words the
        # error.
        header, count, columns = _analyze_rows(source)
    numeric = {header[i]: column.as_dict() for i, column in enumerate(columns)
               if column.count and not column.text}
    return {"file": source, "rows": count, "columns": numeric}


step("data.load", params=LoadParams, produces="file",
     description="Check a CSV file and count its rows.")(load_csv)
step("data.clean", params=FileRefParams, accepts="file", produces="file",
     description="Strip cells, drop blank and duplicate rows, parse numbers.")(clean_csv)
step("data.transform", params=FileRefParams, accepts="file", produces="file",
     description="Min-max scale numeric columns to [0, 1].")(transform_csv)
step("data.analyze", params=FileRefParams, accepts="file", produces="record",
     description="Count, mean, min, max and sample std of each numeric column.")(analyze_csv)
