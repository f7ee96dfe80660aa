"""Step types run directly (no Celery): math folding, CSV steps, file steps, path confinement,
and the registry as a table."""
import gzip
import os
import statistics

import pytest

from chains.models import Step
from chains.steps import STEP_TYPES, ParamsInvalid, StepContext, StepFailed, data
from chains.steps.data import format_cell, parse_number, read_rows
from chains.steps.paths import resolve_data_path
from config.celery import app
from tests.helpers import write_csv


def run_step(key: str, params: dict, previous=None, *, index: int = 0):
    step_type = STEP_TYPES[key]
    checked = step_type.validate_params(params)
    return step_type.execute(checked, previous, StepContext(run_id="r1", step_index=index))


# --- registry ------------------------------------------------------------------------------


def test_every_registry_key_has_a_registered_celery_task():
    import chains.tasks  # noqa: F401  (registers the tasks)

    for key, step_type in STEP_TYPES.items():
        assert step_type.task_name == f"chains.step.{key}"
        assert step_type.task_name in app.tasks, key


def test_step_model_choices_are_the_registry_keys_by_family():
    groups = Step._meta.get_field("step_type").choices
    assert [family for family, _ in groups] == ["math", "data", "io", "flow"]
    assert [key for _, options in groups for key, _ in options] == list(STEP_TYPES)


def test_step_families_have_queues():
    assert {st.default_queue for st in STEP_TYPES.values()} == {"math", "data", "io", "celery"}


# --- math ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "numbers", "previous", "expected"),
    [
        ("math.add", [1, 2, 3], None, 6),
        ("math.add", [1, 2, 3], 6, 12),
        ("math.add", [], [1, 2, 3.5], 6.5),
        ("math.subtract", [1, 2], 10, 7),
        ("math.multiply", [2, 3], {}, 6),
        ("math.divide", [3], 9, 3),
        ("math.divide", [4], 1, 0.25),
        ("math.power", [2, 10], None, 1024),
    ],
)
def test_math_folds_left_to_right(key, numbers, previous, expected):
    result = run_step(key, {"numbers": numbers}, previous)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("key", "numbers", "message"),
    [
        ("math.divide", [1, 0], "division by zero"),
        ("math.power", [10, 400], "too large"),
        ("math.power", [-8, 0.5], "not a real number"),
        ("math.multiply", [1e15, 1e15, 1e15, 1e15, 1e15, 1e15, 1e15, 1e15, 1e15, 1e15,
                           1e15, 1e15, 1e15, 1e15, 1e15, 1e15, 1e15, 1e15, 1e15, 1e15,
                           1e15, 1e15], "not a finite number"),
        ("math.add", [], "nothing to compute"),
    ],
)
def test_math_errors_are_step_failures(key, numbers, message):
    with pytest.raises(StepFailed, match=message):
        run_step(key, {"numbers": numbers})


def test_math_refuses_non_numeric_previous_result():
    with pytest.raises(StepFailed, match="expects a number"):
        run_step("math.add", {"numbers": [1]}, {"file": "x.csv"})


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"numbers": [True]}, "numbers.0", "must be a number"),
        ({"numbers": ["1"]}, "numbers.0", "must be a number"),
        ({"numbers": [float("nan")]}, "numbers.0", "finite"),
        ({"numbers": [float("inf")]}, "numbers.0", "finite"),
        ({"numbers": [10**16]}, "numbers.0", "between"),
        ({"numbers": list(range(1001))}, "numbers", "at most 1000"),
        ({"numbers": [1], "celery": "x"}, "celery", "Extra inputs"),
    ],
)
def test_math_params_are_validated(params, field, reason):
    with pytest.raises(ParamsInvalid) as info:
        STEP_TYPES["math.add"].validate_params(params, prefix="params")
    messages = info.value.messages()
    assert f"params.{field}" in messages, messages
    assert reason in " ".join(messages[f"params.{field}"])


# --- data ----------------------------------------------------------------------------------


def test_number_parsing_and_cell_formatting():
    assert parse_number(" 3 ".strip()) == 3.0
    assert parse_number("nan") is None and parse_number("inf") is None
    assert parse_number("1" * 5000) is None
    assert format_cell(3.0) == "3" and format_cell(0.5) == "0.5"
    assert format_cell("=cmd()") == "'=cmd()" and format_cell("@x") == "'@x"
    assert format_cell("-3") == "-3"


