"""`formation chamber hold` against `formation sim serve` serving the site's chamber in a process of its own, and
the refusals of both commands (one line, exit 2, nothing written)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from formation.cli.app import main
from formation.store import Store

ROOT = Path(__file__).resolve().parents[2]
SCALE = 600.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_site(folder: Path, port: int, extra: str = "") -> Path:
    site = folder / "site.toml"
    site.write_text(
        f'[database]\npath = "line.db"\n[clock]\nscale = {SCALE}\n'
        f'[[chambers]]\nname = "ch1"\nresource = "TCPIP0::127.0.0.1::{port}::SOCKET"\nhold_s = 300\n{extra}'
        f"[chambers.sim]\nport = {port}\nseed = 3\n"
    )
    return site


def _serve(args: list[str], port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "formation", "sim", "serve", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "simulator did not listen"
            time.sleep(0.1)


def _query(port: int, line: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as sock:
        sock.sendall(line.encode() + b"\n")
        return sock.makefile().readline().strip()


@pytest.fixture
def served_site(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = _free_port()
    site = _write_site(tmp_path, port)
    proc = _serve(["--site", str(site)], port)
    try:
        yield site, port
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        assert f"ch1 chamber DAQ on TCPIP0::127.0.0.1::{port}::SOCKET" in out


def test_hold_reaches_the_band_and_prints_the_figures(
    served_site: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    site, port = served_site
    assert main(["chamber", "hold", "ch1", "40", "--site", str(site), "--for", "40min"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "holding ch1 at 40 °C for 40min" in out
    for figure in ("time to band", "time to stable", "in band after settling", "max deviation after settling"):
        assert figure in out
    assert "valve 301 switchings" in out and "valve 308 switchings" in out
    assert "not reached" not in out  # 25 -> 40 °C is in band and stable within 40 minutes
    with Store(f"sqlite:///{site.parent / 'line.db'}") as store:
        samples = store.chamber_samples("ch1")
        assert 35 <= len(samples) <= 42 and (samples["setpoint_c"] == 40.0).all()  # one a minute
        assert sum(w.switches for w in store.valve_switches("ch1").values()) > 0
    assert '"valve_commanded": [false, false, false, false, false, false, false, false]' in _query(
        port, "SIM:CHAM:TRUTH?"
    )  # every valve closed at the end


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["ch9", "40"], "error: {site}: chamber: no chamber named 'ch9' (known: ch1)"),
        (["ch1", "70"], "error: SETPOINT: 70 °C is outside 10–60 °C of chamber ch1"),
        (["ch1", "40", "--for", "soon"], "error: --for: cannot read duration 'soon'"),
    ],
    ids=["unknown-chamber", "setpoint-out-of-range", "bad-duration"],
)
def test_hold_refuses_bad_input_on_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    site = _write_site(tmp_path, _free_port())
    assert main(["chamber", "hold", *args, "--site", str(site)]) == 2
    _, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and err.startswith(expected.format(site=site)), err
    assert not (tmp_path / "line.db").exists()


def test_sim_serve_serves_a_chamber_on_the_chamber_port() -> None:
    port, chamber_port = _free_port(), _free_port()
    proc = _serve(["--port", str(port), "--channels", "8", "--chamber-port", str(chamber_port)], chamber_port)
    try:
        assert _query(chamber_port, "*IDN?").startswith("Formation,DAQ970A-SIM,SIM-chamber1,")
        assert _query(port, "*IDN?").startswith("Formation,BT2200-SIM,")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"chamber1 chamber DAQ on TCPIP0::127.0.0.1::{chamber_port}::SOCKET" in out


def test_sim_serve_refuses_a_chamber_wired_unlike_the_simulated_daq(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _write_site(tmp_path, _free_port(), extra="heating_valves = [302, 303]\n")
    assert main(["sim", "serve", "--site", str(site)]) == 2
    _, err = capsys.readouterr()
    assert err.startswith(f"error: {site}: chambers[0].heating_valves: the simulated DAQ wires thermocouples 101..")
    assert len(err.strip().splitlines()) == 1
