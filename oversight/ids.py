"""Time-ordered UUIDs (version 7, RFC 9562) for rows written on the hot path.

A random (v4) primary key puts every new decision on a random page of its index: on a large
table that page is often not cached, and after each checkpoint its first change writes the
whole page to the WAL. A v7 id starts with the time in milliseconds, so new rows go to the
index's right edge. The other 74 bits are random, so ids stay unguessable.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_VERSION = 0x7 << 76
_VARIANT = 0x2 << 62
_KEEP = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)


_CHUNK = 4000  # random bytes read from the OS at a time (a batch of 1000 decisions makes ~1500 ids)


class _Random:
    """``os.urandom`` in chunks: one system call per 400 ids instead of one per id."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()  # anew in a forked child: another thread may have held it
        self.buf = b""
        self.pos = 0

    def bits80(self) -> int:
        with self.lock:
            if self.pos + 10 > len(self.buf):
                self.buf, self.pos = os.urandom(_CHUNK), 0
            chunk = self.buf[self.pos : self.pos + 10]
            self.pos += 10
        return int.from_bytes(chunk, "big")

    def many80(self, n: int) -> list[int]:
        data = os.urandom(10 * n)  # a batch's worth at once, outside the shared buffer
        return [int.from_bytes(data[i : i + 10], "big") for i in range(0, 10 * n, 10)]


_random = _Random()
# A forked process (a Celery prefork worker, say) must not reuse its parent's unread bytes.
os.register_at_fork(after_in_child=_random.reset)


def uuid7() -> uuid.UUID:
    ms = time.time_ns() // 1_000_000
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | _random.bits80()
    return uuid.UUID(int=(value & _KEEP) | _VERSION | _VARIANT)


def uuid7_many(n: int) -> list[uuid.UUID]:
    """``n`` ids made at once (a batch of decisions): one clock read, one read of the OS's randomness."""
    stamp = ((time.time_ns() // 1_000_000) & 0xFFFF_FFFF_FFFF) << 80 | _VERSION | _VARIANT
    return [uuid.UUID(int=(r & _KEEP) | stamp) for r in _random.many80(n)]
