"""Time-ordered ids for decisions and review items (oversight/ids.py)."""

from __future__ import annotations

import time
import uuid

from oversight.ids import uuid7


def test_version_and_variant_are_those_of_rfc_9562_v7():
    for _ in range(200):
        u = uuid7()
        assert u.version == 7
        assert u.variant == uuid.RFC_4122


def test_the_first_48_bits_are_the_time_in_milliseconds():
    before = time.time_ns() // 1_000_000
    u = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= u.int >> 80 <= after


def test_ids_made_later_sort_later_and_never_repeat():
    made = []
    for _ in range(5):
        made.append(uuid7())
        time.sleep(0.002)
    assert made == sorted(made)
    assert len({uuid7() for _ in range(10_000)}) == 10_000


def test_a_forked_child_does_not_repeat_its_parents_ids():
    import os

    uuid7()  # the parent has unread random bytes buffered
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave at once
        os.write(write, uuid7().bytes)
        os._exit(0)
    os.waitpid(pid, 0)
    child = uuid.UUID(bytes=os.read(read, 16))
    os.close(read)
    os.close(write)
    parent_next = uuid7()  # with a shared buffer, its random bits would be the child's
    random_bits = (0xFFF << 64) | ((1 << 62) - 1)
    assert child.int & random_bits != parent_next.int & random_bits


def test_ids_made_many_at_once_are_v7_distinct_and_of_now():
    from oversight.ids import uuid7_many

    before = time.time_ns() // 1_000_000
    made = uuid7_many(1000)
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == 1000
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in made)
    assert all(before <= u.int >> 80 <= after for u in made)