def test_clean_strips_drops_and_parses(data_dir):
    write_csv(data_dir / "in.csv", "a , b\n 1 , x \n\n 1 , x \n2.50,=1+1\n")
    result = run_step("data.clean", {"path": "in.csv"})
    assert result["rows"] == 2
    assert result["columns"] == ["a", "b"]
    text = (data_dir / result["file"]).read_text().splitlines()
    assert text == ["a,b", "1,x", "2.5,'=1+1"]
    assert result["file"] == "runs/r1/step1-clean.csv"


def test_data_steps_take_the_previous_file(data_dir):
    write_csv(data_dir / "in.csv", "v\n1\n3\n")
    loaded = run_step("data.load", {"path": "in.csv"})
    assert loaded == {"file": "in.csv", "rows": 2, "columns": ["v"]}
    stats = run_step("data.analyze", {}, loaded)
    assert stats["columns"]["v"] == {"count": 2, "mean": 2.0, "min": 1.0, "max": 3.0,
                                     "std": pytest.approx(1.41421356)}


def test_analyze_skips_text_columns_and_single_values_have_no_std(data_dir):
    write_csv(data_dir / "in.csv", "n,t,one\n1,a,5\n2,3,\n")
    stats = run_step("data.analyze", {"path": "in.csv"})
    assert set(stats["columns"]) == {"n", "one"}
    assert stats["columns"]["one"]["std"] is None


def _analyzed_row_by_row(relative: str) -> dict:
    """analyze's answer computed the plain way, one cell at a time."""
    header, rows = read_rows(relative)
    numbers: dict[int, list[float]] = {}
    text: set[int] = set()
    count = 0
    for row in rows:
        count += 1
        for index, cell in enumerate(row):
            if cell.strip():
                number = parse_number(cell.strip())
                (text.add(index) if number is None
                 else numbers.setdefault(index, []).append(number))
    return {"file": relative, "rows": count, "columns": {
        header[i]: {"count": len(values), "mean": pytest.approx(statistics.fmean(values)),
                    "min": min(values), "max": max(values),
                    "std": pytest.approx(statistics.stdev(values)) if len(values) > 1 else None}
        for i, values in sorted(numbers.items()) if i not in text}}


ANALYZE_CASES = {
    "plain, text late": "n,x,b\n" + "".join(
        f"{i},{i * 1.25:.2f},{'late text' if i == 150 else i % 3}\n" for i in range(200)),
    "blanks and spaces": "a,b,c\n" + "".join(
        f"{'' if i % 4 == 0 else i}, {i / 8} ,{' ' if i % 3 else '7'}\n" for i in range(200)),
    "crlf, quoted fields over lines": "k,v,w\r\n" + "".join(
        f'{i},"{i}.5","line one,\r\nline {i}"\r\n' for i in range(150)),
    "short rows and blank lines": "a,b,c\n" + "".join(
        f"{i}\n\n{i},{-i}\n" for i in range(100)),
    "long number cells are text": "a,b\n" + "".join(
        f"{i},{' ' * 70 + '1' if i == 90 else i}\n" for i in range(120)) + "1" * 70 + ",1",
    "lone carriage returns": "a,b\r1,2\r3,4\n5,6\r",
    "no trailing newline": "a,b\n1,2\n3,4",
}


@pytest.mark.parametrize("case", ANALYZE_CASES)
@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1 << 16])
def test_analyze_in_blocks_matches_a_row_by_row_reading(data_dir, monkeypatch, case,
                                                        block_bytes):
    monkeypatch.setattr(data, "BLOCK_BYTES", block_bytes)
    (data_dir / "in.csv").write_bytes(ANALYZE_CASES[case].encode())
    assert run_step("data.analyze", {"path": "in.csv"}) == _analyzed_row_by_row("in.csv")


@pytest.mark.parametrize(
    ("late", "message"),
    [
        ("1,2,3\n", "line 102 has 3 fields"),
        ("1,\x00\n", "line 102 contains a NUL byte"),
        ('1,"2"x\n', "line 102: ','"),
    ],
)
def test_analyze_errors_deep_in_the_file_name_their_line(data_dir, monkeypatch, late, message):
    monkeypatch.setattr(data, "BLOCK_BYTES", 64)
    write_csv(data_dir / "in.csv", "a,b\n" + "1,2\n" * 100 + late + "1,2\n" * 100)
    with pytest.raises(StepFailed, match=message):
        run_step("data.analyze", {"path": "in.csv"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"a,b\n1,2,3\n", "has 3 fields"),
        (b"a\n\"unterminated\n", "line"),
        (b"a\n\x00\n", "NUL byte"),
        (b"a\n\xff\n", "not UTF-8"),
    ],
)
def test_bad_csv_fails_the_step(data_dir, content, message):
    (data_dir / "bad.csv").write_bytes(content)
    with pytest.raises(StepFailed, match=message):
        run_step("data.analyze", {"path": "bad.csv"})


