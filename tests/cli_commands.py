"""A deployment file's `availability` command line, parsed as the real CLI in its
container would: shared by the compose and the Kubernetes manifest checks."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Mapping, Sequence

import pytest

from availability.cli import build_parser
from dataflows.metrics import member_port


def _walk_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _walk_parsers(child)


def parse_in_container(where: str, argv: Sequence[str], environment: Mapping[str, str],
                       monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """``argv`` with the container's $AVAILABILITY_* variables and none of this
    machine's; every ``--flag`` must be a full option (no prefix abbreviations)."""
    for key in [key for key in os.environ if key.startswith("AVAILABILITY_")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        if key.startswith("AVAILABILITY_"):
            monkeypatch.setenv(key, value)
    parser = build_parser()
    options = {opt for p in _walk_parsers(parser) for a in p._actions for opt in a.option_strings}
    for arg in argv:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            assert flag in options, f"{where}: {flag} is not a full option of the CLI"
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exc:
        pytest.fail(f"{where}: `availability {' '.join(argv)}` is rejected (exit {exc.code})")


def served_metrics_port(args: argparse.Namespace) -> int:
    """The port an `availability engine` member serves /metrics on."""
    return member_port(int(args.metrics_port), args.process_id, args.supervised)
