"""ScpiSession: exact exchanges on a scripted resource, and a few on real pyvisa-py over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from formation.errors import InstrumentDisconnected, InstrumentProtocolError, InstrumentTimeout, ScpiError
from formation.instruments.scpi import ScpiSession
from formation.instruments.scripted import DROP, TIMEOUT, Late, ScriptedInstrument, ScriptMismatch

RESOURCE = "TCPIP0::scripted::5025::SOCKET"


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t.name for t in set(threading.enumerate()) - before if t.name.startswith("scpi-")]
    assert not leaked, f"session worker threads leaked: {leaked}"


def scripted(inst: ScriptedInstrument, **kw: object) -> ScpiSession:
    return ScpiSession(
        RESOURCE, timeout_s=0.2, name="cab1", resource_factory=inst.open, backoff_s=(0.0, 0.0, 0.0), **kw
    )


async def test_query_and_write_send_exact_commands() -> None:
    inst = ScriptedInstrument([("*IDN?", "Formation,BT2200-SIM,0001,1.0"), ("*CLS", None), ("*OPC?", "1")])
    async with scripted(inst) as s:
        assert s.is_open
        assert await s.query("*IDN?") == "Formation,BT2200-SIM,0001,1.0"
        await s.write("*CLS")
        assert await s.query("*OPC?") == "1"
    assert not s.is_open
    inst.assert_done()
    assert inst.sent == ["*IDN?", "*CLS", "*OPC?"]


async def test_unexpected_command_fails_the_test() -> None:
    inst = ScriptedInstrument([("*IDN?", "x,y,z,1")])
    async with scripted(inst) as s:
        with pytest.raises(ScriptMismatch, match=r"expected '\*IDN\?'"):
            await s.query("*ESR?")
    assert inst.failures


async def test_check_errors_drains_the_queue_until_no_error() -> None:
    inst = ScriptedInstrument(
        [
            ("SYST:ERR?", '-113,"Undefined header"'),
            ("SYST:ERR?", '-224,"Illegal parameter value"'),
            ("SYST:ERR?", '+0,"No error"'),
        ]
    )
    async with scripted(inst) as s:
        errors = await s.check_errors("FOO:BAR 1")
    inst.assert_done()
    assert [(e.code, e.scpi_message, e.command) for e in errors] == [
        (-113, "Undefined header", "FOO:BAR 1"),
        (-224, "Illegal parameter value", "FOO:BAR 1"),
    ]
    assert errors[0].cabinet == "cab1" and errors[0].resource == RESOURCE


async def test_raise_on_errors_raises_the_first_with_code_message_and_command() -> None:
    inst = ScriptedInstrument(
        [
            ("SYST:ERR?", '+0,"No error"'),
            ("SYST:ERR?", '-221,"Settings conflict"'),
            ("SYST:ERR?", '-350,"Queue overflow"'),
            ("SYST:ERR?", '+0,"No error"'),
        ]
    )
    async with scripted(inst) as s:
        await s.raise_on_errors("CELL:ENAB (@1001),1")  # empty queue: no error
        with pytest.raises(ScpiError) as info:
            await s.raise_on_errors("CELL:ENAB (@1001),2")
    inst.assert_done()
    assert (info.value.code, info.value.scpi_message, info.value.command) == (
        -221,
        "Settings conflict",
        "CELL:ENAB (@1001),2",
    )
    assert [e.code for e in info.value.others] == [-350]  # type: ignore[attr-defined]


async def test_unparseable_error_reply_is_a_protocol_error() -> None:
    inst = ScriptedInstrument([("SYST:ERR?", "3.41")])
    async with scripted(inst) as s:
        with pytest.raises(InstrumentProtocolError, match="SYST:ERR"):
            await s.check_errors()


async def test_timeout_raises_and_a_late_reply_never_answers_the_next_query() -> None:
    inst = ScriptedInstrument(
        [("MEAS:CELL:VOLT? (@1001)", Late("3.41237")), ("*IDN?", "Formation,BT2200-SIM,0001,1.0")]
    )
    async with scripted(inst) as s:
        with pytest.raises(InstrumentTimeout) as info:
            await s.query("MEAS:CELL:VOLT? (@1001)")
        assert (info.value.command, info.value.cabinet) == ("MEAS:CELL:VOLT? (@1001)", "cab1")
        # The late voltage sits on the old connection; the session resynchronised on a new one.
        assert await s.query("*IDN?") == "Formation,BT2200-SIM,0001,1.0"
        assert (s.timeouts, s.reconnects, inst.opens) == (1, 1, 2)
    inst.assert_done()


async def test_timed_out_query_is_not_retried() -> None:
    inst = ScriptedInstrument([("STAT:CELL:REP? (@1001)", TIMEOUT), ("STAT:CELL:REP? (@1001)", "2")])
    async with scripted(inst) as s:
        with pytest.raises(InstrumentTimeout):
            await s.query("STAT:CELL:REP? (@1001)")
        assert await s.query("STAT:CELL:REP? (@1001)") == "2"
    inst.assert_done()


async def test_disconnect_during_a_query_reconnects_and_retries_once() -> None:
    inst = ScriptedInstrument([("DATA:LOG:NEXT?", DROP), ("DATA:LOG:NEXT?", "42")])
    async with scripted(inst) as s:
        assert await s.query("DATA:LOG:NEXT?") == "42"
        assert (s.reconnects, s.timeouts, inst.opens) == (1, 0, 2)
    inst.assert_done()


async def test_a_second_disconnect_is_raised() -> None:
    inst = ScriptedInstrument([("DATA:LOG:NEXT?", DROP), ("DATA:LOG:NEXT?", DROP)])
    async with scripted(inst) as s:
        with pytest.raises(InstrumentDisconnected, match="DATA:LOG:NEXT"):
            await s.query("DATA:LOG:NEXT?")
    inst.assert_done()


async def test_query_without_retry_raises_disconnected_then_recovers() -> None:
    inst = ScriptedInstrument([("CELL:INIT (@1001);*OPC?", DROP), ("*CLS", None)])
    async with scripted(inst) as s:
        with pytest.raises(InstrumentDisconnected):
            await s.query("CELL:INIT (@1001);*OPC?", retry=False)
        await s.write("*CLS")  # sent on a fresh connection
        assert s.reconnects == 1
    inst.assert_done()


async def test_write_on_a_link_closed_before_sending_goes_out_on_a_new_connection() -> None:
    inst = ScriptedInstrument([("*CLS", DROP), ("*RST", None)])
    async with scripted(inst) as s:
        await s.write("*CLS")  # the instrument hangs up after it
        await s.write("*RST")  # the probe sees the closed link before sending: safe to send on a new one
        assert s.reconnects == 1
    inst.assert_done()
    assert inst.sent == ["*CLS", "*RST"]


async def test_reconnect_backoff_is_bounded() -> None:
    inst = ScriptedInstrument([("*OPC?", "1")])
    async with scripted(inst) as s:
        inst.refuse_opens = 2
        await s.reconnect()  # third attempt succeeds
        assert s.reconnects == 1
        inst.refuse_opens = 10
        with pytest.raises(InstrumentDisconnected, match="after 3 attempts"):
            await s.reconnect()
        assert inst.refuse_opens == 7
        inst.refuse_opens = 0
        assert await s.query("*OPC?") == "1"  # the next exchange reconnects
    inst.assert_done()


async def test_open_failure_is_disconnected_and_leaves_no_thread() -> None:
    inst = ScriptedInstrument(refuse_opens=1)
    s = scripted(inst)
    with pytest.raises(InstrumentDisconnected) as info:
        await s.open()
    assert info.value.resource == RESOURCE
    assert not s.is_open
    with pytest.raises(InstrumentDisconnected, match="not open"):
        await s.query("*IDN?")


async def test_exchanges_are_atomic_under_concurrency() -> None:
    inst = ScriptedInstrument([(f"Q{i}?", str(i)) for i in range(20)])
    async with scripted(inst) as s:
        replies = await asyncio.gather(*(s.query(f"Q{i}?") for i in range(20)))
    assert replies == [str(i) for i in range(20)]
    inst.assert_done()


async def test_non_ascii_reply_is_a_protocol_error() -> None:
    inst = ScriptedInstrument([("*IDN?", b"\xff\xfe\n")])
    async with scripted(inst) as s:
        with pytest.raises(InstrumentProtocolError, match="ASCII"):
            await s.query("*IDN?")


def block(payload: bytes) -> bytes:
    """An IEEE 488.2 definite-length block with its trailing newline."""
    size = str(len(payload)).encode()
    return b"#" + str(len(size)).encode() + size + payload + b"\n"


@pytest.mark.parametrize(
    "payload",
    [b"", b"1,1001,1,1,0,0,3.4,1,0,0,25,0\n", b"a\nb\n" * 60, b"\n" * 12_345],
    ids=["empty", "one-row", "three-digit", "five-digit"],
)
async def test_query_block_reads_exact_length_with_newlines(payload: bytes) -> None:
    inst = ScriptedInstrument([("DATA:LOG? 1,100", block(payload)), ("*OPC?", "1")])
    async with scripted(inst) as s:
        assert await s.query_block("DATA:LOG? 1,100") == payload
        assert await s.query("*OPC?") == "1"  # nothing of the block is left over
        assert inst.opens == 1
    inst.assert_done()


def test_empty_block_is_hash_one_zero() -> None:
    assert block(b"") == b"#10\n"


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"3.41\n", "block header"),
        (b"#0abc\n", "block header"),
        (b"#2x1a\n", "block length"),
        (b"#13abcX", "newline"),
    ],
)
async def test_malformed_block_is_refused_and_resynchronised(raw: bytes, match: str) -> None:
    inst = ScriptedInstrument([("DATA:LOG? 1,100", raw), ("*OPC?", "1")])
    async with scripted(inst) as s:
        with pytest.raises(InstrumentProtocolError, match=match) as info:
            await s.query_block("DATA:LOG? 1,100")
        assert info.value.command == "DATA:LOG? 1,100"
        assert await s.query("*OPC?") == "1"
        assert inst.opens == 2
    inst.assert_done()


# -- real pyvisa-py over a loopback socket (the production transport; no simulator needed) --------


Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def line_server(handler: Handler) -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A tiny line server on 127.0.0.1: ``handler(line, writer)`` per received line."""
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while line := await reader.readline():
                await handler(line.strip(), writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], writers
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


