"""The CSV steps' fast path: a file read in blocks of whole lines by pyarrow's CSV parser, its
cells classified, formatted and written a column at a time by pyarrow.compute, with the meaning
the row-by-row path in chains.steps.data gives them (parse_number, format_cell, csv.writer).

A block pyarrow would read differently from csv.reader(strict=True) is read by csv.reader
itself: a block with a quote, a lone carriage return, a short row (pyarrow refuses it, csv pads
it), or a UTF-8 byte order mark at its start. A cell the column rules cannot vouch for goes
through parse_number or format_cell. What is an error for read_rows raises Irregular, and the
caller reads the file again with read_rows, which words the error; so does a header that is
quoted or ends at a lone carriage return. Imported by the steps when they run, so that only
processes running CSV steps load pyarrow.
"""
import csv
import io
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from chains.steps.data import MAX_NUMBER_CHARS, data_file_for_step, format_cell, parse_number

# pyarrow's default pool (mimalloc) keeps freed blocks for reuse: the steps' peak memory was
# 15 to 25 MB higher with it than with the system allocator, for no measurable speed.
pa.set_memory_pool(pa.system_memory_pool())

# The characters str.strip() removes: utf8_trim with these strips a cell as Python does.
WHITESPACE = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
# Numbers both float() and pyarrow's cast read, to the same double: [sign] digits [. digits]
# [exponent]. Anything else with a digit in it may still be one for float() ('1_000', digits
# of other scripts) and is asked of parse_number.
PLAIN_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
HAS_A_DIGIT = r"[0-9]|[^\x00-\x7f]"
# A cell format_cell may escape: its first character after spaces is a formula prefix.
FORMULA_START = r"^ *[=+\-@\t\r]"
# A cell csv.writer quotes (QUOTE_MINIMAL, the excel dialect).
NEEDS_QUOTES = r'[,"\r\n]'
# Non-integral doubles whose repr() pyarrow's cast to string writes alike: shortest digits,
# positional notation. Outside it (and for integers from 2**53 on), repr() writes them.
POSITIONAL = (1e-4, 1e10)
UTF8_BOM = b"\xef\xbb\xbf"


class Irregular(Exception):
    """Something read_rows refuses (or reads in a way this path does not): read the file again
    with read_rows."""


def open_blocks(relative: str, header: list[str]) -> BinaryIO:
    """The file, positioned after its header line; Irregular when the header is not one plain
    line (quoted, or ended by a lone carriage return), which only csv.reader reads right, or
    is empty (no column to read)."""
    raw = data_file_for_step(relative).open("rb")
    first = raw.readline()
    if not header or b'"' in first or first.count(b"\r") > first.endswith(b"\r\n"):
        raw.close()
        raise Irregular
    return raw


def blocks(raw: BinaryIO, width: int, block_bytes: int, field_limit: int
           ) -> Iterator[tuple[list[pa.Array], bool]]:
    """The cells of each block of rows, a string array per column, exactly as read_rows reads
    them (short rows padded), with null for an empty cell; and whether the block is plain:
    read by pyarrow, none of its cells has a comma, a quote or a line break (csv.writer writes
    each of them as it is)."""
    reader = _ArrowBlocks(width, field_limit)
    pending = b""
    for lines in _line_blocks(raw, block_bytes):
        data = pending + lines if pending else lines
        if b"\x00" in data:
            raise Irregular
        columns = None
        if not (b'"' in data or data.startswith(UTF8_BOM)
                or (b"\r" in data and data.count(b"\r") != data.count(b"\r\n"))):
            columns = reader.read(data)
        if columns is not None:
            pending = b""
            yield columns, True
            continue
        columns, pending = _csv_block(data, width, final=False)
        if columns:
            yield columns, False
    if pending:
        columns, _ = _csv_block(pending, width, final=True)
        if columns:
            yield columns, False


def _line_blocks(raw: BinaryIO, block_bytes: int) -> Iterator[bytes]:
    """About block_bytes at a time, each ending at the end of a line (a lone \\r ends one too,
    as for csv.reader), so a line is never split; a line longer than a block is one block."""
    carry = b""
    while chunk := raw.read(block_bytes):
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n") + 1 or data.rfind(b"\r", 0, len(data) - 1) + 1
        if cut:
            carry = data[cut:]
            yield data[:cut]
        else:
            carry = data
    if carry:
        yield carry


