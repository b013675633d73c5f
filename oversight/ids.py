"""Time-ordered UUIDs (version 7, RFC 9562) for rows written on the hot path.

A random (v4) primary key puts every new decision on a random page of its index: on a large
table that page is often not cached, and after each checkpoint its first change writes the
whole page to the WAL. A v7 id starts with the time in milliseconds, so new rows go to the
index's right edge. The other 74 bits are random, so ids stay unguessable.
"""

from __future__ import annotations

import os
import time
import uuid

_VERSION = 0x7 << 76
_VARIANT = 0x2 << 62
_KEEP = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)


def uuid7() -> uuid.UUID:
    ms = time.time_ns() // 1_000_000
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    return uuid.UUID(int=(value & _KEEP) | _VERSION | _VARIANT)
