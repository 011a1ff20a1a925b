"""Property tests (hypothesis) of the simulated instruments' SCPI parsers: any line, built from the command table's
headers and arbitrary parameters or from arbitrary text, is answered or queues an SCPI error; the dispatcher never
raises, never takes long (a per-example deadline) and never answers more than a bounded reply. Counts and times:
bench/RESULTS.md."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formation.errors import ScpiError
from formation.sim.cells import PRESETS, CellPopulation
from formation.sim.chamber import ChamberModel
from formation.sim.chamber_commands import COMMAND_TABLE as CHAMBER_TABLE
from formation.sim.chamber_commands import ChamberCommands, parse_scan_list
from formation.sim.commands import COMMAND_TABLE, CabinetCommands
from formation.sim.cycler import CabinetModel
from formation.sim.scpi import MAX_LIST_ITEMS, Dispatcher, parse_channel_list

#: FORMATION_FUZZ_SCALE=20 multiplies every example count (a longer soak; bench/RESULTS.md).
SCALE = int(os.environ.get("FORMATION_FUZZ_SCALE", "1"))
FAST = settings(
    max_examples=SCALE * 150,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
#: The longest reply a line may get: a full cabinet's status list is ~6 bytes per cell id in a maximal list.
MAX_REPLY_CHARS = 8 * MAX_LIST_ITEMS

PARAMS = st.one_of(
    st.sampled_from(
        ["0", "1", "-1", "inf", "-inf", "nan", "1e308", "1e309", "99999999999999999999999", "1.5", "1e-300", "0x10",
         "1_0", "\u0663", "", " ", "CHARGE", "REST", "DISCHARGE", "VOLT_GE", "AT", "NEXT", "FAIL", "OPEN", "CLOSED",
         "TC", "K", "DEF", "MIN", "MAX", '"q"', "#12ab", "(@1)", "(@101)", "(@301:308)", "(@1:10000000)", "(@1:65535)",
         "(@65535:1)", "(@0)", "(@)", "(@a)", "(@1:2,3:4)", "(@101:120)", "(@201)", "(@1,1,1)"]
    ),
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
)  # fmt: skip


def _lines(table: tuple) -> st.SearchStrategy[str]:
    headers = [spec.short for spec in table] + [spec.header for spec in table]
    header = st.sampled_from(headers).map(lambda h: h.split("|")[0]) | st.text(max_size=10)
    command = st.builds(lambda h, ps: f"{h} {','.join(ps)}".strip(), header, st.lists(PARAMS, max_size=9))
    return st.lists(command, min_size=1, max_size=3).map(";".join) | st.text(max_size=80)


@pytest.fixture(scope="module")
def cabinet() -> Dispatcher:
    cells = CellPopulation(PRESETS["ncm21700-5ah"], 16, seed=3, initial_soc=0.3)
    model = CabinetModel(16, cells, start_time_s=1_700_000_000.0)
    dispatcher = Dispatcher(COMMAND_TABLE, CabinetCommands(model))
    for k in range(1, 17):
        dispatcher.execute(f"CELL:DEF {k},(@{100 + k})")
    return dispatcher


@pytest.fixture(scope="module")
def chamber() -> Dispatcher:
    return Dispatcher(CHAMBER_TABLE, ChamberCommands(ChamberModel(start_time_s=1_700_000_000.0)))


def _answers_within_bounds(dispatcher: Dispatcher, line: str) -> None:
    reply = dispatcher.execute(line)  # any exception here fails the property
    assert reply is None or (isinstance(reply, str) and len(reply) <= MAX_REPLY_CHARS), len(reply or "")
    assert len(dispatcher.target.errors) <= 32  # the queue is bounded (overflow is -350)


@FAST
@given(line=_lines(COMMAND_TABLE))
def test_cabinet_lines_are_answered_or_queue_an_error(cabinet: Dispatcher, line: str) -> None:
    _answers_within_bounds(cabinet, line)


@FAST
@given(line=_lines(CHAMBER_TABLE))
def test_chamber_daq_lines_are_answered_or_queue_an_error(chamber: Dispatcher, line: str) -> None:
    _answers_within_bounds(chamber, line)


LISTS = st.one_of(
    PARAMS,
    st.lists(
        st.tuples(st.integers(-5, 10**9), st.integers(-5, 10**9)).map(lambda t: f"{t[0]}:{t[1]}") | PARAMS, max_size=6
    ).map(lambda items: "(@" + ",".join(items) + ")"),
)


@FAST
@given(text=LISTS)
def test_channel_lists_are_bounded_before_expanding(text: str) -> None:
    try:
        ids = parse_channel_list(text)
    except ScpiError as exc:
        assert exc.code in (-222, -223, -224)
        return
    assert len(ids) <= MAX_LIST_ITEMS and all(1 <= i <= 65535 for i in ids)


@FAST
@given(text=LISTS)
def test_daq_scan_lists_name_wired_channels_or_an_error(text: str) -> None:
    wired = {101: 0, 102: 1, 103: 2, 104: 3}
    try:
        indices = parse_scan_list(text, wired)
    except ScpiError as exc:
        assert exc.code in (-222, -223, -224)
        return
    assert all(i in wired.values() for i in indices)
