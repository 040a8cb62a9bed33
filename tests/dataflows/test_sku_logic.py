"""What a restored SKU republishes, decided from the run ledger."""

from __future__ import annotations

import pytest

from availability_domain.rules import Rules
from dataflows.sku_logic import RunContext, republish_mode

A, B, C = "rules-a", "rules-b", "rules-c"


def context(run: int, fingerprint: str, history: dict[int, str]) -> RunContext:
    return RunContext(Rules(), fingerprint, run, history)


@pytest.mark.parametrize(("published_under", "snapshot_run", "now", "history", "mode"), [
    (A, 1, A, {1: A, 2: A}, "none"),            # plain restart
    (A, 1, B, {1: A, 2: B}, "changes"),         # rules changed at this start
    (A, 1, B, {1: A, 2: B, 3: B}, "changes"),   # a crashed run already had today's rules
    (A, 1, A, {1: A, 2: B, 3: A}, "everything"),  # B was published, then the state lost it
    (A, 1, C, {1: A, 2: B, 3: C}, "everything"),
    (None, 0, A, {1: A}, "everything"),         # state written by 0.1: rules unknown
    (B, 3, A, {1: A, 2: C, 3: B, 4: A}, "changes"),  # C predates the snapshot
])
def test_republish_mode(published_under: str | None, snapshot_run: int, now: str,
                        history: dict[int, str], mode: str) -> None:
    assert republish_mode(published_under, snapshot_run,
                          context(max(history), now, history)) == mode
