"""Repeat blocks: ``tag`` and ``loop`` marks between steps, and their unrolling into the steps a run goes through.

The semantics are aurora-unicycler's ``Tag`` / ``Loop(loop_to, cycle_count)``: a ``loop`` step sends the run back
to the step after its ``tag`` until the block between them has run ``cycle_count`` times in total::

    [[steps]]                      [[steps]]  (charge)         [[steps]]
    kind = "tag"                   [[steps]]  (discharge)      kind = "loop"
    tag = "cycle"                                              loop_to = "cycle"
                                                               cycle_count = 3

Marks are not steps: they have no id and run nothing. :func:`unroll` turns the layout into the steps as run (the
block three times) and the cycle number of each: iterations are numbered 1, 2, … across the whole recipe (a
second block goes on from where the first stopped), steps outside any block are cycle 0. Blocks do not nest.
Errors are recorded as ``(field path, reason)`` pairs, as everywhere in the recipe parser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

#: Most cycles one repeat block may run: more is a typo (a lifetime test belongs to a cycling rig, not this line).
MAX_CYCLE_COUNT = 1000

TAG_KEYS = ("kind", "tag")
LOOP_KEYS = ("kind", "loop_to", "cycle_count")


@dataclass(frozen=True, slots=True)
class TagMark:
    """Where a repeat block starts (the step after the mark); ``tag`` names it for its ``loop``."""

    tag: str

    kind: ClassVar[str] = "tag"

    def to_canonical(self) -> dict[str, Any]:
        """The canonical JSON form."""
        return {"kind": self.kind, "tag": self.tag}


@dataclass(frozen=True, slots=True)
class LoopMark:
    """The end of the block started by ``loop_to``: the block runs ``cycle_count`` times in total."""

    loop_to: str
    cycle_count: int

    kind: ClassVar[str] = "loop"

    def to_canonical(self) -> dict[str, Any]:
        """The canonical JSON form."""
        return {"kind": self.kind, "loop_to": self.loop_to, "cycle_count": self.cycle_count}


FlowMark = TagMark | LoopMark
_S = TypeVar("_S")


def read_mark(raw: dict[str, Any], path: str, errors: list[tuple[str, str]]) -> FlowMark | None:
    """A ``tag`` or ``loop`` mark from its raw table (``raw["kind"]`` is one of them); None when refused."""
    kind = raw["kind"]
    allowed = TAG_KEYS if kind == "tag" else LOOP_KEYS
    before = len(errors)
    for key in raw:
        if key not in allowed:
            errors.append((f"{path}.{key}", f"unknown key for a {kind} mark (expected one of: {', '.join(allowed)})"))
    if kind == "tag":
        tag = raw.get("tag")
        if not isinstance(tag, str) or not tag.strip():
            errors.append((f"{path}.tag", 'missing or empty: a tag mark names its block (tag = "cycle")'))
            return None
        return TagMark(tag.strip()) if len(errors) == before else None
    loop_to = raw.get("loop_to")
    if not isinstance(loop_to, str) or not loop_to.strip():
        errors.append((f"{path}.loop_to", "missing or empty: the tag whose block this loop repeats"))
    count = raw.get("cycle_count")
    if "cycle_count" not in raw:
        errors.append((f"{path}.cycle_count", "missing: how many times the block runs in total"))
    elif not isinstance(count, int) or isinstance(count, bool):
        errors.append((f"{path}.cycle_count", f"expected a whole number of cycles, got {count!r}"))
    elif not 1 <= count <= MAX_CYCLE_COUNT:
        errors.append((f"{path}.cycle_count", f"{count} is outside 1 … {MAX_CYCLE_COUNT} (the total number of cycles)"))
    if len(errors) > before:
        return None
    assert isinstance(loop_to, str) and isinstance(count, int)
    return LoopMark(loop_to.strip(), count)


def check_blocks(layout: Sequence[tuple[str, object]], errors: list[tuple[str, str]]) -> None:
    """Refuse loops that cannot run: to an unknown or later tag, around no step, inside another block; and
    duplicate tags. ``layout`` is ``(path, step or mark)`` in file order."""
    tags: dict[str, tuple[int, str]] = {}
    used: set[str] = set()
    for pos, (path, item) in enumerate(layout):
        if isinstance(item, TagMark):
            if item.tag in tags:
                errors.append((f"{path}.tag", f"duplicate tag {item.tag!r} (first at {tags[item.tag][1]})"))
                continue
            tags[item.tag] = (pos, path)
        elif isinstance(item, LoopMark):
            start = tags.get(item.loop_to)
            if start is None:
                known = ", ".join(repr(t) for t in tags) or "none"
                errors.append((f"{path}.loop_to", f"no tag {item.loop_to!r} before this loop (tags: {known})"))
                continue
            if item.loop_to in used:
                errors.append((f"{path}.loop_to", f"tag {item.loop_to!r} already ends at an earlier loop"))
                continue
            inner = [p for p, other in layout[start[0] + 1 : pos] if not isinstance(other, TagMark | LoopMark)]
            if not inner:
                errors.append((path, f"this loop repeats nothing: no step between tag {item.loop_to!r} and it"))
                continue
            nested = [p for p, other in layout[start[0] + 1 : pos] if isinstance(other, LoopMark)]
            if nested:
                errors.append((path, "loops do not nest: this block contains another loop"))
                continue
            used.add(item.loop_to)


def unroll(layout: Sequence[_S | FlowMark]) -> tuple[tuple[_S, ...], tuple[int, ...]]:
    """The steps as run (each block repeated) and their cycle numbers; the layout passed :func:`check_blocks`."""
    tag_pos = {item.tag: pos for pos, item in enumerate(layout) if isinstance(item, TagMark)}
    block_of: dict[int, LoopMark] = {}  # position of a block's first item -> its loop
    loop_pos: dict[str, int] = {}
    for pos, item in enumerate(layout):
        if isinstance(item, LoopMark):
            block_of[tag_pos[item.loop_to] + 1] = item
            loop_pos[item.loop_to] = pos
    steps: list[_S] = []
    cycles: list[int] = []
    cycle = 0
    pos = 0
    while pos < len(layout):
        loop = block_of.get(pos)
        if loop is None:
            item = layout[pos]
            if not isinstance(item, TagMark | LoopMark):
                steps.append(item)
                cycles.append(0)
            pos += 1
            continue
        end = loop_pos[loop.loop_to]
        body = [item for item in layout[pos:end] if not isinstance(item, TagMark | LoopMark)]
        for _ in range(loop.cycle_count):
            cycle += 1
            steps.extend(body)
            cycles.extend([cycle] * len(body))
        pos = end + 1
    return tuple(steps), tuple(cycles)
