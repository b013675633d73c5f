"""JSON in and out, in one place: orjson (fast), and the standard library for what orjson refuses.

orjson refuses integers over 64 bits (valid JSON, and the API accepts them in free-form
fields) and strings it cannot encode; the standard library takes them. Everything that turns
JSON bytes into values or values into JSON bytes on the API goes through here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """Parse JSON. Raises ``orjson.JSONDecodeError`` (a ``ValueError``) on bad input."""
    return orjson.loads(data)


def dumps(value: Any, *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None) -> bytes:
    """JSON bytes for ``value`` (UTF-8, compact); ``sort_keys`` for a canonical form.

    Datetimes go to ``default`` (as with the standard library), so they read the same either way.
    """
    option = orjson.OPT_PASSTHROUGH_DATETIME | (orjson.OPT_SORT_KEYS if sort_keys else 0)
    try:
        return orjson.dumps(value, default=default, option=option)
    except TypeError:  # integers over 64 bits, lone surrogates: the standard library
        text = json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, default=default)
        return text.encode("utf-8", "surrogatepass")
