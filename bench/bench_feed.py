"""Status-feed benchmark: 4,096 channels across 16 cabinets at a 1 s feed interval, through the real publisher.

    python bench/bench_feed.py [--seconds 30] [--host 127.0.0.1 --port 1883] [--step-every-s 600]

Each cabinet holds 256 ChannelRun objects (the supervisor's own run type) on a built-in recipe. Every wall second
the bench does what a poll does to them — new readings for every channel, and the step of the channels whose step
ends (each channel's step lasts ``--step-every-s`` on average) — and then calls the production hook
(``CabinetFeed.observe``), which publishes channel states and step events on change and the cabinet state at the
feed interval. The FeedPublisher sends everything to the broker at QoS 1; a subscriber in a second process counts
what arrives.

Figures: messages/s and bytes/s (publisher side and as received), and CPU of the publishing side — process time
of this process minus the time spent faking the readings (measured around that code), as % of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import uuid

import numpy as np

from formation.config import MqttConfig
from formation.feed import FeedPublisher
from formation.orchestrator.feed_hooks import CabinetFeed
from formation.orchestrator.run import ChannelRun
from formation.recipes import load_builtin
from formation.states import RunState

CABINETS = 16
CHANNELS = 256

SUBSCRIBER = """
import asyncio, contextlib, json, sys, aiomqtt
async def main():
    host, port, pattern, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    n = size = 0
    async with aiomqtt.Client(host, port) as client:
        await client.subscribe(pattern, qos=1)
        print("ready", flush=True)
        async def count():
            nonlocal n, size
            async for m in client.messages:
                n += 1
                size += len(m.payload)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(count(), seconds)
    print(json.dumps({"messages": n, "bytes": size}), flush=True)
asyncio.run(main())
"""


def make_runs(cabinet: int) -> list[ChannelRun]:
    """256 runs on the demo recipe, running, spread over its steps."""
    recipe = load_builtin("demo-ncm21700")
    rng = np.random.default_rng(cabinet)
    runs = []
    for ch in range(1, CHANNELS + 1):
        run = ChannelRun(cabinet * 1000 + ch, f"C{cabinet:02d}-{ch:03d}", "LOT-B", ch, 5.0, recipe)
        run.transition(RunState.RUNNING)
        run.step_index = int(rng.integers(0, len(recipe.steps)))
        runs.append(run)
    return runs


async def bench(args: argparse.Namespace) -> dict[str, float]:
    site = f"bench-{uuid.uuid4().hex[:8]}"
    config = MqttConfig(host=args.host, port=args.port, interval_s=1.0)
    cabinets = [(f"cab{i + 1}", make_runs(i + 1)) for i in range(CABINETS)]
    n_steps = len(cabinets[0][1][0].recipe.steps)
    rng = np.random.default_rng(0)
    sub = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER, args.host, str(args.port), f"formation/v1/{site}/line1/#",
         str(args.seconds + 8.0)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert sub.stdout is not None
    assert sub.stdout.readline().strip() == "ready"
    async with FeedPublisher(config, site, "line1") as feed:
        assert await feed.wait_connected(5), feed.last_error
        hooks = [CabinetFeed(feed, name, CHANNELS) for name, _ in cabinets]
        # Warm-up: the first observation publishes all 4,096 channel states once (a launch); not measured.
        for hook, (_, runs) in zip(hooks, cabinets, strict=True):
            hook.observe(runs, job_id=1)
        while feed._pending or feed.events_waiting:
            await asyncio.sleep(0.01)
        warmup_msgs = feed.stats.messages
        await asyncio.sleep(1.0)
        fake_cpu_s = hook_cpu_s = 0.0
        step_changes = 0
        start_msgs, start_bytes = feed.stats.messages, feed.stats.bytes
        cpu0, wall0 = time.process_time(), time.perf_counter()
        p_change = 1.0 / args.step_every_s
        for tick in range(int(args.seconds)):
            t_tick = wall0 + tick + 1.0
            for hook, (_, runs) in zip(hooks, cabinets, strict=True):
                c0 = time.process_time()
                volts = rng.normal(3.7, 0.2, CHANNELS)
                amps = rng.normal(2.5, 0.1, CHANNELS)
                temps = rng.normal(27.0, 1.0, CHANNELS)
                changed = rng.random(CHANNELS) < p_change
                step_changes += int(changed.sum())
                for i, run in enumerate(runs):  # what RunIndex.note_latest and the step ends do in a poll
                    run.last_voltage_v, run.last_current_a, run.last_temperature_c = volts[i], amps[i], temps[i]
                    if changed[i]:
                        run.step_index = (run.step_index + 1) % n_steps
                c1 = time.process_time()
                hook.observe(runs, job_id=1)
                c2 = time.process_time()
                fake_cpu_s += c1 - c0
                hook_cpu_s += c2 - c1
            await asyncio.sleep(max(0.0, t_tick - time.perf_counter()))
        # Let the publisher finish what this last second handed it before the clocks stop.
        while feed._pending or feed.events_waiting:
            await asyncio.sleep(0.01)
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        msgs, size = feed.stats.messages - start_msgs, feed.stats.bytes - start_bytes
        coalesced = feed.stats.coalesced
    out, _ = sub.communicate(timeout=args.seconds + 30)
    received = json.loads(out.strip().splitlines()[-1])
    publisher_cpu_s = cpu_s - fake_cpu_s
    return {
        "warmup_messages": warmup_msgs,
        "seconds": wall_s,
        "messages_per_s": msgs / wall_s,
        "bytes_per_s": size / wall_s,
        "received_messages": received["messages"] - warmup_msgs,
        "received_bytes": received["bytes"],
        "publisher_cpu_pct": 100.0 * publisher_cpu_s / wall_s,
        "hook_cpu_pct": 100.0 * hook_cpu_s / wall_s,
        "task_cpu_pct": 100.0 * (publisher_cpu_s - hook_cpu_s) / wall_s,
        "fake_cpu_pct": 100.0 * fake_cpu_s / wall_s,
        "coalesced": coalesced,
        "step_changes_per_s": step_changes / wall_s,
        "cabinet_bytes": len(hooks[0].cabinet_state(cabinets[0][1]).to_json()),
    }


def main() -> None:
    """Run the bench and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--step-every-s", type=float, default=600.0)
    args = parser.parse_args()
    if not (1 <= args.seconds <= 3600 and args.step_every_s > 0):
        parser.error("--seconds must be 1–3600 and --step-every-s > 0")
    r = asyncio.run(bench(args))
    print(f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{CABINETS} cabinets x {CHANNELS} channels, feed interval 1 s, a step ends every {args.step_every_s:g} s "
          f"per channel on average ({r['step_changes_per_s']:.1f} step changes/s), {r['seconds']:.1f} s")  # fmt: skip
    print(f"published: {r['messages_per_s']:.1f} messages/s, {r['bytes_per_s'] / 1e3:.1f} kB/s "
          f"(one cabinet state {r['cabinet_bytes'] / 1e3:.1f} kB); received {r['received_messages']} messages "
          f"{r['received_bytes'] / 1e6:.2f} MB in all (after {r['warmup_messages']} at launch)")  # fmt: skip
    print(f"publisher CPU: {r['publisher_cpu_pct']:.2f} % of one core (hooks building payloads "
          f"{r['hook_cpu_pct']:.2f} %, publisher task {r['task_cpu_pct']:.2f} %); faking the readings "
          f"{r['fake_cpu_pct']:.2f} % (not counted); snapshots coalesced: {r['coalesced']}")  # fmt: skip


if __name__ == "__main__":
    main()
