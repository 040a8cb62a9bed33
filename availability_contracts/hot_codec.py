"""The hot path's Avro reader and snapshot writers: compiled, or their Python references.

``native/`` (Rust, built by every install) implements
:func:`~availability_contracts.avro_reader.read_inventory_event` and the two snapshot
writers of :mod:`~availability_contracts.avro_writer` with the same results: the same
field mapping and refusal reasons, the same bytes (tests compare both on random and
benchmark records). The Python modules stay the readable definition; they run when the
extension is not built, or when ``AVAILABILITY_PURE_PYTHON=1`` asks for them (to compare,
or to rule the compiled code out).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from availability_contracts import avro_reader, avro_writer

Implementation = Literal["compiled", "python"]

read_inventory_event: Callable[[bytes, int], tuple[dict[str, Any], int]]
position_record: Callable[[Mapping[str, Any] | Sequence[Any]], bytes]
channel_record: Callable[[Mapping[str, Any] | Sequence[Any]], bytes]


def load_compiled(module: str) -> Any:
    """The compiled extension ``module`` of ``native/``, or None when it is not built or
    ``AVAILABILITY_PURE_PYTHON`` asks for the Python references."""
    if os.environ.get("AVAILABILITY_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


_native = load_compiled("availability_contracts._avro")
IMPLEMENTATION: Implementation = "python" if _native is None else "compiled"
if _native is None:
    read_inventory_event = avro_reader.read_inventory_event
    position_record = avro_writer.position_record
    channel_record = avro_writer.channel_record
else:
    read_inventory_event = _native.read_inventory_event
    position_record = _native.position_record
    channel_record = _native.channel_record