class _ArrowBlocks:
    """pyarrow's CSV parser set to read a block of plain lines as csv.reader does: every cell a
    string, no quoting, an empty line a row of empty cells."""

    def __init__(self, width: int, field_limit: int) -> None:
        names = [str(index) for index in range(width)]
        self.field_limit = field_limit
        self.read_options = pacsv.ReadOptions(column_names=names, use_threads=False)
        self.parse_options = pacsv.ParseOptions(quote_char=False, ignore_empty_lines=False)
        types = dict.fromkeys(names, pa.string())
        self.convert_options = {
            check: pacsv.ConvertOptions(column_types=types, strings_can_be_null=True,
                                        null_values=[""], check_utf8=check)
            for check in (False, True)}

    def read(self, data: bytes) -> list[pa.Array] | None:
        """The block's columns, or None when pyarrow would not read it as csv.reader does
        (a row of another width, bad UTF-8): then csv.reader reads it."""
        self.read_options.block_size = len(data) + 1
        try:
            table = pacsv.read_csv(pa.py_buffer(data), read_options=self.read_options,
                                   parse_options=self.parse_options,
                                   convert_options=self.convert_options[not data.isascii()])
        except pa.ArrowException:
            return None
        columns = [column.combine_chunks() for column in table.columns]
        if len(data) > self.field_limit and any(
                _longest(column, pc.utf8_length) > self.field_limit for column in columns
                if _longest(column, pc.binary_length) > self.field_limit):
            raise Irregular  # csv.reader refuses a field over its limit (in characters)
        return columns


def _longest(cells: pa.Array, length) -> int:
    return pc.max(length(cells)).as_py() or 0


