"""Reading Redis's replies (``oversight.redisget``): whole, split anywhere, several at once."""

from __future__ import annotations

import pytest

from oversight.redisget import INCOMPLETE, RedisGetError, command, parse_reply


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert command(b"GET", b"k") == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert command(b"AUTH", b"u", b"p\r\nw") == b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$4\r\np\r\nw\r\n"


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        (b"$5\r\n12345\r\n", b"12345"),
        (b"$0\r\n\r\n", b""),
        (b"$-1\r\n", None),
        (b"$4\r\na\r\nb\r\n", b"a\r\nb"),  # a value may hold CRLF: the length decides
        (b"+OK\r\n", b"OK"),
        (b":42\r\n", 42),
    ],
)
def test_each_reply_kind(reply: bytes, value: object) -> None:
    assert parse_reply(reply) == (value, len(reply))


def test_an_error_reply_is_returned_not_raised() -> None:
    reply = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    value, end = parse_reply(reply)
    assert isinstance(value, RedisGetError)
    assert str(value).startswith("WRONGTYPE")
    assert end == len(reply)


@pytest.mark.parametrize("reply", [b"$5\r\n12345\r\n", b"$-1\r\n", b"+OK\r\n", b"$4\r\na\r\nb\r\n", b"-ERR x\r\n"])
def test_a_reply_cut_anywhere_waits_for_the_rest(reply: bytes) -> None:
    for cut in range(len(reply)):
        assert parse_reply(reply[:cut]) == (INCOMPLETE, 0), cut


def test_several_replies_in_one_read_come_out_in_order() -> None:
    buf = bytearray(b"$1\r\n7\r\n$-1\r\n$2\r\n42\r\n$3")
    values = []
    pos = 0
    while True:
        value, end = parse_reply(buf, pos)
        if value is INCOMPLETE:
            break
        values.append(value)
        pos = end
    assert values == [b"7", None, b"42"]
    assert buf[pos:] == b"$3"


def test_garbage_is_refused() -> None:
    with pytest.raises(RedisGetError, match="unexpected reply"):
        parse_reply(b"HTTP/1.1 400 Bad Request\r\n")
