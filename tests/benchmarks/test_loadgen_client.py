"""The grpc benchmark's compiled load generator, against no server and a bad input."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from benchmarks.loadgen_client import loadgen_binary, run_loadgen, write_requests


def test_write_requests_frames_each_request_with_its_varint_length(tmp_path: Path) -> None:
    path = tmp_path / "requests.bin"
    write_requests(path, [b"", b"a", b"x" * 300])
    assert path.read_bytes() == b"\x00" + b"\x01a" + b"\xac\x02" + b"x" * 300


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_every_call_to_an_absent_server_is_reported_as_failed() -> None:
    """Failures are counted by status code, not dropped, and the open loop still sends
    every scheduled request."""
    report = run_loadgen(f"127.0.0.1:{_closed_port()}", "GetAvailability", [b"\x0a\x03web"],
                         0.2, rate=50, timeout_s=1.0)
    assert report["calls"] == 10
    assert report["answered"] == 0
    assert report["failures"] == {"Unavailable": 10}


def test_an_unreadable_requests_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "requests.bin"
    path.write_bytes(b"\x05ab")  # says 5 bytes, holds 2
    binary = loadgen_binary()
    done = subprocess.run([str(binary), "-target", "127.0.0.1:1", "-method", "/x/y",
                           "-requests", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert str(path) in done.stderr and "truncated" in done.stderr


def test_open_and_closed_loop_are_exclusive() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        run_loadgen("127.0.0.1:1", "GetAvailability", [b""], 0.1, rate=1, in_flight=1)
