"""JSON has no NaN or Infinity: refuse such numbers before they reach a provider.

msgpack carries them, so a job can hold one anywhere (an option, deep inside a
tool's parameter schema), and Python's `json` would write it as a bare `NaN` or
`Infinity` that providers reject or misread. Such a job can never succeed, on any
target, so it is a `ContractError` naming where the number sits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from contracts.errors import ContractError

__all__ = ["find_non_finite", "require_finite"]

_Part = str | int | float  # a mapping key (msgpack allows non-string ones) or a list index


def find_non_finite(value: Any) -> tuple[list[_Part], float] | None:
    """The first NaN/±inf in `value` (a number, or a mapping key) and the path to it."""
    # Iterative and in document order: the caller reports the first offender, and a
    # deeply nested schema must not hit the recursion limit here.
    stack: list[tuple[Any, list[_Part]]] = [(value, [])]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return path, item
        elif isinstance(item, Mapping):
            children: list[tuple[Any, list[_Part]]] = []
            for key, child in item.items():
                if isinstance(key, float) and not math.isfinite(key):
                    return [*path, key], key
                children.append((child, [*path, key]))
            stack.extend(reversed(children))
        elif isinstance(item, list | tuple):
            stack.extend((child, [*path, i]) for i, child in reversed(list(enumerate(item))))
    return None


def require_finite(value: Any, field: str = "") -> None:
    """Raise `ContractError` for the first NaN/±inf in `value`; `field` is where `value` sits."""
    found = find_non_finite(value)
    if found is None:
        return
    path, number = found
    raise ContractError(
        _format(field, path), f"{number!r} is not a finite number (JSON has no NaN or Infinity)"
    )


def _format(field: str, path: list[_Part]) -> str:
    out = field
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out
