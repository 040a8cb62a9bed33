"""The generated gRPC code is what the proto produces today (no drift, no hand edits)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from availability_api import codegen

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date() -> None:
    assert codegen.check() == [], "run: python -m availability_api.codegen"


def test_check_mode_fails_on_a_hand_edit(tmp_path: Path) -> None:
    copy = tmp_path / "generated"
    codegen.generate(copy)
    edited = copy / "availability" / "v1" / "availability_pb2.py"
    edited.write_text(edited.read_text() + "# hand edit\n")
    assert codegen.differences(copy, codegen.GENERATED) == [
        "differs availability/v1/availability_pb2.py"]


def test_codegen_command_check_mode() -> None:
    result = subprocess.run([sys.executable, "-m", "availability_api.codegen", "--check"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
