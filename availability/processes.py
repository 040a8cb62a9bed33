"""Stopping a child process the way every tool here does: ask, wait, then insist."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any], *, sig: int = signal.SIGTERM,
                 timeout: float = 30, group: bool = False) -> int | None:
    """Send ``sig`` (to the whole process group with ``group``), wait up to ``timeout``
    seconds for a clean exit, then SIGKILL; the exit code, or None if it never ran."""
    if process.poll() is None:
        _signal(process, sig, group)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL, group)
            process.wait()
    return process.returncode


def _signal(process: subprocess.Popen[Any], sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    except ProcessLookupError:
        pass