async def test_real_socket_block_with_newlines_and_stall_resync() -> None:
    payload = b"".join(b"%d,1001,1,1,0,0,3.4,1.0,0,0,25,0\n" % i for i in range(1, 2001))
    stall = asyncio.Event()

    async def handler(line: bytes, writer: asyncio.StreamWriter) -> None:
        if line == b"DATA:LOG? 1,2000":
            size = str(len(payload)).encode()
            writer.write(b"#" + str(len(size)).encode() + size + payload + b"\n")
        elif line == b"SLOW?":
            await stall.wait()  # answered only after the client gave up
            writer.write(b"stale\n")
        elif line == b"*IDN?":
            writer.write(b"Formation,LOOP,1,1\n")
        await writer.drain()

    async with line_server(handler) as (port, _):
        async with ScpiSession(f"TCPIP0::127.0.0.1::{port}::SOCKET", timeout_s=0.3, name="loop") as s:
            assert await s.query_block("DATA:LOG? 1,2000") == payload
            with pytest.raises(InstrumentTimeout):
                await s.query("SLOW?")
            stall.set()
            assert await s.query("*IDN?") == "Formation,LOOP,1,1"
            assert (s.timeouts, s.reconnects) == (1, 1)
        stall.set()


async def test_real_socket_closed_by_the_instrument_is_survived() -> None:
    async def handler(line: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"%d\n" % len(line))
        await writer.drain()

    async with (
        line_server(handler) as (port, writers),
        ScpiSession(f"TCPIP0::127.0.0.1::{port}::SOCKET", timeout_s=0.5, name="loop") as s,
    ):
        assert await s.query("ABC?") == "4"
        writers[0].close()
        await writers[0].wait_closed()
        assert await s.query("ABCDE?") == "6"
        assert (s.reconnects, s.timeouts) == (1, 0)


async def test_real_socket_refused_open_is_disconnected() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(InstrumentDisconnected):
        async with ScpiSession(f"TCPIP0::127.0.0.1::{port}::SOCKET", timeout_s=0.3):
            pass
