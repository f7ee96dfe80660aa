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


def test_workflow_nodes_keep_their_kind_badge_condition_and_link():
    from chains.picture import APPROVAL, GATE, MAP, SUBCHAIN, Node

    picture = chain_picture([
        [Node("math.multiply", kind=MAP, badge="× 10,000", condition="when input > 100")],
        [Node("a very long approval step name indeed", status="WAITING", kind=APPROVAL)],
        [Node("run nightly", kind=SUBCHAIN, href="/admin/chains/chain/3/change/")],
    ])
    mapped, gate, sub = picture.boxes
    assert (mapped.kind, mapped.badge, mapped.note) == (MAP, "× 10,000", "when input > 100")
    assert mapped.text_y < mapped.note_y < mapped.y + BOX_H  # two lines inside the node
    assert mapped.badge_x + mapped.badge_w <= mapped.x + BOX_W  # the badge sits on the node
    assert [y for _, y in mapped.stack] == [mapped.y - 8, mapped.y - 4]  # shadows behind it
    assert mapped.title == "1. math.multiply · × 10,000 · when input > 100"
    # A gate: six points, its left and right points where the edges meet it.
    points = [tuple(map(int, p.split(","))) for p in gate.gate_points.split()]
    assert len(points) == 6 and (gate.x, gate.y + BOX_H // 2) in points
    assert (gate.x + BOX_W, gate.y + BOX_H // 2) in points
    assert gate.text_x == gate.x + GATE + 4  # the label clears the slanted side
    assert gate.label.endswith("…") and len(gate.label) == 22 and gate.status == "WAITING"
    assert (sub.kind, sub.href) == (SUBCHAIN, "/admin/chains/chain/3/change/")
    assert len(picture.lines) == 2
    assert picture.height >= BOX_H + 2 * 8  # room for a map node's shadows above it


def test_plain_pairs_are_still_steps():
    picture = chain_picture([[("a", "")]])
    assert picture.boxes[0].kind == "step" and picture.boxes[0].note == ""
    assert picture.boxes[0].text_y == picture.boxes[0].y + BOX_H // 2 + 5
