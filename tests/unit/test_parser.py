"""The API's JSON parser and validation messages, without a database or a server."""

from __future__ import annotations

import json

import pytest
from django.http import HttpRequest
from pydantic import ValidationError as PydanticValidationError

from oversight.jsonapi import MAX_JSON_DEPTH, ApiError, StrictJSONParser, validation_message
from oversight.schemas import DecisionIn, SystemIn

parser = StrictJSONParser()


def parse(body: bytes) -> object:
    request = HttpRequest()
    request._body = body  # what Django holds once it has read the request
    request.content_type, request.content_params = "application/json", {}  # as a client declares it
    return parser.parse_body(request)


def refused(body: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(body)
    assert caught.value.status_code == 400
    assert caught.value.code == "invalid_json"
    return caught.value


def nested(depth: int) -> bytes:
    """A body whose objects/arrays nest ``depth`` levels (the outer object is level 1)."""
    return b'{"x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_parses_ordinary_json():
    body = {"subject": "u-1", "context": {"hour": 23, "ratio": 0.5, "tags": ["a", None, True]}}
    assert parse(json.dumps(body).encode()) == body


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused_with_their_name(constant: str):
    err = refused(f'{{"prediction": {{"output": 1, "confidence": {constant}}}}}'.encode())
    assert err.message == f"{constant} is not a valid JSON number; send a finite number or null"


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1.5e309"])
def test_numbers_too_large_for_a_float_are_refused(number: str):
    err = refused(f'{{"context": {{"x": {number}}}}}'.encode())
    assert err.message == f"the number {number} is too large; send a finite number"


def test_large_but_finite_numbers_pass():
    assert parse(b'{"x": 1e300, "y": -1.7976931348623157e308, "z": 5e-324}') == {
        "x": 1e300, "y": -1.7976931348623157e308, "z": 5e-324,
    }


def test_integers_with_too_many_digits_get_a_message_a_person_can_act_on():
    err = refused(b'{"x": ' + b"9" * 5000 + b"}")
    assert "5000 digits is too large" in err.message
    assert "sys.set_int_max_str_digits" not in err.message


def test_long_integers_within_the_limit_parse():
    assert parse(b'{"x": ' + b"9" * 400 + b"}") == {"x": int("9" * 400)}


@pytest.mark.parametrize("body", [b'{"subject": "\xff"}', b'{"subject": "caf\xc3"}', b"\xc3\x28"])
def test_invalid_utf8_is_refused(body: bytes):
    assert refused(body).message == "the request body must be UTF-8 encoded JSON"


@pytest.mark.parametrize(
    ("body", "start"),
    [
        (b"", "the request body is not valid JSON: Expecting value"),
        (b'{"subject": "u-1",}', "the request body is not valid JSON: "),
        (b"{'subject': 'u-1'}", "the request body is not valid JSON: "),
        (b'{"a": 1} trailing', "the request body is not valid JSON: Extra data"),
    ],
)
def test_malformed_json_says_where(body: bytes, start: str):
    assert refused(body).message.startswith(start)


def test_deeply_nested_bodies_are_refused_before_they_can_break_anything():
    for depth in (MAX_JSON_DEPTH + 1, 300, 100_000):
        err = refused(nested(depth))
        assert err.message == f"the request body is nested too deeply (more than {MAX_JSON_DEPTH} levels)"


def test_nesting_up_to_the_limit_is_fine():
    value = parse(nested(MAX_JSON_DEPTH))
    assert isinstance(value, dict)
    depth, item = 1, value["x"]
    while item != []:
        item, depth = item[0], depth + 1
    assert depth + 1 == MAX_JSON_DEPTH


def test_many_shallow_brackets_are_not_mistaken_for_depth():
    body = json.dumps({"items": [{"context": {"a": [1]}} for _ in range(500)]}).encode()
    assert len(parse(body)["items"]) == 500


def test_brackets_inside_strings_do_not_count_as_nesting():
    body = json.dumps({"subject": "[" * 500 + "{" * 500}).encode()
    assert parse(body) == {"subject": "[" * 500 + "{" * 500}


def test_non_object_json_parses_and_is_left_to_validation():
    assert parse(b"[1, 2]") == [1, 2]
    assert parse(b"null") is None


# --- validation_message -------------------------------------------------------------------


def errors_of(model: type, data: object) -> list[dict]:
    with pytest.raises(PydanticValidationError) as caught:
        model.model_validate(data)
    return caught.value.errors()  # type: ignore[return-value]


def test_missing_field_is_named_with_its_path():
    message, field = validation_message(errors_of(DecisionIn, {"prediction": {"confidence": 0.5}}))
    assert field == "prediction.output"
    assert message == "prediction.output: this field is required"


def test_ninja_locations_drop_body_and_payload():
    errors = [{"loc": ("body", "payload", "prediction", "confidence"), "msg": "Input should be a valid number",
               "type": "float_parsing"}]
    assert validation_message(errors) == ("prediction.confidence: Input should be a valid number",
                                          "prediction.confidence")


def test_more_problems_are_counted():
    one = [{"loc": ("a",), "msg": "bad", "type": "x"}]
    assert validation_message(one * 2)[0] == "a: bad (and 1 more problem)"
    assert validation_message(one * 3)[0] == "a: bad (and 2 more problems)"


def test_errors_without_a_location_have_no_field():
    message, field = validation_message(errors_of(DecisionIn, [1, 2]))
    assert field is None
    assert message == "Input should be a valid dictionary or instance of DecisionIn"


def test_value_errors_read_as_sentences():
    message, field = validation_message(errors_of(DecisionIn, {"occurred_at": "2026-03-15T23:47:00"}))
    assert field == "occurred_at"
    assert message == "occurred_at: needs a time zone, e.g. 2026-03-15T23:47:00Z"


def test_list_positions_appear_in_the_field():
    errors = errors_of(DecisionIn, {"prediction": {"output": 1, "votes": [{"model": "m", "output": 1},
                                                                          {"model": "", "output": 2}]}})
    message, field = validation_message(errors)
    assert field == "prediction.votes.1.model"
    assert message.startswith("prediction.votes.1.model: String should have at least 1 character")


def test_system_policy_errors_name_the_field():
    message, field = validation_message(errors_of(SystemIn, {"slug": "ok", "level": 4}))
    assert field == "level"
    assert message == "level: Input should be 1, 2 or 3"


# --- text PostgreSQL cannot store -----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "what"),
    [
        (b'{"subject": "a\\u0000b"}', "subject", "a NUL character (\\u0000)"),
        (b'{"context": {"k": ["ok", {"deep": "\\u0000"}]}}', "context.k.1.deep", "a NUL character (\\u0000)"),
        (b'{"context": {"bad\\u0000key": 1}}', "context", "a key with a NUL character (\\u0000)"),
        (b'{"features": {"x": "\\ud800"}}', "features.x", "an unpaired UTF-16 surrogate"),
        (b'{"features": {"x": "\\udc00 after"}}', "features.x", "an unpaired UTF-16 surrogate"),
        (b'{"prediction": {"output": "\\ude00\\ud83d"}}', "prediction.output", "an unpaired UTF-16 surrogate"),
        (b'{"prediction": {"output": 1, "votes": [{"model": "m\\u0000", "output": 1}]}}', "prediction.votes.0.model",
         "a NUL character (\\u0000)"),
    ],
)
def test_unstorable_text_is_a_validation_error_at_its_place(body: bytes, field: str, what: str):
    message, got = validation_message(errors_of(DecisionIn, parse(body)))
    assert got == field
    assert message == f"{field}: contains {what}, which cannot be stored; remove it"


@pytest.mark.parametrize(
    "text",
    [
        "plain ascii",
        "a literal backslash-u: \\u0000",
        "accents: café, naïve",
        "Hangul (UTF-8 lead byte 0xED): 한국어 힣",
        "emoji: \U0001F600",
        "tab\tand newline\ninside",
    ],
)
def test_storable_text_passes(text: str):
    body = json.dumps({"subject": text, "context": {text: [text]}}).encode()
    decision = DecisionIn.model_validate(parse(body))
    assert decision.context == {text: [text]}
    raw_utf8 = json.dumps({"subject": text, "context": {text: [text]}}, ensure_ascii=False).encode()
    assert DecisionIn.model_validate(parse(raw_utf8)).subject == text


def test_an_escaped_surrogate_pair_is_one_character_and_passes():
    decision = DecisionIn.model_validate(parse(b'{"subject": "\\ud83d\\ude00", "context": {"e": "\\ud83d\\ude00"}}'))
    assert decision.subject == "\U0001F600"
    assert decision.context == {"e": "\U0001F600"}
