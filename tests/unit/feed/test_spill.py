"""EventQueue: FIFO across memory and the spill file, nothing dropped, the file reset once read back."""

from __future__ import annotations

import pytest

from formation.feed.spill import EventQueue


def _drain(q: EventQueue, window: int) -> list[bytes]:
    out: list[bytes] = []
    while batch := q.peek(window):
        out.extend(batch)
        q.pop(len(batch))
    return out


def test_events_beyond_the_memory_cap_spill_to_disk_and_come_back_in_order() -> None:
    q = EventQueue(memory_cap=5)
    events = [f'{{"n":{i}}}'.encode() for i in range(23)]
    for e in events:
        q.put(e)
    assert len(q) == 23 and q.spilled == 18 and q.spilled_total == 18
    assert q.peek(3) == events[:3]
    assert _drain(q, 4) == events
    assert len(q) == 0 and q.spilled == 0 and q.lost == 0
    q.close()


def test_new_events_queue_behind_spilled_ones_while_draining() -> None:
    q = EventQueue(memory_cap=2)
    for i in range(5):
        q.put(b"a%d" % i)
    q.pop(len(q.peek(1)))  # a0 delivered; a2 comes back from disk
    q.put(b"b0")  # must wait behind a3, a4 on disk
    assert _drain(q, 2) == [b"a1", b"a2", b"a3", b"a4", b"b0"]
    for i in range(4):  # the file was emptied: a second outage spills from its start again
        q.put(b"c%d" % i)
    assert q.spilled == 2
    assert _drain(q, 3) == [b"c0", b"c1", b"c2", b"c3"]
    q.close()


def test_a_peeked_window_stays_until_popped() -> None:
    q = EventQueue(memory_cap=3)
    for i in range(3):
        q.put(b"%d" % i)
    assert q.peek(2) == [b"0", b"1"]
    assert q.peek(2) == [b"0", b"1"]  # not acknowledged: sent again
    q.pop(2)
    assert q.peek(5) == [b"2"]


def test_refuses_what_would_break_the_line_format() -> None:
    with pytest.raises(ValueError, match="newline"):
        EventQueue().put(b"a\nb")
    with pytest.raises(ValueError, match="memory_cap"):
        EventQueue(0)
