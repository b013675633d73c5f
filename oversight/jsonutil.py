"""JSON in and out, in one place: orjson (fast), and the standard library for what orjson refuses.

orjson refuses integers over 64 bits (valid JSON, and the API accepts them in free-form
fields) and strings it cannot encode; the standard library takes them. Everything that turns
JSON bytes into values or values into JSON bytes on the API goes through here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import orjson

MAX_INT_DIGITS = 4000  # Python refuses to parse longer integers (sys.get_int_max_str_digits)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number; send a finite number or null")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is too large; send a finite number")
    return value


def _int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS:
        raise ValueError(f"an integer with {len(text)} digits is too large; send at most {MAX_INT_DIGITS} digits")
    return int(text)


def strict_loads(data: bytes | str) -> Any:
    """JSON as the API accepts it anywhere (a body, an upload's line, a form's JSON box): no NaN or
    Infinity, no number too large for a float or too long for an int. Raises ``json.JSONDecodeError``
    for malformed text and ``ValueError`` saying which number is refused."""
    return json.loads(data, parse_constant=_no_constant, parse_float=_finite, parse_int=_int)


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
