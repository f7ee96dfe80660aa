"""Seed task types become the right steps; bad configs name the field."""
import pytest

from chains.errors import ChainError
from chains.presets import build_preset
from chains.steps import ParamsInvalid


def test_math_chain_is_one_step_per_iteration():
    preset = build_preset("math_chain", {"operation": "add", "numbers": [1, 2, 3],
                                         "iterations": 2})
    assert [(s.step_type, s.params, s.stage) for s in preset.specs] == [
        ("math.add", {"numbers": [1, 2, 3]}, 0),
        ("math.add", {"numbers": [1, 2, 3]}, 1),
    ]
    assert preset.result_mode == "last_stage"


def test_math_chain_iterations_default_to_one():
    preset = build_preset("math_chain", {"operation": "power", "numbers": [2, 3]})
    assert len(preset.specs) == 1


def test_data_chain_loads_then_processes_in_order(data_dir):
    (data_dir / "d.csv").write_text("a\n1\n")
    preset = build_preset("data_chain", {"data_input": "d.csv",
                                         "processing_steps": ["analyze", "clean"]})
    assert [(s.step_type, s.params) for s in preset.specs] == [
        ("data.load", {"path": "d.csv"}), ("data.analyze", {}), ("data.clean", {}),
    ]


def test_io_chain_is_file_major_and_collects_every_result(data_dir):
    for name in ("a", "b"):
        (data_dir / name).write_text(name)
    preset = build_preset("io_chain", {"file_operations": ["stat", "checksum"],
                                       "target_files": ["a", "b"]})
    assert [(s.step_type, s.params["path"]) for s in preset.specs] == [
        ("io.stat", "a"), ("io.checksum", "a"), ("io.stat", "b"), ("io.checksum", "b"),
    ]
    assert [s.stage for s in preset.specs] == [0, 1, 2, 3]
    assert preset.result_mode == "all_steps"


@pytest.mark.parametrize(
    ("task_type", "config", "field"),
    [
        ("math_chain", {"numbers": [1]}, "config.operation"),
        ("math_chain", {"operation": "modulo", "numbers": [1]}, "config.operation"),
        ("math_chain", {"operation": "add"}, "config.numbers"),
        ("math_chain", {"operation": "add", "numbers": []}, "config.numbers"),
        ("math_chain", {"operation": "add", "numbers": [1, "2"]}, "config.numbers.1"),
        ("math_chain", {"operation": "add", "numbers": [1], "iterations": 0},
         "config.iterations"),
        ("math_chain", {"operation": "add", "numbers": [1], "iterations": 101},
         "config.iterations"),
        ("math_chain", {"operation": "add", "numbers": [1], "iterations": 1.5},
         "config.iterations"),
        ("math_chain", {"operation": "add", "numbers": [1], "extra": 1}, "config.extra"),
        ("data_chain", {"data_input": "missing.csv", "processing_steps": ["clean"]},
         "config.data_input"),
        ("data_chain", {"data_input": "../x.csv", "processing_steps": ["clean"]},
         "config.data_input"),
        ("data_chain", {"data_input": "x.csv", "processing_steps": ["explode"]},
         "config.processing_steps.0"),
        ("io_chain", {"file_operations": ["delete"], "target_files": ["a"]},
         "config.file_operations.0"),
        ("io_chain", {"file_operations": ["stat"], "target_files": ["/etc/passwd"]},
         "config.target_files.0"),
        ("io_chain", {"file_operations": ["stat"], "target_files": []}, "config.target_files"),
    ],
)
def test_bad_config_names_the_field(data_dir, task_type, config, field):
    with pytest.raises(ParamsInvalid) as info:
        build_preset(task_type, config)
    assert field in info.value.messages(), info.value.messages()


def test_io_chain_step_count_is_bounded(data_dir, settings):
    (data_dir / "a").write_text("a")
    with pytest.raises(ChainError) as info:
        build_preset("io_chain", {"file_operations": ["stat"] * 10, "target_files": ["a"] * 21})
    assert "config.target_files" in info.value.errors
