"""The engine's bounded caches: insertion-ordered dicts whose oldest entry goes first when one is full."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


def kept(cache: OrderedDict[Any, Any], key: Any, value: Any, size: int) -> Any:
    """``value``, stored under ``key`` in ``cache``, which then holds at most ``size`` entries."""
    cache[key] = value
    if len(cache) > size:
        cache.popitem(last=False)
    return value
