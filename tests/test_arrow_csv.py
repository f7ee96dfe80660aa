"""The CSV steps' pyarrow path (chains.steps.arrow_csv) against their row-by-row path and the
cell rules it stands for: parse_number, format_cell, csv.writer; and analyze's statistics
against the statistics module on data with large offsets."""
import csv
import io
import math
import random
import statistics
import struct

import pyarrow as pa
import pytest

from chains.steps import STEP_TYPES, StepContext, StepFailed, arrow_csv, data
from chains.steps.data import format_cell, parse_number


def run_step(key: str, params: dict, *, run_id: str = "r1"):
    step_type = STEP_TYPES[key]
    return step_type.execute(step_type.validate_params(params), None,
                             StepContext(run_id=run_id, step_index=0))


# --- cells ------------------------------------------------------------------------------------

ODD_CELLS = [
    "", " ", "\t", "\x0b", "\x1c", "\xa0", "\u3000", "1", " 1", "1 ", "\t1\n", "\x0b1", "\x1c1",
    "\xa01\u3000", "+1", "-1", "-0", ".5", "5.", ".", "-", "+", "e5", "1e", "1e+", "1.e5",
    "-.5e-3", "1E+05", "00012", "1_000", "1__0", "_1", "١٢", "１２", "nan", "NaN", "-nan",
    "inf", "-inf", "Infinity", "infinit", "nan(1)", "1e400", "-1e400", "1e-400", "0x10", "1d",
    "1,5", "1.5.5", "--1", "+-1", "=1+1", " =1", "@x", "abc", "a1", "1" * 64, "1" * 65,
    " " * 70 + "1", "0." + "0" * 61 + "1", "9" * 309, "2.2250738585072011e-308",
    "4.9406564584124654e-324", "1.7976931348623157e308", "1.7976931348623159e308",
]


def _random_cell(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        return "".join(rng.choice("0123456789+-.eE") for _ in range(rng.randint(1, 8)))
    if kind < 0.6:
        return "".join(rng.choice("0123456789+-.eE _\t\xa0xn") for _ in range(rng.randint(0, 8)))
    if kind < 0.8:
        return repr(rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-30, 30))
    return f"{rng.randint(-10**20, 10**20)}{rng.choice(['', '.', '.0', 'e3', 'E-7'])}"


CELLS = ODD_CELLS + [_random_cell(random.Random(seed)) for seed in range(5000)]


def _expected(cell: str) -> tuple[float | None, bool]:
    number = parse_number(cell.strip())
    return number, number is None and bool(cell.strip())


@pytest.mark.parametrize("stripped", [False, True])
def test_numbers_are_parse_number_of_the_stripped_cell(stripped):
    cells = [cell.strip() for cell in CELLS] if stripped else CELLS
    values, _ = arrow_csv.numbers(pa.array(cells, pa.string()), stripped=stripped)
    assert values.to_pylist() == [_expected(cell)[0] for cell in cells]


@pytest.mark.parametrize("cell", CELLS[:200])
def test_a_column_is_text_when_one_cell_is(cell):
    number, text = _expected(cell)
    for column in ([cell], ["1", cell, None, "2.5"]):
        values, has_text = arrow_csv.numbers(pa.array(column, pa.string()))
        assert has_text == text
        assert values.to_pylist()[column.index(cell)] == number


