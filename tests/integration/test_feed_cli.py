"""The feed on the command line: `formation status`, --mqtt on the commands that publish, bad input refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from formation.cli.app import main
from formation.cli.feed import publishing
from formation.config import MqttConfig
from formation.feed import FeedPublisher, TopicKind, Topics, example_payloads
from tests.integration.feed_support import clear_retained, free_port, unique_topics

ROOT = Path(__file__).resolve().parents[2]
SITE = str(ROOT / "examples" / "site.toml")


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Ran]:
    """`formation ARGS` in this process, from an empty folder."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)

    def run(*args: str) -> Ran:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


def _one_line(ran: Ran, code: int = 2) -> str:
    assert ran.returncode == code, ran.stdout + ran.stderr
    lines = [ln for ln in ran.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in ran.stderr, ran.stderr
    return lines[0]


@pytest.fixture
async def published(mqtt_broker: tuple[str, int], tmp_path: Path) -> AsyncIterator[tuple[Topics, Path]]:
    """A line of its own with one example payload of each retained kind on the broker, and a site file naming it."""
    host, port = mqtt_broker
    topics = unique_topics()
    site = tmp_path / "site.toml"
    site.write_text(f'site = "{topics.site}"\nline = "{topics.line}"\n[mqtt]\nhost = "{host}"\nport = {port}\n')
    examples = example_payloads()
    async with FeedPublisher(MqttConfig(host=host, port=port), topics.site, topics.line) as feed:
        feed.publish_cabinet(examples[TopicKind.CABINET])  # type: ignore[arg-type]
        feed.publish_chamber(examples[TopicKind.CHAMBER])  # type: ignore[arg-type]
        feed.publish_rack(examples[TopicKind.RACK])  # type: ignore[arg-type]
        feed.publish_grading(examples[TopicKind.GRADING])  # type: ignore[arg-type]
        assert await feed.wait_connected(5)
        while feed.stats.messages < 5:
            await asyncio.sleep(0.01)
    yield topics, site
    await clear_retained(host, port, topics)


async def test_status_prints_the_retained_tree_of_the_sites_line(
    cli: Callable[..., Ran], published: tuple[Topics, Path]
) -> None:
    topics, site = published
    ran = await asyncio.to_thread(cli, "status", "--site", str(site), "--wait", "0.3")
    assert ran.returncode == 0, ran.stderr
    out = ran.stdout
    assert f"{topics.site} / {topics.line}" in out
    assert "offline" in out  # the publisher left cleanly: its retained status says so
    cab = example_payloads()[TopicKind.CABINET]
    counts = cab.counts  # type: ignore[attr-defined]
    row = next(line for line in out.splitlines() if "cab1" in line)
    assert all(str(n) in row for n in counts.values()) and "4" in row  # 4 channels: 2 running, 1 done, 1 idle
    assert "ageing-1" in out and "45.0" in out and "301" in out
    assert "R07" in out and "10 %" in out
    assert "L2025-03-A" in out and "A 230 (89.8 %)" in out
    assert "did not validate" not in out


def test_status_without_a_broker_fails_on_one_line(cli: Callable[..., Ran]) -> None:
    line = _one_line(cli("status", "--mqtt", f"mqtt://127.0.0.1:{free_port()}", "--wait", "0.2"), code=1)
    assert line.startswith("failed: MQTT broker at mqtt://127.0.0.1:") and "refused" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("status", "--mqtt", "http://broker:1883"), "--mqtt: 'http://broker:1883': the scheme must be mqtt://"),
        (("status", "--mqtt", "mqtt://broker:70000"), "--mqtt"),
        (("status", "--wait", "0"), "--wait: 0 is outside 0.1–60 s"),
        (("status", "--wait", "nan"), "--wait: nan is outside"),
        (("status", "--wait", "inf"), "--wait: inf is outside"),
        (("demo", "--cells", "2", "--mqtt", "mqtt://:1883"), "--mqtt: 'mqtt://:1883': no host"),
        (("grade", "DEMO-LOT", "--rules", "demo-ncm21700", "--mqtt", "tcp://x"), "--mqtt"),
        (
            (
                "run",
                "launch",
                "--foreground",
                "ncm21700-formation",
                "--site",
                SITE,
                "--cabinet",
                "cab1",
                "--channels",
                "1-32",
                "--cells",
                str(ROOT / "examples" / "cells.csv"),
                "--mqtt",
                "mqtt://user:pw@host/path",
            ),
            "a broker URL has no path",
        ),
    ],
)
def test_bad_feed_options_are_refused_before_anything_is_written(
    cli: Callable[..., Ran], tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    line = _one_line(cli(*args))
    assert line.startswith("error: ") and expected in line, line
    assert list(tmp_path.iterdir()) == []  # no database, no demo folder, no report


@pytest.mark.parametrize(
    ("mqtt", "field"),
    [("port = 0", "mqtt.port"), ("interval_s = -1.0", "mqtt.interval_s"), ('password = "x"', "mqtt.password"),
     ("keepalive_s = 0", "mqtt.keepalive_s"), ('tls = true\nca_file = "missing.pem"', "mqtt.ca_file")],
)  # fmt: skip
def test_bad_mqtt_settings_in_the_site_file_are_refused(
    cli: Callable[..., Ran], tmp_path: Path, mqtt: str, field: str
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(f"[mqtt]\n{mqtt}\n")
    line = _one_line(cli("status", "--site", str(site)))
    assert f"{field}:" in line, line


def test_bad_mqtt_environment_is_refused(cli: Callable[..., Ran], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORMATION_MQTT_TLS", "perhaps")
    line = _one_line(cli("status", "--wait", "0.2"))
    assert "FORMATION_MQTT_TLS" in line


async def test_the_commands_say_whether_they_publish(
    mqtt_broker: tuple[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    host, port = mqtt_broker
    topics = unique_topics()
    nobody = free_port()
    cases = [
        (None, "feed: not publishing"),
        (MqttConfig(port=nobody, enabled="auto"), "no MQTT broker answers at mqtt://127.0.0.1:"),
        (MqttConfig(port=nobody, enabled="yes"), "does not answer"),
        (MqttConfig(host=host, port=port, enabled="yes"), f"feed: publishing to mqtt://{host}:{port} under"),
    ]
    for config, said in cases:
        capsys.readouterr()
        async with publishing(config, topics.site, topics.line) as feed:
            assert (feed is None) == (config is None)
        out = capsys.readouterr().out
        assert said in " ".join(out.split()), out
    await clear_retained(host, port, topics)
