"""Hosted models as code: ``apply_policies`` registers and updates them with the system's policy."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from oversight.models import AISystem, AuditEvent, HostedModel
from tests.conftest import World

POLICY = """
systems:
  - slug: recs
    name: Recommender
    level: 2
    confidence_threshold: 0.5
    fallback: {items: [top-1]}
    routing: {mode: ensemble, wait_ms: 300}
    models:
      - {name: collab, kind: python, target: "tests.hosted_models:recommend", weight: WEIGHT}
      - {name: bedtime, kind: python, target: "tests.hosted_models:bedtime", role: context}
"""


def _apply(tmp_path: Path, text: str) -> str:
    f = tmp_path / "policies.yaml"
    f.write_text(text)
    out = io.StringIO()
    call_command("apply_policies", str(f), stdout=out)
    return out.getvalue()


def test_models_are_created_then_changed_then_left_alone(world: World, tmp_path: Path) -> None:
    out = _apply(tmp_path, POLICY.replace("WEIGHT", "2"))
    assert "recs: model collab: created" in out
    assert "recs: model bedtime: created" in out
    collab = HostedModel.objects.get(system__slug="recs", name="collab")
    assert collab.weight == 2
    assert HostedModel.objects.get(name="bedtime").role == "context"
    out = _apply(tmp_path, POLICY.replace("WEIGHT", "3"))
    assert "recs: model collab: changed" in out
    assert "recs: model bedtime: unchanged" in out
    assert HostedModel.objects.get(name="collab").weight == 3
    change = AuditEvent.objects.filter(action="model.update", target="collab").get()
    assert change.data == {"weight": {"from": 2.0, "to": 3.0}}


def test_a_model_that_does_not_import_stops_the_file_before_anything_is_applied(world: World, tmp_path: Path) -> None:
    bad = POLICY.replace("WEIGHT", "1").replace("tests.hosted_models:bedtime", "tests.no_such_module:bedtime")
    with pytest.raises(CommandError, match=r"systems\[0\]\.models\[1\]: the dotted path does not import: module "
                                           r"'tests.no_such_module' does not import"):
        _apply(tmp_path, bad)
    assert not AISystem.objects.filter(slug="recs").exists()
    wrong = POLICY.replace("WEIGHT", "-1")
    with pytest.raises(CommandError, match=r"systems\[0\]\.models\[0\]: weight: .*greater than or equal to 0"):
        _apply(tmp_path, wrong)
