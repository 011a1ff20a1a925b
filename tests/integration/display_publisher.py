"""A stand-in orchestrator for the wall display's tests: publishes one line's feed to a real broker.

:func:`retained` publishes a 256-channel cabinet, a chamber, a rack and a lot's grading (retained) and the status
online: what a display starting later must show at once.

``python display_publisher.py HOST PORT SITE LINE INTERVAL_S`` waits for ``go`` on stdin (so a test can start it
early and pay its start-up meanwhile), connects with the offline status as its will, publishes the status online
and the cabinet state every INTERVAL_S, prints ``ready``, and takes commands on stdin: ``CHANNEL STATE`` changes a
channel (published on its channel topic and in the following cabinet states) and prints ``ok``. Killing it with
SIGKILL leaves the broker to publish the will.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

import aiomqtt

from formation.feed import (
    CabinetState,
    ChamberState,
    ChannelState,
    LotGrading,
    OrchestratorStatus,
    RackState,
    Topics,
    state_counts,
)

CHANNELS = 256
STARTED = datetime.now(UTC)


def cabinet(states: list[str]) -> CabinetState:
    """The cabinet ``cab1`` with ``states`` per channel (1…256), every cell on its formation charge."""
    n = len(states)
    return CabinetState(
        cabinet="cab1",
        channels=list(range(1, n + 1)),
        state=states,  # type: ignore[arg-type]
        step_index=[1] * n,
        step_id=["form"] * n,
        step_kind=["charge"] * n,
        cell_id=[f"T{i:04d}" for i in range(1, n + 1)],
        voltage_v=[3.40 + 0.002 * (i % 50) for i in range(n)],
        current_a=[0.5] * n,
        temperature_c=[25.5] * n,
        counts=state_counts(states),  # type: ignore[arg-type]
    )


def status(state: str, interval_s: float) -> bytes:
    """The orchestrator status payload."""
    return OrchestratorStatus(state=state, version="test", started=STARTED, interval_s=interval_s).to_json()  # type: ignore[arg-type]


async def retained(client: aiomqtt.Client, topics: Topics) -> None:
    """Publish the line's retained state once."""
    chamber = ChamberState(
        chamber="ageing-1",
        setpoint_c=45.0,
        temperature_c=44.8,
        temperatures_c={"101": 44.8, "102": 44.9},
        heating_open=[301],
        cooling_open=[],
        band_c=0.5,
        in_band=True,
        stable=True,
    )
    rack = RackState(rack="R07", stage="45C", cells=256, setpoint_c=45.0, elapsed_s=43_200.0, duration_s=172_800.0)
    lot = LotGrading.from_counts("LOT-T", {"A": 240, "B": 10, "C": 4, "NG": 2})
    for topic, payload in (
        (topics.status(), status("online", 1.0)),
        (topics.cabinet("cab1"), cabinet(["running"] * CHANNELS).to_json()),
        (topics.chamber("ageing-1"), chamber.to_json()),
        (topics.rack("R07"), rack.to_json()),
        (topics.grading("LOT-T"), lot.to_json()),
    ):
        await client.publish(topic, payload, qos=1, retain=True)


async def live(host: str, port: int, topics: Topics, interval_s: float) -> None:
    """Publish like a running orchestrator until killed."""
    assert (await asyncio.to_thread(sys.stdin.readline)).strip() == "go"
    will = aiomqtt.Will(topics.status(), status("offline", interval_s), qos=1, retain=True)
    states = ["running"] * CHANNELS
    async with aiomqtt.Client(host, port, will=will, keepalive=5) as client:
        await client.publish(topics.status(), status("online", interval_s), qos=1, retain=True)

        async def periodic() -> None:
            while True:
                await client.publish(topics.cabinet("cab1"), cabinet(states).to_json(), qos=1, retain=True)
                await asyncio.sleep(interval_s)

        task = asyncio.create_task(periodic(), name="publisher-periodic")
        print("ready", flush=True)
        try:
            while line := await asyncio.to_thread(sys.stdin.readline):
                number, state = line.split()
                channel = int(number)
                states[channel - 1] = state
                msg = ChannelState(cabinet="cab1", channel=channel, state=state, step_index=1, step_id="form")  # type: ignore[arg-type]
                await client.publish(topics.channel("cab1", channel), msg.to_json(), qos=1, retain=True)
                print("ok", flush=True)
        finally:
            task.cancel()


async def main(argv: list[str]) -> None:
    """Entry point (see the module docstring)."""
    host, port, site, line, interval_s = argv[:5]
    await live(host, int(port), Topics(site, line), float(interval_s))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
