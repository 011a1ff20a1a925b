"""Helpers for the feed tests: a line name of their own, the retained tree as a late subscriber sees it, clean-up,
and a private mosquitto on a port the test owns."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from formation.clock import ScaledClock
from formation.config import CabinetConfig, ChamberSite, MqttConfig
from formation.feed import FeedPublisher
from formation.feed.topics import Topics
from formation.orchestrator.cabinet import CabinetSupervisor
from formation.orchestrator.chamber_loop import open_chamber_loop
from formation.orchestrator.inputs import CellEntry
from formation.orchestrator.job import assign_cells, run_job
from formation.recipes import Recipe, loads_recipe
from formation.sim.plant import CabinetSpec, ChamberSpec, SimulatedPlant
from formation.store import Store
from tests.conftest import REQUIRE_SERVICES


def unique_topics() -> Topics:
    """A site/line nobody else publishes under, so retained topics of other tests never mix in."""
    return Topics(f"t-{uuid.uuid4().hex[:10]}", "l1")


@dataclass
class Heard:
    """Messages heard on a tree: the latest per topic (payload, retain flag), the retained ones as delivered on
    subscribing, and when each topic was first heard (monotonic s)."""

    messages: dict[str, tuple[bytes, bool]] = field(default_factory=dict)
    retained: dict[str, bytes] = field(default_factory=dict)
    first_at: dict[str, float] = field(default_factory=dict)
    log: list[tuple[str, bytes]] = field(default_factory=list)


async def listen(host: str, port: int, pattern: str, wait_s: float, **client_kw: object) -> Heard:
    """Subscribe to ``pattern`` and keep everything heard for ``wait_s``."""
    heard = Heard()
    async with aiomqtt.Client(host, port, **client_kw) as client:  # type: ignore[arg-type]
        await client.subscribe(pattern, qos=1)

        async def run() -> None:
            async for m in client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else b""
                topic = str(m.topic)
                heard.messages[topic] = (payload, m.retain)
                if m.retain and topic not in heard.retained:
                    heard.retained[topic] = payload
                heard.first_at.setdefault(topic, time.monotonic())
                heard.log.append((topic, payload))

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run(), wait_s)
    return heard


async def clear_retained(host: str, port: int, topics: Topics) -> None:
    """Remove every retained topic of the line (an empty retained payload deletes it)."""
    heard = await listen(host, port, topics.all, 0.5)
    async with aiomqtt.Client(host, port) as client:
        for topic, payload in heard.retained.items():
            if payload:
                await client.publish(topic, b"", qos=1, retain=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateBroker:
    """A mosquitto of the test's own on ``port``: started, stopped (SIGTERM) and started again at will."""

    def __init__(self, tmp: Path, port: int | None = None, *, persistence: bool = False) -> None:
        self.port = port or free_port()
        self.conf = tmp / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        if persistence:
            # Started as root, mosquitto drops to user "mosquitto", which may not write here: stay who we are.
            lines += ["persistence true", f"persistence_location {tmp}/", f"user {getpass.getuser()}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start and wait until it accepts connections; the monotonic time it did."""
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return time.monotonic()
            time.sleep(0.01)
        raise RuntimeError(f"private mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        """SIGTERM and wait (mosquitto saves its persistence file on the way out)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    """A private mosquitto (persistence on, so a subscriber's session survives the restart)."""
    if shutil.which("mosquitto") is None:
        reason = "the mosquitto binary is not installed (apt-get install mosquitto)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} and FORMATION_REQUIRE_SERVICES=1")
        pytest.skip(reason)
    broker = PrivateBroker(tmp_path, persistence=True)
    broker.start()
    yield broker
    broker.stop()


CELLS = 8
RECIPE = """
name = "feed-short"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
max_cell_temperature_c = 60
[record]
every_s = 30
every_mv = 5
[[steps]]
id = "c1"
kind = "charge"
current = "1C"
until = { duration = "1h", voltage_v = 4.0 }
[[steps]]
id = "r1"
kind = "rest"
until = { duration = "20min" }
"""


def recipe_short() -> Recipe:
    return loads_recipe(RECIPE, "toml", source="feed-short.toml")


def entries() -> list[CellEntry]:
    return [CellEntry(f"F-{i:03d}", "LOT-F", 5.0) for i in range(1, CELLS + 1)]


async def run_fed_job(
    store: Store, broker: MqttConfig, topics: Topics, *, scale: float, during: object = None, seed: int = 5
) -> tuple[CabinetSupervisor, FeedPublisher]:
    """One short job on a simulated cabinet standing in a simulated chamber, both publishing to ``broker``."""
    clock = ScaledClock(scale)
    spec = CabinetSpec(name="cab", channels=CELLS, preset="ncm21700-5ah", seed=seed, port=0, formed=True,
                       initial_soc=0.2, defect_fraction=0.0, chamber="ch1")  # fmt: skip
    async with (
        SimulatedPlant([spec], clock, chambers=[ChamberSpec(name="ch1", seed=seed)]) as plant,
        FeedPublisher(broker, topics.site, topics.line) as feed,
    ):
        cab = CabinetConfig(name="cab", resource=plant.cabinets["cab"].resource, channels=CELLS,
                            poll_interval_s=20.0, timeout_s=2.0, chamber="ch1")  # fmt: skip
        chamber = ChamberSite(name="ch1", resource=plant.chamber_resources["ch1"], timeout_s=2.0)
        recipe = recipe_short()
        tasks: list[asyncio.Task[None]] = []

        def started(sup: CabinetSupervisor) -> None:
            if during is not None:
                tasks.append(asyncio.create_task(during(sup, feed), name="during-run"))  # type: ignore[operator]

        async with open_chamber_loop(chamber, clock, store, feed):
            sup = await run_job(cab, recipe, assign_cells(range(1, CELLS + 1), entries(), recipe), store, clock,
                                on_start=started, feed=feed)  # fmt: skip
        await asyncio.gather(*tasks)
    return sup, feed