def test_oversized_field_and_too_many_columns_fail(data_dir, settings):
    settings.CHAINS_MAX_CSV_FIELD_BYTES = 1000
    write_csv(data_dir / "wide.csv", "a\n" + "x" * 2000 + "\n")
    with pytest.raises(StepFailed, match="field larger"):
        run_step("data.analyze", {"path": "wide.csv"})
    settings.CHAINS_MAX_CSV_COLUMNS = 10
    write_csv(data_dir / "cols.csv", ",".join(f"c{i}" for i in range(11)) + "\n")
    with pytest.raises(StepFailed, match="11 columns"):
        run_step("data.analyze", {"path": "cols.csv"})


def test_data_step_without_a_file_fails():
    with pytest.raises(StepFailed, match="needs a 'path'"):
        run_step("data.clean", {}, 42)


# --- io and paths --------------------------------------------------------------------------


def test_io_steps(data_dir, settings):
    settings.CHAINS_WRITABLE_DIRS = ["out"]
    (data_dir / "f.txt").write_text("abc" * 10)
    assert run_step("io.stat", {"path": "f.txt"})["size"] == 30
    read = run_step("io.read", {"path": "f.txt", "max_bytes": 4})
    assert (read["content"], read["truncated"]) == ("abca", True)
    checksum = run_step("io.checksum", {"path": "f.txt", "algorithm": "md5"})
    assert checksum["checksum"] == "1b66558be2b2cd898ebc3383623a3677"
    copied = run_step("io.copy", {"path": "f.txt", "destination": "out/g.txt"})
    assert copied["copy"] == "out/g.txt" and (data_dir / "out/g.txt").read_text() == "abc" * 10
    packed = run_step("io.compress", {"path": "f.txt"}, index=4)
    assert packed["compressed"] == "runs/r1/step5-f.txt.gz"
    assert gzip.decompress((data_dir / packed["compressed"]).read_bytes()) == b"abc" * 10


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../etc/passwd", "must not contain '..'"),
        ("a/../../x", "must not contain '..'"),
        ("/etc/passwd", "not absolute"),
        ("a\x00b", "NUL"),
        ("", "non-empty"),
        ("a\\..\\b", "separator"),
    ],
)
def test_paths_outside_the_data_directory_are_refused(data_dir, path, reason):
    with pytest.raises(ValueError, match=reason):
        resolve_data_path(path)
    with pytest.raises(ParamsInvalid):
        STEP_TYPES["io.stat"].validate_params({"path": path})


def test_symlink_out_of_the_data_directory_is_refused(data_dir, tmp_path, settings):
    settings.CHAINS_WRITABLE_DIRS = ["out"]
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (data_dir / "f.txt").write_text("inside")
    (data_dir / "out").mkdir()
    os.symlink(secret, data_dir / "link.txt")
    os.symlink(secret, data_dir / "out" / "link.txt")
    with pytest.raises(StepFailed, match="outside the data directory"):
        run_step("io.read", {"path": "link.txt"})
    with pytest.raises(StepFailed, match="outside the data directory"):
        run_step("io.copy", {"path": "f.txt", "destination": "out/link.txt"})
    assert secret.read_text() == "top secret"


def test_missing_file_fails_the_step(data_dir):
    with pytest.raises(StepFailed, match="not an existing file"):
        run_step("io.checksum", {"path": "nope.txt"})


def test_file_size_limit(data_dir, settings):
    settings.CHAINS_MAX_FILE_BYTES = 10
    (data_dir / "big.txt").write_text("x" * 11)
    with pytest.raises(StepFailed, match="over the limit"):
        run_step("io.checksum", {"path": "big.txt"})


def test_default_csv_bounds_refuse_huge_fields_and_wide_headers(data_dir):
    write_csv(data_dir / "field.csv", "a,b\n" + "x" * 200_000 + ",1\n")
    with pytest.raises(StepFailed, match="field larger than field limit"):
        run_step("data.clean", {"path": "field.csv"})
    write_csv(data_dir / "wide.csv", ",".join(f"c{i}" for i in range(100_000)) + "\n1\n")
    with pytest.raises(StepFailed, match="100000 columns, over the limit"):
        run_step("data.analyze", {"path": "wide.csv"})
