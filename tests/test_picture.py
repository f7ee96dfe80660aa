"""The chain picture's geometry and the stage-fit check."""
from chains.compatibility import stage_problems
from chains.picture import BOX_H, BOX_W, chain_picture
from chains.presets import StepSpec


def test_stages_left_to_right_parallel_steps_stacked():
    picture = chain_picture([[("a", "")], [("b", "RUNNING"), ("c", "")], [("d", "")]])
    xs = [box.x for box in picture.boxes]
    assert xs[0] < xs[1] == xs[2] < xs[3]
    assert picture.boxes[1].y + BOX_H < picture.boxes[2].y
    assert [box.index for box in picture.boxes] == [0, 1, 2, 3]
    assert len(picture.lines) == 4  # a->b, a->c, b->d, c->d
    assert picture.width >= 3 * BOX_W


def spec(key, stage, **params):
    return StepSpec(key, params, stage)


def test_stage_fit():
    assert stage_problems([spec("math.add", 0, numbers=[1]), spec("math.add", 1),
                           spec("math.multiply", 1), spec("math.add", 2)]) == []
    assert stage_problems([spec("data.load", 0, path="x"), spec("data.clean", 1),
                           spec("flow.wait", 2, seconds=1), spec("data.analyze", 3)]) == []
    problems = stage_problems([spec("data.load", 0, path="x"), spec("math.add", 1)])
    assert problems == ["stage 1: math.add needs a number or a list of numbers, but the stage "
                        "before gives a file"]
    assert stage_problems([spec("io.stat", 0, path="x"), spec("io.stat", 0, path="y"),
                           spec("data.analyze", 1)])[0].startswith("stage 1: data.analyze")
    assert stage_problems([spec("math.add", 0), spec("data.analyze", 1, path="f.csv")]) == []
