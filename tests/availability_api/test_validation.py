"""Request checks: error texts stay short however large the input."""

from __future__ import annotations

import pytest

from availability_api.validation import InvalidRequest, check_id, quoted


@pytest.mark.parametrize(("value", "text"), [
    ("SKU-1", "'SKU-1'"),
    ("x" * 64, repr("x" * 64)),
    ("x" * 65, f"'{'x' * 64}…' (65 characters)"),
    ("it's" * 20, f'"{("it" + chr(39) + "s") * 16}…" (80 characters)'),
])
def test_quoted_cuts_long_values_to_a_prefix_and_the_length(value: str, text: str) -> None:
    assert quoted(value) == text


def test_a_long_id_with_the_delimiter_is_refused_in_a_short_text() -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_id("sku", "A" * 1_000_000 + "|")
    assert str(refused.value) == (
        f"sku '{'A' * 64}…' (1000001 characters) contains '|', the key delimiter")
