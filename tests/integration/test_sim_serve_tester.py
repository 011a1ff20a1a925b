"""`formation sim serve --tester-port`: a tester reaching rack1 in its own process, moving a cell; bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from formation.cli.app import main

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ask(sock: socket.socket, line: str) -> str:
    sock.sendall(line.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        data += chunk
    return data.decode().strip()


def test_sim_serve_serves_a_tester_that_moves_cells_onto_its_rack() -> None:
    cab_port, tester_port = _free_port(), _free_port()
    args = ["--port", str(cab_port), "--channels", "4", "--tester-port", str(tester_port), "--rack-positions", "8"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "formation", "sim", "serve", *args, "--scale", "100"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                tester = socket.create_connection(("127.0.0.1", tester_port), timeout=5.0)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "sim serve did not start"
                time.sleep(0.1)
        with tester:
            assert _ask(tester, "*IDN?").startswith("Formation,BT3562-SIM,SIM-tester1,")
            assert json.loads(_ask(tester, "SIM:RACK:LIST?"))[0]["positions"] == 8
            tester.sendall(b"SIM:RACK:LOAD rack1,2,cab1,101\n")
            assert _ask(tester, "SYST:ERR?") == '+0,"No error"'
            # Fresh cells at 0 % SOC: R0 several times its 50 % value, so the 300 mΩ range.
            r_text, v_text = _ask(tester, ":RES:RANG 0.3;:ROUT:CLOS (@1002);:MEAS:BATT?").split(",")
            assert 0.005 < float(r_text) < 0.31 and 2.0 < float(v_text) < 4.3
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tester-port", "70000"], "--tester-port: 70000 is not a TCP port"),
        (["--tester-port", "5999", "--rack-positions", "0"], "--rack-positions: 0 is outside 1-999"),
        (["--tester-port", "5999", "--site", "x.toml"], "--tester-port: racks and testers are not in the site file"),
    ],
)
def test_bad_tester_options_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert main(["sim", "serve", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
