"""Editors' picks and blocks as pure rules (oversight.picks): which apply, and what they do to an output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from oversight.picks import Curation, Rule, apply, matches, overlaps, same_value

NOW = datetime(2026, 3, 15, 23, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def pick(n: int, item: str, position: int = 1, *, segment: str = "", context: dict[str, Any] | None = None,
         starts: datetime = NOW - HOUR, ends: datetime | None = None, by: str = "alice") -> Rule:
    return Rule(f"pck_{n}", item, segment, context or {}, starts, ends, position, by)


def block(n: int, item: str, *, segment: str = "", context: dict[str, Any] | None = None,
          starts: datetime = NOW - HOUR, ends: datetime | None = None, by: str = "bob") -> Rule:
    return Rule(f"blk_{n}", item, segment, context or {}, starts, ends, 0, by)


def items(curation: Curation, given: list[str], context: dict[str, Any] | None = None,
          now: datetime = NOW) -> tuple[list[str], list[str]]:
    out, reasons = apply(curation, {"items": given}, context, now)
    return out["items"], reasons


def test_a_pick_goes_to_its_position_and_says_so() -> None:
    c = Curation(picks=(pick(12, "t42", 1, context={"activity": "sleep"}),))
    out, reasons = apply(c, {"items": ["a", "b", "c"], "model": "m1"}, {"activity": "sleep"}, NOW)
    assert out == {"items": ["t42", "a", "b"], "model": "m1"}  # other keys kept, length kept
    assert reasons == ["editor pick pck_12: t42 at position 1 for activity=sleep (by alice)"]


def test_a_pick_moves_an_item_already_in_the_list() -> None:
    c = Curation(picks=(pick(1, "c", 1),))
    assert items(c, ["a", "b", "c", "c"])[0] == ["c", "a", "b"]  # both copies go; it comes first, once


def test_a_position_past_the_end_is_the_end() -> None:
    c = Curation(picks=(pick(1, "x", 9),))
    out, reasons = items(c, ["a", "b"])
    assert out == ["a", "x"]  # the list keeps its length; the pick is never dropped
    assert reasons == ["editor pick pck_1: x at position 2 (asked for 9) for everyone (by alice)"]


def test_an_empty_list_receives_the_picks() -> None:
    c = Curation(picks=(pick(1, "x", 1), pick(2, "y", 2)))
    assert items(c, [])[0] == ["x", "y"]


def test_more_picks_than_items_keeps_every_pick() -> None:
    c = Curation(picks=(pick(1, "x", 1), pick(2, "y", 2), pick(3, "z", 3)))
    assert items(c, ["a"])[0] == ["x", "y", "z"]


def test_picks_in_position_order_and_ties_newest_first() -> None:
    c = Curation(picks=(pick(3, "old", 1), pick(7, "new", 1), pick(5, "third", 3)))
    out, reasons = items(c, ["a", "b", "c", "d"])
    assert out == ["new", "old", "third", "a"]
    assert reasons[0].startswith("editor pick pck_7: new at position 1 ")
    assert reasons[1].startswith("editor pick pck_3: old at position 2 (asked for 1)")


def test_the_same_item_picked_twice_is_placed_once() -> None:
    c = Curation(picks=(pick(1, "x", 3), pick(2, "x", 1)))
    out, reasons = items(c, ["a", "b", "c"])
    assert out == ["x", "a", "b"]
    assert [r.split(":")[0] for r in reasons] == ["editor pick pck_2"]


def test_blocks_remove_every_occurrence() -> None:
    c = Curation(blocks=(block(3, "t9"),))
    out, reasons = items(c, ["t1", "t9", "t2", "t9"])
    assert out == ["t1", "t2"]
    assert reasons == ["editor block blk_3: t9 removed (by bob)"]


def test_a_block_that_finds_nothing_says_nothing() -> None:
    c = Curation(blocks=(block(3, "t9"),))
    output = {"items": ["t1"]}
    assert apply(c, output, {}, NOW) == (output, [])


def test_a_block_beats_a_pick_of_the_same_item() -> None:
    c = Curation(picks=(pick(1, "t9", 1),), blocks=(block(2, "t9", context={"activity": "sleep"}),))
    out, reasons = items(c, ["t1", "t9"], {"activity": "sleep"})
    assert out == ["t1"]
    assert reasons == ["editor block blk_2: t9 removed for activity=sleep (by bob)",
                       "editor pick pck_1: t9 not placed, blocked by blk_2 (by alice)"]
    # Where the block does not match, the pick applies.
    assert items(c, ["t1", "t9"], {"activity": "run"})[0] == ["t9", "t1"]


def test_a_block_then_a_pick_fill_the_list() -> None:
    c = Curation(picks=(pick(1, "p", 2),), blocks=(block(2, "b"),))
    assert items(c, ["a", "b", "c"])[0] == ["a", "p", "c"]


def test_only_rules_in_their_window_apply() -> None:
    c = Curation(picks=(pick(1, "later", 1, starts=NOW + HOUR), pick(2, "over", 1, starts=NOW - 2 * HOUR, ends=NOW),
                        pick(3, "now", 2, starts=NOW, ends=NOW + HOUR)))
    assert items(c, ["a", "b", "c"])[0] == ["a", "now", "b"]  # starts_at <= now < ends_at
    assert items(c, ["a", "b", "c"], now=NOW + HOUR)[0] == ["later", "a", "b"]


def test_segment_and_context_must_match() -> None:
    c = Curation(picks=(pick(1, "x", 1, segment="night", context={"activity": "sleep", "hour": 23}),))
    assert items(c, ["a"], {"segment": "night", "activity": "sleep", "hour": 23, "device": "phone"})[0] == ["x"]
    for ctx in ({"activity": "sleep", "hour": 23}, {"segment": "day", "activity": "sleep", "hour": 23},
                {"segment": "night", "activity": "sleep"}, {"segment": "night", "activity": "run", "hour": 23}, None):
        assert items(c, ["a"], ctx) == (["a"], [])


def test_context_values_compare_as_json_and_text_matches_numbers() -> None:
    same = [(23, 23), (23, 23.0), ("23", 23), (23, "23"), ("true", True), ("23.5", 23.5), (None, None),
            ({"a": [1]}, {"a": [1.0]})]
    different = [(1, True), (True, 1), ("23", 24), ("sleep", 0), (None, "null"), ([1], [1, 2])]
    assert [pair for pair in same if not same_value(*pair)] == []
    assert [pair for pair in different if same_value(*pair)] == []
    typed = pick(1, "x", context={"hour": "23"})  # what the page's hour=23 stores
    assert [matches(typed, {"hour": v}) for v in (23, "23", 22, "23 ")] == [True, True, False, False]


def test_outputs_that_are_not_item_lists_come_back_unchanged() -> None:
    c = Curation(picks=(pick(1, "x", 1),), blocks=(block(2, "a"),))
    for output in ({"label": "x"}, {"items": "a"}, {"items": ["a", 1]}, ["a"], "a", None, 3):
        assert apply(c, output, {}, NOW) == (output, [])
    assert apply(None, {"items": ["a"]}, {}, NOW) == ({"items": ["a"]}, [])


def test_reasons_without_an_editor_name() -> None:
    c = Curation(picks=(Rule("pck_1", "x", "", {}, NOW - HOUR, None, 1),))
    assert items(c, ["a"])[1] == ["editor pick pck_1: x at position 1 for everyone"]


def test_overlaps_need_the_same_item_or_position_a_shared_match_and_time() -> None:
    rules = [
        pick(1, "t1", 1, context={"activity": "sleep"}),
        pick(2, "t2", 1),  # same position, matches everyone: overlaps 1
        pick(3, "t1", 4, context={"activity": "sleep"}, starts=NOW + HOUR),  # same item, later, open-ended: overlaps 1
        pick(4, "t1", 1, context={"activity": "run"}),  # never the same decision as 1 or 3
        pick(5, "t9", 1, starts=NOW - 3 * HOUR, ends=NOW - 2 * HOUR),  # over before 1 began
        pick(6, "t6", 6, segment="night"),  # nothing in common
    ]
    found = overlaps(rules)
    assert found["pck_1"] == ["pck_2", "pck_3"]
    assert found["pck_2"] == ["pck_1", "pck_4"]
    assert found["pck_3"] == ["pck_1"]
    assert found["pck_4"] == ["pck_2"]
    assert (found["pck_5"], found["pck_6"]) == ([], [])
