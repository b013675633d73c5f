"""The stored prediction is what pydantic's JSON dump of the validated prediction would be."""

from __future__ import annotations

from typing import Any

import pytest

from oversight.decisions import _prediction_json
from oversight.schemas import PredictionIn

CASES: list[dict[str, Any]] = [
    {"output": {"items": ["a", "b"]}, "confidence": 0.9, "model": "collab-v3"},
    {"output": None},
    {"output": [1, 2.5, "x", None, True], "confidence": 1, "model": "  padded  "},
    {
        "output": "blend",
        "confidence": 0.42,
        "model": "ensemble",
        "votes": [
            {"model": " a ", "output": {"k": [1, {"n": None}]}, "confidence": 0.4},
            {"model": "b", "output": 3, "confidence": None},
            {"model": "c", "output": "x"},
        ],
        "unknown": "ignored",
    },
]


@pytest.mark.parametrize("raw", CASES)
def test_prediction_json_equals_pydantics_json_dump(raw: dict[str, Any]) -> None:
    p = PredictionIn.model_validate(raw)
    assert _prediction_json(p) == p.model_dump(mode="json")
    assert list(_prediction_json(p)) == list(p.model_dump(mode="json"))  # same key order in the stored JSON
