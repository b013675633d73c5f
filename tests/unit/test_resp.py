"""The small RESP2/RESP3 reader the epoch watch uses (oversight/epochwatch.py)."""

from __future__ import annotations

import pytest

from oversight.epochwatch import Incomplete, Push, RedisError, command, parse


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"+OK\r\n", b"OK"),
        (b":42\r\n", 42),
        (b"$5\r\nhello\r\n", b"hello"),
        (b"$-1\r\n", None),
        (b"_\r\n", None),
        (b"#t\r\n", True),
        (b",1.5\r\n", 1.5),
        (b"$0\r\n\r\n", b""),
        (b"*2\r\n$1\r\na\r\n:1\r\n", [b"a", 1]),
        (b"%1\r\n+server\r\n+redis\r\n", [b"server", b"redis"]),
        (b"*0\r\n", []),
    ],
)
def test_frames(raw, value):
    assert parse(raw) == (value, len(raw))


def test_bulk_strings_may_hold_crlf():
    raw = b"$4\r\na\r\nb\r\n"
    assert parse(raw) == (b"a\r\nb", len(raw))


def test_an_invalidation_push():
    raw = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$17\r\noversight:epoch:1\r\n"
    frame, end = parse(raw)
    assert isinstance(frame, Push)
    assert frame.items == [b"invalidate", [b"oversight:epoch:1"]]
    assert end == len(raw)


def test_errors_are_values_not_exceptions():
    frame, _ = parse(b"-ERR unknown command\r\n")
    assert isinstance(frame, RedisError)
    assert "unknown command" in str(frame)


@pytest.mark.parametrize("cut", [1, 3, 5, 8, 12])
def test_a_frame_cut_short_asks_for_more(cut):
    raw = b"*2\r\n$5\r\nhello\r\n:7\r\n"
    with pytest.raises(Incomplete):
        parse(raw[:cut])


def test_two_frames_in_one_read():
    raw = b">2\r\n$10\r\ninvalidate\r\n_\r\n$2\r\n17\r\n"
    push, pos = parse(raw)
    assert isinstance(push, Push)
    assert push.items == [b"invalidate", None]
    assert parse(raw, pos) == (b"17", len(raw))


def test_commands_are_resp_arrays_of_bulk_strings():
    assert command("GET", "k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert command("HELLO", 3) == b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"
