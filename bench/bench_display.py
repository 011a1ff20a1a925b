"""Bench: the wall display process under a full line's feed — its CPU, the messages it takes, the bytes it pushes.

A publisher process sends 16 cabinets × 256 channels (4,096) every second through the real Mosquitto on
127.0.0.1:1883 (each cabinet's whole state, plus 1 % of channels changing state each second on their own topics,
plus a chamber and an alarm every second), with the status naming a 1 s interval. The display runs in this
process; ``--browsers N`` curl processes hold the event stream open like browsers. Measured over ``--seconds``
after a warm-up: the display process's CPU time (all its threads) per wall second, messages received per second,
and bytes pushed per second to each browser.

    python bench/bench_display.py [--seconds 30] [--browsers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

PUBLISHER = r"""
import asyncio, random, sys, time
import aiomqtt
from formation.feed import CabinetState, ChamberState, ChannelState, FeedEvent, OrchestratorStatus, Topics
from formation.feed import state_counts
from datetime import UTC, datetime

site, seconds = sys.argv[1], float(sys.argv[2])
topics = Topics(site, "l1")
rnd = random.Random(1)
CABS, CHANNELS = 16, 256
states = {c: ["running"] * CHANNELS for c in range(CABS)}

def cabinet(c):
    st = states[c]
    return CabinetState(
        cabinet=f"cab{c + 1}", channels=list(range(1, CHANNELS + 1)), state=st, step_index=[2] * CHANNELS,
        step_id=["form"] * CHANNELS, step_kind=["charge"] * CHANNELS,
        cell_id=[f"C{c:02d}{i:04d}" for i in range(CHANNELS)],
        voltage_v=[round(3.4 + rnd.random() * 0.4, 4) for _ in range(CHANNELS)], current_a=[2.5] * CHANNELS,
        temperature_c=[round(25 + rnd.random(), 2) for _ in range(CHANNELS)], counts=state_counts(st)).to_json()

async def main():
    async with aiomqtt.Client("127.0.0.1", 1883, max_queued_outgoing_messages=100000) as client:
        started = datetime.now(UTC)
        status = OrchestratorStatus(state="online", version="bench", started=started, interval_s=1.0)
        await client.publish(topics.status(), status.to_json(), qos=1, retain=True)
        end = time.monotonic() + seconds
        sent = 0
        while time.monotonic() < end:
            t0 = time.monotonic()
            for c in range(CABS):
                for _ in range(CHANNELS // 100):
                    ch = rnd.randrange(CHANNELS)
                    states[c][ch] = rnd.choice(["running", "paused", "done", "faulted"])
                    msg = ChannelState(cabinet=f"cab{c + 1}", channel=ch + 1, state=states[c][ch], step_index=3)
                    await client.publish(topics.channel(f"cab{c + 1}", ch + 1), msg.to_json(), qos=1, retain=True)
                    sent += 1
                await client.publish(topics.cabinet(f"cab{c + 1}"), cabinet(c), qos=1, retain=True)
                sent += 1
            t = 45 + rnd.random() * 0.4 - 0.2
            chamber = ChamberState(chamber="ageing-1", setpoint_c=45, temperature_c=t, temperatures_c={"101": t},
                                   heating_open=[], cooling_open=[], band_c=0.5, in_band=True, stable=True)
            await client.publish(topics.chamber("ageing-1"), chamber.to_json(), qos=1, retain=True)
            event = FeedEvent(event="alarm", severity="warning", code="bench", message="a bench alarm", cabinet="cab1")
            await client.publish(topics.events(), event.to_json(), qos=1)
            sent += 2
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
        print(sent, flush=True)

asyncio.run(main())
"""


async def run(seconds: float, browsers: int, warmup_s: float) -> dict[str, float]:
    """Run the bench; the figures."""
    import aiomqtt

    from formation.feed import Topics
    from formation.feed.display import WallDisplay

    site = f"bench-{uuid.uuid4().hex[:8]}"
    topics = Topics(site, "l1")
    root = Path(__file__).resolve().parents[1]
    publisher = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, site, str(seconds + warmup_s + 2)], cwd=root, stdout=subprocess.PIPE
    )
    out_dir = Path(tempfile.mkdtemp(prefix="bench-display-"))
    curls: list[subprocess.Popen[bytes]] = []
    try:
        async with WallDisplay(site, "l1", mqtt_host="127.0.0.1", port=0) as wall:
            for i in range(browsers):
                with (out_dir / f"b{i}.sse").open("wb") as sink:
                    curls.append(subprocess.Popen(["curl", "-sN", f"{wall.url}events"], stdout=sink))
            await asyncio.sleep(warmup_s)
            sizes0 = [(out_dir / f"b{i}.sse").stat().st_size for i in range(browsers)]
            msgs0, cpu0, wall0 = wall.view.messages, time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            msgs1, cpu1, wall1 = wall.view.messages, time.process_time(), time.monotonic()
            sizes1 = [(out_dir / f"b{i}.sse").stat().st_size for i in range(browsers)]
            cabinets = len(wall.view.cabinets)
            bad = wall.view.bad_messages
    finally:
        for proc in curls:
            proc.terminate()
            proc.wait()
        publisher.wait(timeout=seconds + warmup_s + 30)
        async with aiomqtt.Client("127.0.0.1", 1883) as client:
            for topic in [topics.status(), topics.chamber("ageing-1")]:
                await client.publish(topic, b"", qos=1, retain=True)
            for c in range(1, 17):
                await client.publish(topics.cabinet(f"cab{c}"), b"", qos=1, retain=True)
                for ch in range(1, 257):
                    await client.publish(topics.channel(f"cab{c}", ch), b"", qos=0, retain=True)
    elapsed = wall1 - wall0
    return {
        "seconds": elapsed,
        "cabinets": cabinets,
        "bad": bad,
        "messages_per_s": (msgs1 - msgs0) / elapsed,
        "cpu_pct_of_one_core": 100.0 * (cpu1 - cpu0) / elapsed,
        "bytes_per_s_per_browser": sum(b - a for a, b in zip(sizes0, sizes1, strict=True)) / max(browsers, 1) / elapsed,
    }


def main() -> None:
    """Parse the options, run, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--browsers", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=5.0)
    args = parser.parse_args()
    figures = asyncio.run(run(args.seconds, args.browsers, args.warmup))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    for key, value in figures.items():
        print(f"{key:>26}: {value:,.2f}" if isinstance(value, float) else f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
