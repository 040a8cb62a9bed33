"""`availability demo` end to end on the real broker: a short replay, the API answering,
and Ctrl-C stopping what the demo started with exit code 130."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from availability_contracts.topics import TopicNames

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


def demo_argv(brokers: str, topics: TopicNames, state: Path, api_port: int,
              *extra: str) -> list[str]:
    exe = REPO / ".venv" / "bin" / "availability"
    return [str(exe) if exe.exists() else "availability", "demo", "--no-local-kafka",
            "--brokers", brokers, "--state-dir", str(state), "--api-port", str(api_port),
            "--api-metrics-port", "0", "--engine-metrics-port", "0", "--processes", "1",
            "--http-port", "0",
            "--events-topic", topics.events, "--dlq-topic", topics.dlq,
            "--positions-topic", topics.positions, "--channels-topic", topics.channels,
            *extra]


def test_short_demo_answers_from_the_api_and_stops_cleanly(
        brokers: str, topics: TopicNames, tmp_path: Path, free_port: Callable[[], int]
        ) -> None:
    run = subprocess.run(
        demo_argv(brokers, topics, tmp_path / "demo", free_port(), "--duration", "4",
                  "--rate", "200", "--linger", "1"),
        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "GetAvailability(web" in run.stdout, run.stdout[-3000:]
    assert "still up; ask the API yourself" in run.stdout
    assert "engine and API stopped" in run.stdout


def test_ctrl_c_stops_the_engine_and_api_with_exit_code_130(
        brokers: str, topics: TopicNames, tmp_path: Path, free_port: Callable[[], int]
        ) -> None:
    state = tmp_path / "demo"
    demo = subprocess.Popen(
        demo_argv(brokers, topics, state, free_port(), "--duration", "60", "--rate", "100"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (state / "engine.log").exists() or "recovery" not in (
            state / "engine.log").read_text(errors="replace"):
        assert time.monotonic() < deadline, "the demo's engine did not start"
        assert demo.poll() is None, demo.communicate()[0]
        time.sleep(0.5)
    time.sleep(2)
    demo.send_signal(signal.SIGINT)
    out, _ = demo.communicate(timeout=120)
    assert demo.returncode == 130, out[-3000:]
    assert "interrupted: stopping the engine and the API" in out
    engine_log = (state / "engine.log").read_text(errors="replace")
    assert "stopped cleanly" in engine_log or "aborted" in engine_log, engine_log[-2000:]
