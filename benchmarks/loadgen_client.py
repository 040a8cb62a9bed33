"""The grpc benchmark's compiled load generator (``benchmarks/loadgen``, Go).

A Python gRPC client spends about as much CPU per call as the Python server it
measures, and on a 2-core machine the two then compete for the same cores: the
figures were the client's as much as the server's. The Go program sends the
requests this module encodes (protobuf bytes, no generated Go code) and returns every
call's latency; percentiles are computed here, with the Python client's histogram.

It is built from source on first use with the machine's ``go`` (modules from the Go
module proxy) into the project's cache, under a name derived from its sources, so a
changed source is rebuilt and an unchanged one never is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from availability.local_kafka.broker import default_home

SOURCE_DIR = Path(__file__).with_name("loadgen")
SOURCES = ("go.mod", "go.sum", "main.go")
SERVICE = "/availability.v1.AvailabilityService/"


class LoadgenError(RuntimeError):
    """The load generator could not be built or did not run to the end."""


def loadgen_binary() -> Path:
    """The built load generator, building it now if its sources changed."""
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((SOURCE_DIR / name).read_bytes())
    binary = default_home() / "bin" / f"availability-loadgen-{digest.hexdigest()[:16]}"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise LoadgenError("the grpc benchmark's load generator is written in Go and `go` is "
                           "not on PATH: install Go 1.26+ or pass --client python")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".building")
    done = subprocess.run([go, "build", "-trimpath", "-o", str(partial), "."], cwd=SOURCE_DIR,
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "CGO_ENABLED": "0"})
    if done.returncode != 0:
        raise LoadgenError(f"go build in {SOURCE_DIR} failed:\n{done.stderr.strip()}")
    partial.replace(binary)
    return binary


def write_requests(path: Path, requests: Sequence[bytes]) -> None:
    """Each request as a varint length and its bytes (the load generator's input)."""
    with path.open("wb") as out:
        for request in requests:
            size = len(request)
            while size >= 0x80:
                out.write(bytes((size & 0x7F | 0x80,)))
                size >>= 7
            out.write(bytes((size,)))
            out.write(request)


def run_loadgen(target: str, method: str, requests: Sequence[bytes], seconds: float, *,
                rate: float | None = None, in_flight: int | None = None,
                timeout_s: float = 10.0) -> dict[str, Any]:
    """One measurement: open loop at ``rate`` calls/s, or closed loop with ``in_flight``
    calls outstanding. The load generator's JSON report (latencies in microseconds)."""
    if (rate is None) == (in_flight is None):
        raise ValueError("give exactly one of rate (open loop) and in_flight (closed loop)")
    binary = loadgen_binary()
    with tempfile.TemporaryDirectory(prefix="bench-loadgen-") as scratch:
        path = Path(scratch) / "requests.bin"
        write_requests(path, requests)
        argv = [str(binary), "-target", target, "-method", SERVICE + method,
                "-requests", str(path), "-seconds", str(seconds), "-timeout", f"{timeout_s}s"]
        if rate is not None:
            argv += ["-mode", "open", "-rate", str(rate)]
        else:
            argv += ["-mode", "closed", "-in-flight", str(in_flight)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=seconds + timeout_s + 60)
    if done.returncode != 0:
        raise LoadgenError(f"load generator exited with {done.returncode}: "
                           f"{done.stderr.strip()[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    report["results_per_answer"] = {int(k): v for k, v in report["results_per_answer"].items()}
    return report
