"""`formation sim serve` in its own process, driven by an independent pyvisa client and by `formation run launch`.

`run launch` and `run list` run in this process (the simulator is the separate process that matters); Ctrl-C and
a killed launcher need a launcher process of their own.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyvisa

from formation.cli.app import main

ROOT = Path(__file__).resolve().parents[2]
SCALE = 2000.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sim_port() -> Iterator[int]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "formation",
            "sim",
            "serve",
            "--port",
            str(port),
            "--channels",
            "8",
            "--scale",
            str(SCALE),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "simulator did not listen"
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_independent_pyvisa_client_drives_a_cell(sim_port: int) -> None:
    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(
        f"TCPIP0::127.0.0.1::{sim_port}::SOCKET", read_termination="\n", write_termination="\n", timeout=5000
    )
    try:
        assert inst.query("*IDN?").startswith("Formation,BT2200-SIM,")
        inst.write("CELL:DEF 1001,(@101)")
        inst.write("SEQ:STEP:DEF 1,1,CHARGE,600,2.5,4.2")
        inst.write("SEQ:STEP:DEF 1,2,REST,600,0,0")
        rest_v = float(inst.query("MEAS:CELL:VOLT? (@1001)"))  # open circuit before the charge
        inst.write("CELL:ENAB (@1001),1")
        inst.write("CELL:INIT (@1001)")
        assert inst.query("SYST:ERR?") == '+0,"No error"'
        volts = float(inst.query("MEAS:CELL:VOLT? (@1001)"))
        assert 2.4 < rest_v < volts < 4.2  # charging lifts the terminal voltage
        deadline = time.monotonic() + 10
        while inst.query("STAT:CELL:REP? (@1001)") != "3":  # DONE after 1200 clock seconds
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert float(inst.query("MEAS:CELL:CURR? (@1001)")) == 0.0
        assert float(inst.query("MEAS:CELL:VOLT? (@1001)")) > rest_v  # charged for 10 minutes at C/2
        inst.write("FOO:BAR 1")
        assert inst.query("SYST:ERR?") == '-113,"Undefined header"'
    finally:
        inst.close()


RECIPE = """
name = "cli-short"
version = "1"
nominal_capacity_ah = 5.0
[limits]
max_voltage_v = 4.25
min_voltage_v = 2.45
[[steps]]
text = "Charge at 1C for 20 minutes or until 4.1 V"
[[steps]]
text = "Rest for 10 minutes"
"""


def test_run_launch_over_tcp(
    sim_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "site.toml").write_text(
        f'[database]\npath = "line.db"\n[clock]\nscale = {SCALE}\n'
        f'[[cabinets]]\nname = "cab1"\nresource = "TCPIP0::127.0.0.1::{sim_port}::SOCKET"\nchannels = 8\n'
        "poll_interval_s = 20.0\n"
    )
    (tmp_path / "short.toml").write_text(RECIPE)
    (tmp_path / "cells.csv").write_text(
        "cell_id,lot,nominal_capacity_ah\n" + "".join(f"S-{i},LOT-S,5.0\n" for i in range(1, 5))
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "160")
    code = main(
        [
            "run",
            "launch",
            "--foreground",
            str(tmp_path / "short.toml"),
            "--site",
            str(tmp_path / "site.toml"),
            "--cabinet",
            "cab1",
            "--channels",
            "5-8",
            "--cells",
            str(tmp_path / "cells.csv"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "Per-step summary" in out
    with sqlite3.connect(tmp_path / "line.db") as conn:
        runs = conn.execute("SELECT channel, state FROM run ORDER BY channel").fetchall()
        results = conn.execute("SELECT count(*) FROM step_result").fetchone()[0]
    assert runs == [(5, "done"), (6, "done"), (7, "done"), (8, "done")]
    assert results == 8
    code = main(["run", "list", "--site", str(tmp_path / "site.toml")])
    out, err = capsys.readouterr()
    assert code == 0 and "done" in out, out + err


def _launch_in_background(sim_port: int, tmp_path: Path) -> subprocess.Popen[str]:
    """`formation run launch` of a long recipe on channels 1-3 in its own process, once its cells are charging."""
    (tmp_path / "site.toml").write_text(
        f'[database]\npath = "line.db"\n[clock]\nscale = 10.0\n'
        f'[[cabinets]]\nname = "cab1"\nresource = "TCPIP0::127.0.0.1::{sim_port}::SOCKET"\nchannels = 8\n'
    )
    (tmp_path / "cells.csv").write_text(
        "cell_id,lot,nominal_capacity_ah\n" + "".join(f"X-{i},LOT-X,5.0\n" for i in range(1, 4))
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "formation",
            "run",
            "launch",
            "--foreground",
            "ncm21700-formation",
            "--site",
            str(tmp_path / "site.toml"),
            "--cabinet",
            "cab1",
            "--channels",
            "1-3",
            "--cells",
            str(tmp_path / "cells.csv"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
    )
    deadline = time.monotonic() + 30
    while True:  # wait until the cells are charging
        assert proc.poll() is None, proc.communicate()
        try:
            with sqlite3.connect(tmp_path / "line.db") as conn:
                states = [s for (s,) in conn.execute("SELECT state FROM run")]
        except sqlite3.OperationalError:
            states = []
        if states == ["running"] * 3:
            return proc
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the job did not start")
        time.sleep(0.1)


def _assert_cells_aborted(sim_port: int, tmp_path: Path) -> None:
    """Every run and the job aborted in the store, and the instrument shows the three cells aborted, output off."""
    with sqlite3.connect(tmp_path / "line.db") as conn:
        runs = [s for (s,) in conn.execute("SELECT state FROM run")]
        job = conn.execute("SELECT state FROM job").fetchone()[0]
    assert runs == ["aborted"] * 3 and job == "aborted"
    rm = pyvisa.ResourceManager("@py")
    inst = rm.open_resource(
        f"TCPIP0::127.0.0.1::{sim_port}::SOCKET", read_termination="\n", write_termination="\n", timeout=5000
    )
    try:
        assert inst.query("STAT:CELL:REP? (@1001:1003)") == "5,5,5"  # ABORTED
        assert [float(x) for x in inst.query("MEAS:CELL:CURR? (@1001:1003)").split(",")] == [0.0, 0.0, 0.0]
    finally:
        inst.close()


@pytest.mark.e2e
def test_ctrl_c_on_run_launch_aborts_the_cells(sim_port: int, tmp_path: Path) -> None:
    proc = _launch_in_background(sim_port, tmp_path)
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    _assert_cells_aborted(sim_port, tmp_path)


@pytest.mark.e2e
def test_run_abort_from_another_process_stops_a_running_job(
    sim_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc = _launch_in_background(sim_port, tmp_path)
    try:
        code = main(["run", "abort", "1", "--site", str(tmp_path / "site.toml")])
        out, err = capsys.readouterr()
        assert code == 0, out + err
        assert "aborted 3 channel(s) of job 1 on cab1" in out
        launcher_out, launcher_err = proc.communicate(timeout=30)  # the launcher sees `aborting` and finishes
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, launcher_out + launcher_err
    _assert_cells_aborted(sim_port, tmp_path)
    # The job is over: a second abort switches nothing and says so.
    assert main(["run", "abort", "1", "--site", str(tmp_path / "site.toml")]) == 0
    assert "has no unfinished run" in capsys.readouterr().out


@pytest.mark.e2e
def test_a_killed_launcher_is_resumed_by_a_new_process(sim_port: int, tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(
        f'[database]\npath = "line.db"\n[clock]\nscale = {SCALE / 10}\n'
        f'[[cabinets]]\nname = "cab1"\nresource = "TCPIP0::127.0.0.1::{sim_port}::SOCKET"\nchannels = 8\n'
        "poll_interval_s = 5.0\n"
    )
    (tmp_path / "short.toml").write_text(RECIPE)
    (tmp_path / "cells.csv").write_text(
        "cell_id,lot,nominal_capacity_ah\n" + "".join(f"K-{i},LOT-K,5.0\n" for i in range(1, 4))
    )
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "formation",
            "run",
            "launch",
            "--foreground",
            str(tmp_path / "short.toml"),
            "--site",
            str(tmp_path / "site.toml"),
            "--cabinet",
            "cab1",
            "--channels",
            "1-3",
            "--cells",
            str(tmp_path / "cells.csv"),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # wait until the cells are charging and some samples are stored
            assert launcher.poll() is None
            try:
                with sqlite3.connect(tmp_path / "line.db") as conn:
                    samples = conn.execute("SELECT count(*) FROM sample").fetchone()[0]
            except sqlite3.OperationalError:
                samples = 0
            if samples >= 6:
                break
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.1)
    finally:
        launcher.kill()  # a crash: no abort, no flush, no goodbye
        launcher.wait(timeout=10)
    resumed = subprocess.run(
        [sys.executable, "-m", "formation", "run", "resume", "1", "--site", str(tmp_path / "site.toml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with sqlite3.connect(tmp_path / "line.db") as conn:
        runs = [s for (s,) in conn.execute("SELECT state FROM run ORDER BY channel")]
        steps = conn.execute("SELECT run_id, step_index FROM step_result ORDER BY run_id, step_index").fetchall()
        recs = [r for (r,) in conn.execute("SELECT rec FROM sample ORDER BY rec")]
        job = conn.execute("SELECT state FROM job").fetchone()[0]
    assert runs == ["done"] * 3 and job == "done"
    assert [i for _, i in steps] == [0, 1] * 3  # each step once per cell: nothing repeated
    assert recs == list(range(recs[0], recs[0] + len(recs))), "a sample was lost or doubled across the crash"
