"""The engine's stop signals: a repeat delivery of the first is not an abort."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from dataflows import runner


@pytest.fixture
def fresh_stop_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(runner, "_first_signal_at", [])
    runner.SIGNALLED.clear()
    runner.STOP_REQUESTED.clear()
    yield
    runner.SIGNALLED.clear()
    runner.STOP_REQUESTED.clear()


def test_the_first_signal_asks_a_clean_stop_and_a_quick_repeat_is_the_same_request(
        fresh_stop_state: None, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    runner._request_stop(signal.SIGTERM, None)
    assert runner.SIGNALLED.is_set() and runner.STOP_REQUESTED.is_set()
    clock[0] += runner.REPEAT_WINDOW_S / 2
    runner._request_stop(signal.SIGTERM, None)  # a supervisor signalling again: no abort
    clock[0] = 100.0 + runner.REPEAT_WINDOW_S
    with pytest.raises(KeyboardInterrupt):
        runner._request_stop(signal.SIGINT, None)
