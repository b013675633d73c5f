"""Batches are stored with psycopg's COPY (oversight/bulk.py): every value must
read back exactly as the client sent it, however awkward the text."""

from __future__ import annotations

import json
from typing import Any

from oversight.models import Decision
from reviewqueue.models import ReviewItem

AWKWARD = [
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash and \\N and \\. and \\t literally",
    "quotes \" and ' and tab-escape \\\t mixed",
    "unicode: ünïcødé ✓ 漢字 😀 and \u2028 line separator",
    "trailing backslash \\",
    "",
]


def batch_item(i: int, text: str) -> dict[str, Any]:
    return {
        "subject": text,
        "context": {"note": text, text: [text, {"deeper": text}], "n": i},
        "features": {"x": 0.1 + i, "big": 12345678901234567890, "tiny": 1e-300, "neg": -0.0, "t": True},
        "prediction": {"output": {"items": [text]}, "confidence": 0.9 if i % 2 else 0.1, "model": text or "m"},
        "idempotency_key": f"awkward-{i}-{text[:5]}",
        "occurred_at": "2026-03-15T23:47:00.123456+05:30",
    }


def test_awkward_text_reads_back_exactly_from_a_copy_batch(world):
    items = [batch_item(i, text) for i in range(60) for text in [AWKWARD[i % len(AWKWARD)]]]
    r = world.client_for("sup").post(
        "/api/v1/systems/sup/decisions/batch",
        json.dumps({"items": items}, ensure_ascii=False).encode(),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {world.keys['sup']}",
    )
    assert r.status_code == 200, r.content
    results = r.json()["results"]
    assert len(results) == len(items)  # 60 items: over the COPY threshold
    for item, result in zip(items, results, strict=True):
        d = Decision.objects.get(idempotency_key=item["idempotency_key"])
        assert result["id"] == d.public_id
        assert d.subject == item["subject"]
        assert d.context == item["context"]
        assert d.features == item["features"]
        assert d.prediction == {**item["prediction"], "model": item["prediction"]["model"].strip(), "votes": []}
        assert d.model == item["prediction"]["model"].strip()
        assert d.confidence == item["prediction"]["confidence"]
        assert d.output == (item["prediction"]["output"] if d.status == "released" else None)
        assert d.occurred_at.isoformat() == "2026-03-15T18:17:00.123456+00:00"
        assert len(d.request_hash) == 64
    # Low confidence went to people: review items written by the same COPY path.
    pending = Decision.objects.filter(status="pending_review").count()
    assert pending == 30
    assert ReviewItem.objects.filter(kind="gate").count() == pending


def test_bulk_rows_hold_what_the_orms_own_conversion_would_write(world):
    """``bulk.row`` skips the ORM's per-field conversion where it changes nothing and encodes JSON
    with orjson: every value must still equal what ``get_db_prep_save`` gives."""
    from django.db import connection

    from oversight import bulk, config, decisions
    from oversight.schemas import DecisionIn

    entry = config.cache.current().systems_by_slug["sup"]
    rows = [decisions.build(entry, DecisionIn.model_validate(batch_item(i, t)), decisions.timezone.now())
            for i, t in enumerate(AWKWARD)]
    rows += [r for d in rows for r in decisions.hooks.rows_for(entry, [d])]  # their review items too
    assert any(isinstance(r, ReviewItem) for r in rows)

    def plain(v: Any) -> Any:
        obj = getattr(v, "obj", v)  # a JSON wrapper: compare what it holds, then its encoding
        if obj is not v:
            return ("json", json.loads(v.dumps(obj) if v.dumps else json.dumps(obj)))
        return v

    for r in rows:
        orm = [f.get_db_prep_save(getattr(r, f.attname), connection) for f in bulk.fields(type(r))]
        assert [plain(v) for v in bulk.row(r)] == [plain(v) for v in orm]
