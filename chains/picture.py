"""The picture of a chain: stages left to right, parallel steps stacked, as SVG geometry."""
from dataclasses import dataclass

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 44, 50, 14, 10


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    label: str
    status: str  # "" for a definition, else the step's status
    index: int

    @property
    def text_x(self) -> int:
        return self.x + 10

    @property
    def text_y(self) -> int:
        return self.y + BOX_H // 2 + 5


@dataclass(frozen=True)
class Line:
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True)
class Picture:
    width: int
    height: int
    boxes: list[Box]
    lines: list[Line]
    box_w: int = BOX_W
    box_h: int = BOX_H


def chain_picture(stages: list[list[tuple[str, str]]]) -> Picture:
    """`stages` is a list of stages, each a list of (label, status) for its steps."""
    tallest = max((len(stage) for stage in stages), default=1)
    height = PAD * 2 + tallest * BOX_H + (tallest - 1) * GAP_Y
    boxes: list[list[Box]] = []
    index = 0
    for column, stage in enumerate(stages):
        stage_h = len(stage) * BOX_H + (len(stage) - 1) * GAP_Y
        top = (height - stage_h) // 2
        x = PAD + column * (BOX_W + GAP_X)
        column_boxes = []
        for row, (label, status) in enumerate(stage):
            text = label if len(label) <= 22 else label[:21] + "…"
            column_boxes.append(Box(x, top + row * (BOX_H + GAP_Y), text, status, index))
            index += 1
        boxes.append(column_boxes)
    lines = [
        Line(a.x + BOX_W, a.y + BOX_H // 2, b.x, b.y + BOX_H // 2)
        for left, right in zip(boxes, boxes[1:], strict=False) for a in left for b in right
    ]
    width = PAD * 2 + len(stages) * BOX_W + max(0, len(stages) - 1) * GAP_X
    return Picture(width=max(width, 1), height=height,
                   boxes=[box for column in boxes for box in column], lines=lines)