def _csv_block(data: bytes, width: int, *, final: bool) -> tuple[list[pa.Array], bytes]:
    """A block read by csv.reader: its columns, and the start of a row that runs on past the
    block (a quoted field with a line break), to be read with the next block."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Irregular from exc
    lines = io.StringIO(text, newline="")
    reader = csv.reader(lines, strict=True)
    rows: list[list[str]] = []
    done = 0
    try:
        for row in reader:
            rows.append(row)
            done = lines.tell()
    except csv.Error as exc:
        if final or lines.tell() != len(text):
            raise Irregular from exc
        rest = text[done:].encode()
    else:
        rest = b""
    if not rows:
        return [], rest
    if max(map(len, rows)) > width:
        raise Irregular
    padded = (row + [""] * (width - len(row)) for row in rows)
    columns = [pa.array([cell or None for cell in cells], pa.string())
               for cells in zip(*padded, strict=True)]
    return columns, rest


# --- cells ------------------------------------------------------------------------------------


def numbers(cells: pa.Array, *, stripped: bool = False) -> tuple[pa.Array, bool]:
    """Each cell's number (parse_number of the stripped cell), or null for a blank or text;
    and whether any cell is text (neither blank nor a number)."""
    if _longest(cells, pc.binary_length) <= MAX_NUMBER_CHARS:
        try:
            # The cast reads no blanks around a number, and only numbers float() reads alike;
            # a cell it refuses is left to the rules below.
            return _finite(pc.cast(cells, pa.float64()))
        except pa.ArrowInvalid:
            pass
    if not stripped:
        cells = pc.utf8_trim(cells, WHITESPACE)
    blank = pc.fill_null(pc.equal(cells, ""), True)
    # Only a cell with a digit can be a number.
    digits = pc.fill_null(pc.match_substring_regex(cells, HAS_A_DIGIT), False)
    if not pc.any(digits).as_py():
        return pa.nulls(len(cells), pa.float64()), not pc.all(blank).as_py()
    plain = pc.and_(pc.match_substring_regex(cells, PLAIN_NUMBER),
                    pc.less_equal(pc.binary_length(cells), MAX_NUMBER_CHARS))
    values, _ = _finite(pc.cast(pc.if_else(plain, cells, None), pa.float64()))
    # The rest with a digit: text, or numbers only float() reads.
    unsure = pc.and_(digits, pc.fill_null(pc.invert(pc.is_valid(values)), True))
    if pc.any(unsure).as_py():
        where = pc.indices_nonzero(unsure)
        found = [parse_number(cell.strip()) for cell in pc.take(cells, where).to_pylist()]
        values = pc.replace_with_mask(values, unsure, pa.array(found, pa.float64()))
    text = pc.and_(pc.invert(blank), pc.is_null(values))
    return values, bool(pc.any(text).as_py())


def _finite(values: pa.Array) -> tuple[pa.Array, bool]:
    """Values with nan and the infinities (text for parse_number) nulled, and whether any
    was."""
    finite = pc.is_finite(values)
    if pc.all(finite).as_py() is not False:
        return values, False
    return pc.if_else(finite, values, None), True


def format_numbers(values: pa.Array) -> pa.Array:
    """format_cell of each number (null stays null): an integer below 2**53 as an integer,
    anything else as repr() writes it."""
    magnitude = pc.abs(values)
    integral = pc.and_(pc.equal(pc.floor(values), values), pc.less(magnitude, 2.0**53))
    if pc.all(integral).as_py() is not False:  # (all null: all blank)
        return pc.cast(pc.cast(values, pa.int64()), pa.string())
    text = pc.cast(values, pa.string())
    if pc.any(integral).as_py():
        integers = pc.cast(pc.cast(pc.if_else(integral, values, 0.0), pa.int64()), pa.string())
        text = pc.if_else(integral, integers, text)
    positional = pc.and_(pc.greater_equal(magnitude, POSITIONAL[0]),
                         pc.less(magnitude, POSITIONAL[1]))
    # nan and the infinities go to format_cell too. Should pyarrow ever write an exponent
    # inside the positional range, format_cell decides that number as well.
    by_python = pc.or_(pc.invert(pc.or_(integral, positional)), pc.match_substring(text, "e"))
    if pc.any(by_python).as_py():
        by_python = pc.fill_null(by_python, False)
        found = [format_cell(value) for value in pc.filter(values, by_python).to_pylist()]
        text = pc.replace_with_mask(text, by_python, pa.array(found, pa.string()))
    return text


def escape_formulas(cells: pa.Array) -> pa.Array:
    """format_cell of each text cell: one a spreadsheet would run as a formula is escaped."""
    maybe = pc.match_substring_regex(cells, FORMULA_START)
    if not pc.any(maybe).as_py():
        return cells
    found = [format_cell(cell) for cell in pc.filter(cells, maybe).to_pylist()]
    return pc.replace_with_mask(cells, maybe, pa.array(found, pa.string()))


def csv_lines(fields: Sequence[pa.Array], plain: Sequence[bool]) -> pa.Buffer:
    """Rows of formatted cells (null for an empty one) as csv.writer writes them: quoted where
    needed (never in a field marked plain: numbers, blanks, cells of a plain block), separated
    by commas, each line ended by \r\n."""
    quoted = []
    for cells, is_plain in zip(fields, plain, strict=True):
        if len(fields) == 1:
            cells = _filled(cells)
        needs = None if is_plain else pc.match_substring_regex(cells, NEEDS_QUOTES)
        if len(fields) == 1:  # a row of one empty field is written ""
            empty = pc.equal(cells, "")
            needs = empty if needs is None else pc.or_(needs, empty)
        if needs is not None and pc.any(needs).as_py():
            needs = pc.fill_null(needs, False)
            wrapped = pc.binary_join_element_wise(
                '"', pc.replace_substring(cells, '"', '""'), '"', "")
            cells = pc.if_else(needs, wrapped, cells)
        quoted.append(cells)
    quoted[-1] = pc.binary_join_element_wise(_filled(quoted[-1]), "\r\n", "")
    lines = (pc.binary_join_element_wise(*quoted, ",", null_handling="replace")
             if len(quoted) > 1 else quoted[0])
    offsets = memoryview(lines.buffers()[1]).cast("i")
    start, end = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return lines.buffers()[2][start:end]


# --- the steps' work on a block -----------------------------------------------------------------


def summary(values: pa.Array, shift_for: Callable[[float], float]
            ) -> tuple[int, float, float, float, float] | None:
    """Count, mean, sum of squared deviations from it, min and max of a block's numbers (None
    when it has none); mean and deviations of the numbers less shift_for(the least number).
    pyarrow sums pairwise and takes the variance in two passes."""
    count = len(values) - values.null_count
    if not count:
        return None
    extremes = pc.min_max(values)
    low, high = extremes["min"].as_py(), extremes["max"].as_py()
    shift = shift_for(low)
    shifted = pc.subtract(values, shift) if shift else values
    return (count, pc.mean(shifted).as_py(), pc.variance(shifted, ddof=0).as_py() * count,
            low, high)


def numeric_ranges(blocks: Iterable[tuple[list[pa.Array], bool]]
                   ) -> dict[int, tuple[float, float]]:
    """Columns whose non-blank cells are all numbers, with their min and max."""
    ranges: dict[int, tuple[float, float]] = {}
    text: set[int] = set()
    for columns, _ in blocks:
        for index, cells in enumerate(columns):
            if index in text:
                continue
            values, has_text = numbers(cells)
            if has_text:
                text.add(index)
                ranges.pop(index, None)
                continue
            extremes = pc.min_max(values)
            low, high = extremes["min"].as_py(), extremes["max"].as_py()
            if low is None:
                continue
            if index in ranges:
                low, high = min(low, ranges[index][0]), max(high, ranges[index][1])
            ranges[index] = (low, high)
    return ranges


def _filled(cells: pa.Array) -> pa.Array:
    """The cells with "" for null."""
    return pc.fill_null(cells, "") if cells.null_count else cells


def _nonempty(cells: pa.Array) -> pa.Array:
    return pc.fill_null(pc.greater(pc.binary_length(cells), 0), False)


def transform_block(columns: list[pa.Array], plain_block: bool,
                    ranges: dict[int, tuple[float, float]]) -> pa.Buffer:
    """The block's lines with each numeric column scaled to [0, 1] by its (low, high): each
    number becomes (number - low) / (high - low), or 0 for a constant column; every other
    cell is written as it was read."""
    fields, plain = [], []
    for index, cells in enumerate(columns):
        if index not in ranges:
            fields.append(escape_formulas(cells))
            plain.append(plain_block)
            continue
        values, _ = numbers(cells)
        low, high = ranges[index]
        scaled = (pc.divide(pc.subtract(values, low), high - low) if high > low
                  else pc.if_else(pc.is_valid(values), 0.0, None))
        # A blank is written as it was, spaces and all.
        blanks = escape_formulas(pc.if_else(pc.is_valid(values), None, cells))
        fields.append(pc.coalesce(format_numbers(scaled), blanks))
        plain.append(plain_block)
    return csv_lines(fields, plain)


def clean_block(columns: list[pa.Array], plain_block: bool,
                keep: Callable[[list[bytes]], list[bool]]) -> tuple[int, pa.Buffer | None]:
    """The block's rows with their cells stripped, less the blank ones and those `keep` says
    no to (it is given each row's cells joined by \x1f, and says whether it is new); numbers
    written as format_cell writes them. The number of rows, and their lines."""
    cells = [pc.utf8_trim(column, WHITESPACE) for column in columns]
    filled = _nonempty(cells[0])
    for column in cells[1:]:
        filled = pc.or_(filled, _nonempty(column))
    if not pc.all(filled).as_py():
        cells = [pc.filter(column, filled) for column in cells]
    if not len(cells[0]):
        return 0, None
    keys = (pc.binary_join_element_wise(*cells, "\x1f", null_handling="replace")
            if len(cells) > 1 else _filled(cells[0]))
    new = pa.array(keep(keys.cast(pa.binary()).to_pylist()), pa.bool_())
    if not pc.all(new).as_py():
        cells = [pc.filter(column, new) for column in cells]
    if not len(cells[0]):
        return 0, None
    fields, plain = [], []
    for column in cells:
        values, has_text = numbers(column, stripped=True)
        if has_text:
            text = escape_formulas(pc.if_else(pc.is_valid(values), None, column))
            fields.append(pc.coalesce(format_numbers(values), text))
        else:
            fields.append(format_numbers(values))
        plain.append(plain_block or not has_text)
    return len(cells[0]), csv_lines(fields, plain)