def _random_doubles(count: int) -> list[float]:
    rng = random.Random(7)
    values = [struct.unpack("d", rng.getrandbits(64).to_bytes(8, "little"))[0]
              for _ in range(count)]
    values += [rng.uniform(-1, 1) * 10 ** rng.uniform(-7, 18) for _ in range(count)]
    values += [float(rng.randint(-2**54, 2**54)) for _ in range(count // 10)]
    edges = [0.0, -0.0, 1e-4, -1e-4, 9.999999999999999e-05, 1e10, 9999999999.5, -9999999999.5,
             1e10 + 0.5, 2.0**53, 2.0**53 - 1, -(2.0**53), 2.0**53 + 2, 1e16, 1e22, 5e-324,
             0.1 + 0.2, 1 / 3, math.inf, -math.inf, math.nan]
    return values + edges


def test_numbers_are_written_as_format_cell_writes_them():
    values = _random_doubles(20_000)
    written = arrow_csv.format_numbers(pa.array(values + [None], pa.float64())).to_pylist()
    assert written == [format_cell(value) for value in values] + [None]


@pytest.mark.parametrize("cells", [
    [" =HYPERLINK(\"x\")", "\t=1+1", "  @SUM(A1)", "\r+1+1", "-5", " -5", "+3.5", "text", "",
     " ", "=", "+", "-", "@", "'=x", " - 1", "-1e5", "-inf", "-nan", "+ 1"],
])
def test_text_is_escaped_as_format_cell_escapes_it(cells):
    assert arrow_csv.escape_formulas(pa.array(cells)).to_pylist() == [
        format_cell(cell) for cell in cells]


@pytest.mark.parametrize("width", [1, 2, 4])
def test_lines_are_written_as_csv_writer_writes_them(width):
    rng = random.Random(width)
    pieces = ["", "a", " b ", ",", '"', '""', "\r", "\n", "\r\n", "x,y", "é", "'=1", " "]
    rows = [[rng.choice(pieces) + rng.choice(pieces) for _ in range(width)] for _ in range(500)]
    fields = [pa.array([row[i] or None for row in rows], pa.string()) for i in range(width)]
    expected = io.StringIO()
    csv.writer(expected).writerows(rows)
    written = arrow_csv.csv_lines(fields, [False] * width).to_pybytes()
    assert written == expected.getvalue().encode()


# --- the steps: the pyarrow path against the row-by-row path -------------------------------------


def _generated(rng: random.Random, rows: int, *, odd: bool) -> str:
    """A header and rows of an id, a number with 3% blanks and a large offset, a number in
    scientific notation (some negative), a text column with numbers in it, and a label.
    Odd: blanks with spaces, short rows, blank lines, quoted fields, formulas, CRLF."""
    lines = ["id,offset,sci,mixed,label"]
    for number in range(rows):
        offset = "" if rng.random() < 0.03 else repr(1e9 + rng.gauss(0, 1))
        sci = f"{rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8):.6e}"
        mixed = rng.choice(["7", "-3.5", "n/a", "1e3", "x1"])
        label = rng.choice(["alpha", "=cmd()", "-", "bravo"])
        if odd:
            choice = rng.random()
            if choice < 0.03:
                lines.append("")
                continue
            if choice < 0.06:
                lines.append(f"{number},{offset}")
                continue
            if choice < 0.09:
                offset = f" {offset} " if offset else "   "
            elif choice < 0.12:
                label = f'"{label}, quoted ""twice""\nover two lines"'
        lines.append(f"{number},{offset},{sci},{mixed},{label}")
    return ("\r\n" if odd and rng.random() < 0.5 else "\n").join(lines) + "\n"


def _by_rows(monkeypatch):
    """Every step reads its file the row-by-row way."""
    def refuse(relative, header):
        raise arrow_csv.Irregular

    monkeypatch.setattr(arrow_csv, "open_blocks", refuse)


def _assert_same_statistics(fast: dict, slow: dict) -> None:
    """The same rows and columns; statistics alike to 1e-12 (both sum in blocks, in another
    order)."""
    assert {**fast, "columns": set(fast["columns"])} == {**slow, "columns": set(slow["columns"])}
    for name, stats in slow["columns"].items():
        assert fast["columns"][name] == pytest.approx(stats, rel=1e-12)


CASES = {f"{kind} {seed}": (seed, kind == "odd") for seed in range(3) for kind in ("plain", "odd")}


@pytest.mark.parametrize("block_bytes", [97, 4096, 1 << 20])
@pytest.mark.parametrize("case", CASES)
def test_the_steps_read_in_blocks_as_they_read_row_by_row(data_dir, monkeypatch, case,
                                                          block_bytes):
    seed, odd = CASES[case]
    (data_dir / "in.csv").write_bytes(_generated(random.Random(seed), 600, odd=odd).encode())
    monkeypatch.setattr(data, "BLOCK_BYTES", block_bytes)
    fast = {key: run_step(f"data.{key}", {"path": "in.csv"}, run_id="fast")
            for key in ("analyze", "clean", "transform")}
    with monkeypatch.context() as patch:
        _by_rows(patch)
        slow = {key: run_step(f"data.{key}", {"path": "in.csv"}, run_id="slow")
                for key in ("analyze", "clean", "transform")}
    _assert_same_statistics(fast["analyze"], slow["analyze"])
    assert set(slow["analyze"]["columns"]) == {"id", "offset", "sci"}
    for key in ("clean", "transform"):
        assert {**fast[key], "file": None} == {**slow[key], "file": None}
        assert (data_dir / fast[key]["file"]).read_bytes() == (
            data_dir / slow[key]["file"]).read_bytes()


def test_analyze_agrees_with_exact_statistics_despite_large_offsets(data_dir):
    rng = random.Random(11)
    columns = {"big": [1e12 + rng.gauss(0, 1) for _ in range(50_000)],
               "negative": [-5e8 + rng.uniform(-3, 3) for _ in range(50_000)],
               "tiny": [rng.gauss(0, 1e-9) for _ in range(50_000)]}
    text = "big,negative,tiny\n" + "".join(
        f"{a!r},{b!r},{c!r}\n" for a, b, c in zip(*columns.values(), strict=True))
    (data_dir / "in.csv").write_text(text)
    stats = run_step("data.analyze", {"path": "in.csv"})["columns"]
    for name, values in columns.items():
        # statistics.stdev is exact (fractions) before its last rounding; fmean is fsum.
        assert stats[name]["mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert stats[name]["std"] == pytest.approx(statistics.stdev(values), rel=1e-12)
        assert (stats[name]["min"], stats[name]["max"]) == (min(values), max(values))
        assert stats[name]["count"] == len(values)


@pytest.mark.parametrize("step", ["data.analyze", "data.clean", "data.transform"])
@pytest.mark.parametrize(
    ("late", "message"),
    [
        ("1,2,3\n", "line 302 has 3 fields"),
        ("1,\x00\n", "line 302 contains a NUL byte"),
        ('1,"2"x\n', "line 302: ','"),
        ("1,\xff\n", "is not UTF-8 text"),
    ],
)
def test_errors_deep_in_the_file_fail_every_step_as_before(data_dir, monkeypatch, step, late,
                                                          message):
    monkeypatch.setattr(data, "BLOCK_BYTES", 256)
    content = ("a,b\n" + "1,2\n" * 300).encode() + late.encode("latin-1") + b"1,2\n" * 300
    (data_dir / "in.csv").write_bytes(content)
    with pytest.raises(StepFailed, match=message):
        run_step(step, {"path": "in.csv"})


def test_a_field_over_the_limit_fails_in_a_plain_block(data_dir, settings):
    settings.CHAINS_MAX_CSV_FIELD_BYTES = 100
    (data_dir / "ok.csv").write_text("a,b\n" + "x" * 100 + ",1\n" + "1,2\n" * 50)
    assert run_step("data.analyze", {"path": "ok.csv"})["rows"] == 51
    (data_dir / "long.csv").write_text("a,b\n" + "1,2\n" * 50 + "é" * 101 + ",1\n")
    for step in ("data.analyze", "data.clean", "data.transform"):
        with pytest.raises(StepFailed, match="field larger than field limit"):
            run_step(step, {"path": "long.csv"})


@pytest.mark.parametrize("content", [
    '"a\nb",c\n1,2\n3,4\n',  # a quoted header over two lines: read row by row
    "a,b\r1,2\r3,4\r",  # lone carriage returns, header too
    "a,b\n1,2\r3,4\n5,6\r\n\r\n7,8",  # lone carriage returns later on, a blank line
    "\ufeffa,b\n\ufeff1,2\n3,4\n",  # byte order marks are cells' text
])
def test_files_pyarrow_reads_otherwise_give_the_row_by_row_answer(data_dir, monkeypatch,
                                                                  content):
    (data_dir / "in.csv").write_bytes(content.encode())
    fast = {key: run_step(f"data.{key}", {"path": "in.csv"}, run_id="fast")
            for key in ("analyze", "clean", "transform")}
    _by_rows(monkeypatch)
    slow = {key: run_step(f"data.{key}", {"path": "in.csv"}, run_id="slow")
            for key in ("analyze", "clean", "transform")}
    _assert_same_statistics(fast["analyze"], slow["analyze"])
    for key in ("clean", "transform"):
        assert (data_dir / fast[key]["file"]).read_bytes() == (
            data_dir / slow[key]["file"]).read_bytes()


@pytest.mark.parametrize("memory_rows", [10, 1_000_000])
def test_seen_rows_says_new_the_first_time_only(monkeypatch, memory_rows):
    """In memory and past MEMORY_ROWS on disk, within a block and across blocks."""
    monkeypatch.setattr(data.SeenRows, "MEMORY_ROWS", memory_rows)
    rng = random.Random(3)
    blocks = [[rng.randrange(60).to_bytes(16, "big") for _ in range(rng.randrange(1, 40))]
              for _ in range(30)]
    seen: set[bytes] = set()
    with data.SeenRows() as rows:
        for keys in blocks:
            expected = []
            for key in keys:
                expected.append(key not in seen)
                seen.add(key)
            assert rows.add_all(keys) == expected
