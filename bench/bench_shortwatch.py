"""The host's internal-short check on the poll hot path: ShortWatch.check over one poll's records of a big cabinet.

`python bench/bench_shortwatch.py --channels 4096 --records 2 --polls 300` prints the median and p99 wall time of
one check (half the channels charging, half resting past the settle time, every record of its own step time).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from formation.instruments.program import LOG_COL, LOG_COLUMNS
from formation.orchestrator.cabinet.shorts import REST_SETTLE_S, ShortWatch


def _poll_block(n_runs: int, per_run: int, t0_s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    idx = np.tile(np.arange(n_runs), per_run)
    rows = np.zeros((len(idx), len(LOG_COLUMNS)))
    rows[:, LOG_COL["seq"]] = 1.0
    rows[:, LOG_COL["step"]] = np.where(idx % 2, 1.0, 2.0)
    rows[:, LOG_COL["step_time_s"]] = t0_s + np.repeat(np.arange(per_run), n_runs) * 10.0
    rows[:, LOG_COL["voltage_v"]] = 3.7 + rng.normal(0.0, 20e-6, len(idx))
    rows[:, LOG_COL["current_a"]] = np.where(idx % 2, 2.5, 0.0)
    return rows, idx


def main() -> None:
    """Time ``--polls`` checks and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--channels", type=int, default=4096)
    parser.add_argument("--records", type=int, default=2, help="records per channel per poll")
    parser.add_argument("--polls", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    blocks = [_poll_block(args.channels, args.records, REST_SETTLE_S + 20.0 * k, rng) for k in range(args.polls)]
    watch = ShortWatch()
    wall_s = []
    for records, idx in blocks:
        t0 = time.perf_counter()
        flagged = watch.check(records, idx, args.channels)
        wall_s.append(time.perf_counter() - t0)
        assert not len(flagged), "a healthy block was flagged"
    ms = np.array(wall_s) * 1e3
    print(
        f"ShortWatch.check, {args.channels} channels x {args.records} records per poll, {args.polls} polls: "
        f"median {np.median(ms):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms"
    )


if __name__ == "__main__":
    main()
