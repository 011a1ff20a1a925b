"""The wall display's server over real TCP, fed through the real Mosquitto: routes, the event stream, a broker that
is not there; and `formation display`'s refusals of bad input (one line, exit 2)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiomqtt
import pytest

from formation.cli.app import main
from formation.feed import OrchestratorStatus, Topics, example_payloads
from formation.feed.display import WallDisplay
from formation.feed.topics import TopicKind

STARTED = datetime.now(UTC)


async def _request(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to 127.0.0.1:port; status, headers (lower-case names) and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


async def _next_event(reader: asyncio.StreamReader) -> tuple[str, dict]:
    """The next named server-sent event (comments and retry lines skipped)."""
    name, data = "", ""
    while True:
        line = (await asyncio.wait_for(reader.readline(), 5)).decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and name:
            return name, json.loads(data)


@pytest.fixture
async def line(mqtt_broker: tuple[str, int]) -> AsyncIterator[tuple[Topics, aiomqtt.Client]]:
    """A unique site's topics and a connected client; every retained topic it used is cleared afterwards."""
    host, port = mqtt_broker
    topics = Topics(f"disp-{uuid.uuid4().hex[:8]}", "l1")
    async with aiomqtt.Client(host, port) as client:
        yield topics, client
        for topic in (topics.status(), topics.cabinet("cab1"), topics.channel("cab1", 3), topics.chamber("ageing-1")):
            await client.publish(topic, b"", qos=1, retain=True)


async def test_routes_snapshot_and_pushed_patches(
    mqtt_broker: tuple[str, int], line: tuple[Topics, aiomqtt.Client]
) -> None:
    topics, client = line
    examples = example_payloads()
    status = OrchestratorStatus(state="online", version="t", started=STARTED, interval_s=2.0)
    await client.publish(topics.status(), status.to_json(), qos=1, retain=True)
    await client.publish(topics.cabinet("cab1"), examples[TopicKind.CABINET].to_json(), qos=1, retain=True)
    await client.publish(topics.chamber("ageing-1"), examples[TopicKind.CHAMBER].to_json(), qos=1, retain=True)
    host, port = mqtt_broker
    async with WallDisplay(topics.site, topics.line, mqtt_host=host, mqtt_port=port, port=0) as wall:
        assert wall.url == f"http://127.0.0.1:{wall.server.port}/"
        assert await wall.wait_connected(5.0)
        for _ in range(50):  # the retained messages arrive right after the subscription
            if "cab1" in wall.view.cabinets and "ageing-1" in wall.view.chambers:
                break
            await asyncio.sleep(0.05)

        code, headers, body = await _request(wall.server.port, "GET", "/")
        assert code == 200 and headers["content-type"] == "text/html; charset=utf-8"
        assert "connect-src 'self'" in headers["content-security-policy"]
        html = body.decode()
        # Nothing from elsewhere: no external script, style, image or font.
        assert "<script src" not in html and "<link" not in html and "@import" not in html and "url(" not in html
        assert 'new EventSource("/events")' in html

        code, headers, body = await _request(wall.server.port, "GET", "/state.json?x=1")
        state = json.loads(body)
        assert code == 200 and headers["content-type"] == "application/json"
        assert state["site"] == topics.site and state["status"]["interval_s"] == 2.0
        assert state["cabinets"]["cab1"]["state"] == ["running", "running", "done", "idle"]
        assert state["chambers"]["ageing-1"]["setpoint_c"] == 45.0 and state["health"]["stale"] is False

        assert (await _request(wall.server.port, "GET", "/nope"))[0] == 404
        assert (await _request(wall.server.port, "GET", "/../etc/passwd"))[0] == 404
        code, headers, _ = await _request(wall.server.port, "POST", "/state.json")
        assert code == 405 and headers["allow"] == "GET, HEAD"
        code, headers, body = await _request(wall.server.port, "HEAD", "/")
        assert code == 200 and body == b"" and int(headers["content-length"]) > 1000

        reader, writer = await asyncio.open_connection("127.0.0.1", wall.server.port)
        writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"Content-Type: text/event-stream" in head
        name, snap = await _next_event(reader)
        assert name == "snapshot" and snap["cabinets"]["cab1"]["channels"] == [1, 2, 3, 4]
        assert wall.server.streams == 1

        channel = examples[TopicKind.CHANNEL].model_copy(update={"state": "faulted", "ts": datetime.now(UTC)})
        await client.publish(topics.channel("cab1", 3), channel.to_json(), qos=1, retain=True)
        for _ in range(20):  # health ticks come every second; the channel's patch comes at once
            name, patch = await _next_event(reader)
            assert name == "patch"
            if "cabinets" in patch:
                break
        assert patch["cabinets"]["cab1"]["state"] == ["running", "running", "faulted", "idle"]
        writer.close()
        await writer.wait_closed()
    assert wall.server.streams == 0


async def test_a_broker_that_is_not_there_makes_the_page_stale_and_the_display_keeps_serving() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    async with WallDisplay("s", "l", mqtt_host="127.0.0.1", mqtt_port=dead_port, port=0) as wall:
        assert not await wall.wait_connected(0.5)
        code, _, body = await _request(wall.server.port, "GET", "/state.json")
        health = json.loads(body)["health"]
        assert code == 200 and health["stale"] is True
        assert health["reason"].startswith(f"display: lost broker 127.0.0.1:{dead_port}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "error: --port: 70000 is not a TCP port (0-65535; 0 picks a free one)"),
        (["--port", "-1"], "error: --port: -1 is not a TCP port (0-65535; 0 picks a free one)"),
        (["--mqtt", "http://broker"], "error: --mqtt: 'http://broker': the scheme must be mqtt:// or mqtts://"),
        (
            ["--mqtt", "mqtt://broker:99999"],
            "error: --mqtt: 'mqtt://broker:99999': the port is not a number in 1–65535",
        ),
        (["--site-name", "a/b"], "error: --site-name: 'a/b' holds '/', which cannot be part of an MQTT topic level"),
        (["--line", "#"], "error: --line: '#' holds '#', which cannot be part of an MQTT topic level"),
        (["--host", " "], "error: --host: an empty address"),
        (["--site", "missing.toml"], "error: "),
    ],
    ids=["port-high", "port-negative", "url-scheme", "url-port", "site-slash", "line-wildcard", "host-empty", "site"],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["display", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith(message), err


def test_a_port_in_use_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["display", "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: --port: cannot serve the display on 127.0.0.1:{port}: address already in use\n"
