"""CSV steps. Rows stream from file to file; steps pass a file reference, never the data."""
import csv
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from pydantic import Field

from chains.steps.base import Params, StepContext, StepFailed, StepType
from chains.steps.paths import DataPath, data_file_for_step

FORMULA_PREFIXES = ("=", "+", "-", "@")


class LoadParams(Params):
    path: DataPath = Field(description="A CSV file relative to the data directory.")


class FileRefParams(Params):
    path: DataPath | None = Field(
        None, description="A CSV file to read; by default the file the previous step produced."
    )


def parse_number(cell: str) -> float | None:
    """A finite number, or None for anything else (text, blanks, nan, inf)."""
    if not cell or len(cell) > 64:
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
    if text.startswith(FORMULA_PREFIXES) and parse_number(text) is None:
        return "'" + text
    return text


def _input_file(params: FileRefParams, previous: Any) -> str:
    if params.path:
        return params.path
    if isinstance(previous, dict) and isinstance(previous.get("file"), str):
        return previous["file"]
    raise StepFailed("needs a 'path' param or a previous step that produced a file")


def read_rows(relative: str) -> tuple[list[str], Iterator[list[str]]]:
    """The header and a stream of rows of a bounded, UTF-8 CSV file in the data directory."""
    path = data_file_for_step(relative)
    size = path.stat().st_size
    if size > settings.CHAINS_MAX_FILE_BYTES:
        raise StepFailed(f"file {relative!r} is {size} bytes, over the limit")
    csv.field_size_limit(settings.CHAINS_MAX_CSV_FIELD_BYTES)
    handle = path.open(newline="", encoding="utf-8")
    reader = csv.reader(handle, strict=True)

    def failing(exc: Exception) -> StepFailed:
        handle.close()
        if isinstance(exc, UnicodeDecodeError):
            return StepFailed(f"file {relative!r} is not UTF-8 text")
        return StepFailed(f"file {relative!r} line {reader.line_num}: {exc}")

    try:
        header = [cell.strip() for cell in next(reader)]
    except StopIteration:
        handle.close()
        raise StepFailed(f"file {relative!r} is empty") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise failing(exc) from exc
    if len(header) > settings.CHAINS_MAX_CSV_COLUMNS:
        handle.close()
        raise StepFailed(f"file {relative!r} has {len(header)} columns, over the limit")

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
                raise failing(exc) from exc

    return header, rows()


def _write(path: Path, header: list[str], rows: Iterator[list[Any]]) -> int:
    count = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([format_cell(cell) for cell in header])
        for row in rows:
            writer.writerow([format_cell(cell) for cell in row])
            count += 1
    return count


def _file_ref(context: StepContext, path: Path, header: list[str], rows: int) -> dict:
    return {"file": context.relative(path), "rows": rows, "columns": header}


def load_csv(params: LoadParams, previous: Any, context: StepContext) -> dict:
    header, rows = read_rows(params.path)
    count = sum(1 for _ in rows)
    return {"file": params.path, "rows": count, "columns": header}


def clean_csv(params: FileRefParams, previous: Any, context: StepContext) -> dict:
    """Strip cells, drop blank and duplicate rows, write numbers as numbers."""
    header, rows = read_rows(_input_file(params, previous))
    seen: set[bytes] = set()

    def cleaned() -> Iterator[list[Any]]:
        for row in rows:
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            key = hashlib.blake2b("\x1f".join(cells).encode(), digest_size=16).digest()
            if key in seen:
                continue
            seen.add(key)
            yield [number if (number := parse_number(c)) is not None else c for c in cells]

    out = context.output_path("clean.csv")
    return _file_ref(context, out, header, _write(out, header, cleaned()))


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
    source = _input_file(params, previous)
    header, ranges = _numeric_ranges(source)
    _, rows = read_rows(source)

    def scaled() -> Iterator[list[Any]]:
        for row in rows:
            out: list[Any] = list(row)
            for index, (low, high) in ranges.items():
                number = parse_number(row[index].strip())
                if number is not None:
                    out[index] = (number - low) / (high - low) if high > low else 0.0
            yield out

    out = context.output_path("transform.csv")
    ref = _file_ref(context, out, header, _write(out, header, scaled()))
    ref["scaled_columns"] = [header[i] for i in sorted(ranges)]
    return ref


class _Stats:
    """Welford's running count, mean and variance, with min and max."""

    __slots__ = ("count", "mean", "m2", "low", "high")

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.low, self.high = math.inf, -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)
        self.low, self.high = min(self.low, value), max(self.high, value)

    def as_dict(self) -> dict:
        std = math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else None
        return {"count": self.count, "mean": self.mean, "min": self.low, "max": self.high,
                "std": std}


def analyze_csv(params: FileRefParams, previous: Any, context: StepContext) -> dict:
    """Per numeric column: count, mean, min, max and sample standard deviation."""
    source = _input_file(params, previous)
    header, rows = read_rows(source)
    stats: dict[int, _Stats] = {}
    text_columns: set[int] = set()
    count = 0
    for row in rows:
        count += 1
        for index, cell in enumerate(row):
            cell = cell.strip()
            if not cell or index in text_columns:
                continue
            number = parse_number(cell)
            if number is None:
                text_columns.add(index)
                stats.pop(index, None)
            else:
                stats.setdefault(index, _Stats()).add(number)
    columns = {header[i]: stats[i].as_dict() for i in sorted(stats)}
    return {"file": source, "rows": count, "columns": columns}


load = StepType("data.load", "Check a CSV file and count its rows.", LoadParams, load_csv,
                produces="file")
clean = StepType(
    "data.clean", "Strip cells, drop blank and duplicate rows, parse numbers.",
    FileRefParams, clean_csv, accepts="file", produces="file",
)
transform = StepType(
    "data.transform", "Min-max scale numeric columns to [0, 1].", FileRefParams, transform_csv,
    accepts="file", produces="file",
)
analyze = StepType(
    "data.analyze", "Count, mean, min, max and sample std of each numeric column.",
    FileRefParams, analyze_csv, accepts="file", produces="record",
)
