"""Embedding vectors into the fleet's wire form: packed little-endian float32 rows."""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Sequence
from typing import Any

from contracts.errors import InternalError
from contracts.frames import Usage
from providers.core.types import EmbedResult

__all__ = ["pack_floats", "pack_rows", "vector_bytes"]


def pack_floats(provider: str, vector: Sequence[Any]) -> bytes:
    try:
        packed = array("f", vector)
    except TypeError:
        raise InternalError(f"{provider}: embedding holds non-numbers") from None
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def vector_bytes(provider: str, vector: Any) -> bytes:
    """A vector given as base64 float32 (OpenAI's `encoding_format=base64`) or as numbers."""
    if isinstance(vector, str):
        try:
            return base64.b64decode(vector, validate=True)
        except ValueError:
            raise InternalError(f"{provider}: embedding is not valid base64") from None
    if isinstance(vector, list):
        return pack_floats(provider, vector)
    raise InternalError(f"{provider}: embedding missing from response item")


def pack_rows(provider: str, rows: list[bytes], *, expected: int, usage: Usage) -> EmbedResult:
    """One `EmbedResult` from packed rows in input order; every row must be as wide."""
    if len(rows) != expected:
        raise InternalError(f"{provider}: expected {expected} embeddings, got {len(rows)}")
    width = len(rows[0]) if rows else 0
    if width == 0 or width % 4 or any(len(r) != width for r in rows):
        raise InternalError(f"{provider}: embeddings have inconsistent or empty dimensions")
    return EmbedResult(data=b"".join(rows), dims=width // 4, count=len(rows), usage=usage)
