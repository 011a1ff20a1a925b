"""`formation demo --display` end to end: the demo publishes to the real Mosquitto, opens the wall display on a free
port and prints its address; the display shows the run while it runs and the lot's grading after it; Ctrl-C stops
both. A whole (short) demo route: marked e2e."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}state.json", timeout=5) as reply:
        return dict(json.loads(reply.read()))


@pytest.mark.e2e
def test_demo_display_shows_the_run_then_the_grading_and_stops_on_ctrl_c(
    mqtt_broker: tuple[str, int], tmp_path: Path
) -> None:
    host, port = mqtt_broker
    args = ["--display", "--mqtt", f"mqtt://{host}:{port}", "--cells", "4", "--scale", "20000", "--out"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "formation", "demo", *args, str(tmp_path / "demo")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]

    def wait_line(pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        seen = []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(line)
            if found := re.search(pattern, line):
                return found
        pytest.fail(f"{pattern!r} not printed within {timeout_s:g} s:\n{''.join(seen)}")

    try:
        url = wait_line(r"wall display: (http://127\.0\.0\.1:\d+/)", 30).group(1)
        # Until this run's first cabinet state, the display shows what an earlier demo left retained.
        cabinet: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and cabinet.get("channels") != [1, 2, 3, 4]:
            cabinet = _state(url)["cabinets"].get("sim-cab1") or {}
            time.sleep(0.2)
        assert cabinet["channels"] == [1, 2, 3, 4], cabinet
        wait_line(r"wall display still at http://127\.0\.0\.1:\d+/ \(Ctrl-C stops it\)", 120)
        state = _state(url)
        assert state["site"] == "demo" and state["line"] == "line1"
        assert state["lots"]["DEMO-LOT"]["cells"] == 4
        assert state["status"]["state"] == "offline" and state["health"]["stale"] is True
        assert set(state["cabinets"]["sim-cab1"]["state"]) <= {"done", "faulted", "aborted"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        wait_line(r"display stopped", 5)
        with pytest.raises(OSError):
            _state(url)  # the display process is gone with the demo
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
