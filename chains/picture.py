"""The picture of a chain: stages left to right, parallel steps stacked, as SVG geometry.

Each node has a kind with its own shape: a plain step is a box, a map step a stack of boxes
marked "× each" (or "× N" in a run, once its items are known), an approval a gate (a hexagon)
and a sub-chain a box with a double border that links to its chain. A step's condition is a
second, smaller line on its node."""
from dataclasses import dataclass

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 48, 50, 18, 12
LABEL_CHARS, NOTE_CHARS = 22, 27
# How far a map node's shadow boxes stand out behind it.
STACK = 4
# How far a gate's points stand out from its sides.
GATE = 12

STEP, MAP, APPROVAL, SUBCHAIN = "step", "map", "approval", "subchain"


@dataclass(frozen=True)
class Node:
    """What the picture shows of one step: its label, its status in a run ("" for a chain),
    its kind, a badge ("× each", "× 10"), its condition ("when input > 100") and a link."""

    label: str
    status: str = ""
    kind: str = STEP
    badge: str = ""
    condition: str = ""
    href: str = ""
    title: str = ""


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    label: str
    status: str  # "" for a definition, else the step's status
    index: int
    kind: str = STEP
    badge: str = ""
    note: str = ""
    href: str = ""
    title: str = ""

    @property
    def text_x(self) -> int:
        return self.x + (GATE + 4 if self.kind == APPROVAL else 10)

    @property
    def text_y(self) -> int:
        return self.y + (19 if self.note else BOX_H // 2 + 5)

    @property
    def note_y(self) -> int:
        return self.y + 37

    @property
    def gate_points(self) -> str:
        """The outline of an approval's gate (a hexagon)."""
        x, y, w, h = self.x, self.y, BOX_W, BOX_H
        return " ".join(f"{px},{py}" for px, py in (
            (x + GATE, y), (x + w - GATE, y), (x + w, y + h // 2), (x + w - GATE, y + h),
            (x + GATE, y + h), (x, y + h // 2)))

    @property
    def stack(self) -> list[tuple[int, int]]:
        """The shadow boxes behind a map node, farthest first."""
        return [(self.x + 2 * STACK, self.y - 2 * STACK), (self.x + STACK, self.y - STACK)]

    @property
    def badge_x(self) -> int:
        return self.x + BOX_W - self.badge_w - 6

    @property
    def badge_w(self) -> int:
        return 12 + 6 * len(self.badge)


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


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def chain_picture(stages: list[list[Node | tuple[str, str]]]) -> Picture:
    """`stages` is a list of stages, each a list of its steps' nodes (or (label, status)
    pairs, plain steps)."""
    tallest = max((len(stage) for stage in stages), default=1)
    height = PAD * 2 + tallest * BOX_H + (tallest - 1) * GAP_Y
    boxes: list[list[Box]] = []
    index = 0
    for column, stage in enumerate(stages):
        stage_h = len(stage) * BOX_H + (len(stage) - 1) * GAP_Y
        top = (height - stage_h) // 2
        x = PAD + column * (BOX_W + GAP_X)
        column_boxes = []
        for row, item in enumerate(stage):
            node = item if isinstance(item, Node) else Node(label=item[0], status=item[1])
            full = f"{index + 1}. {node.label}"
            column_boxes.append(Box(
                x, top + row * (BOX_H + GAP_Y), _cut(node.label, LABEL_CHARS), node.status,
                index, kind=node.kind, badge=node.badge, note=_cut(node.condition, NOTE_CHARS),
                href=node.href, title=" · ".join(part for part in (
                    full, node.badge, node.condition, node.title) if part)))
            index += 1
        boxes.append(column_boxes)
    lines = [
        Line(a.x + BOX_W, a.y + BOX_H // 2, b.x, b.y + BOX_H // 2)
        for left, right in zip(boxes, boxes[1:], strict=False) for a in left for b in right
    ]
    width = PAD * 2 + len(stages) * BOX_W + max(0, len(stages) - 1) * GAP_X
    return Picture(width=max(width, 1), height=height,
                   boxes=[box for column in boxes for box in column], lines=lines)
