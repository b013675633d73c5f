"""Combining hosted models' answers into one prediction (pure functions, no I/O).

* A **context model** (role ``context``) does not vote; it may veto whole models ("the bedtime
  listener gets nothing from the collaborative filter") or items ("no death metal at 23:00"),
  however sure the voters are.
* **Voters** combine by weight. Outputs that are item lists (``{"items": [...]}``) are fused by
  weighted reciprocal rank: an item scores ``weight × confidence / rank`` in each list that holds
  it. Any other output wins by weighted vote: identical outputs pool ``weight × confidence``.
* Every vote is recorded with the decision (``Combined.record``), with why the winner won.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from oversight import jsonutil
from oversight.adapters import Answer

DEFAULT_CONFIDENCE = 0.5  # a voter that gives none counts as unsure


@dataclass(slots=True)
class Combined:
    output: Any = None
    confidence: float | None = None
    model: str = ""  # the voter that carried the decision (for labels: the winner's strongest voter)
    reasons: list[str] = field(default_factory=list)
    votes: list[dict[str, Any]] = field(default_factory=list)  # what each model said, for the record
    failure: str = ""  # no voter answered: error | garbage | deadline (the most common)
    routing: dict[str, Any] = field(default_factory=dict)  # a rollout's or the bandit's choice (oversight.scoring)

    @property
    def answered(self) -> bool:
        return bool(self.model)

    def record(self) -> dict[str, Any]:
        """The decision's ``prediction``: the combined answer and every model's vote."""
        rec = {"output": self.output, "confidence": self.confidence, "model": self.model,
               "votes": self.votes, "hosted": True}
        if self.routing:
            rec["routing"] = self.routing
        return rec


def _items(output: Any) -> list[Any] | None:
    if isinstance(output, dict) and isinstance(output.get("items"), list):
        return output["items"]
    return None


def _vote_record(a: Answer, weight: float, role: str, vetoed: str = "") -> dict[str, Any]:
    rec: dict[str, Any] = {"model": a.model, "role": role, "weight": weight, "latency_ms": round(a.latency_ms, 2)}
    if a.ok:
        rec["output"] = a.output
        rec["confidence"] = a.confidence
    else:
        rec["error"] = a.error
        rec["detail"] = a.detail
    if a.veto_items or a.veto_models:
        rec["veto"] = {"items": list(a.veto_items), "models": list(a.veto_models), "reason": a.veto_reason}
    if vetoed:
        rec["vetoed"] = vetoed
    return rec


def _conf(a: Answer) -> float:
    return a.confidence if a.confidence is not None else DEFAULT_CONFIDENCE


def combine(answers: Sequence[Answer], weights: dict[str, float], roles: dict[str, str]) -> Combined:
    """The ensemble's prediction from every model's answer (``weights``/``roles`` by model name)."""
    out = Combined()
    veto_models: dict[str, str] = {}
    veto_items: dict[str, str] = {}
    for a in answers:
        if a.ok and roles.get(a.model) == "context":
            why = a.veto_reason or f"context model {a.model}"
            for m in a.veto_models:
                veto_models.setdefault(m, f"{why} ({a.model})")
            for item in a.veto_items:
                veto_items.setdefault(item, f"{why} ({a.model})")
    voters: list[Answer] = []
    failures: list[str] = []
    seen_veto: dict[str, str] = {}  # vetoed items some voter gave, in order, with the veto's reason
    longest = 0  # the longest list a voter gave: the fused list is as long, vetoes notwithstanding
    for a in answers:
        role = roles.get(a.model, "voter")
        weight = weights.get(a.model, 1.0)
        if not a.ok:
            out.reasons.append(f"model {a.model} did not answer ({a.error}: {a.detail})")
            out.votes.append(_vote_record(a, weight, role))
            if role != "context":
                failures.append(a.error)
            continue
        if role == "context":
            out.votes.append(_vote_record(a, weight, role))
            continue
        if a.model in veto_models:
            out.reasons.append(f"model {a.model} vetoed: {veto_models[a.model]}")
            out.votes.append(_vote_record(a, weight, role, vetoed=veto_models[a.model]))
            continue
        out.votes.append(_vote_record(a, weight, role))  # what the model said, vetoed items included
        items = _items(a.output)
        if items is not None:
            longest = max(longest, len(items))
        if veto_items and items is not None:  # vetoed items leave every list, whatever the others answer
            kept = [i for i in items if not (isinstance(i, str) and i in veto_items)]
            for item in items:
                if isinstance(item, str) and item in veto_items and item not in seen_veto:
                    seen_veto[item] = veto_items[item]
            a = replace(a, output={**a.output, "items": kept})
        if weight > 0 and a.output is not None:  # a voter that answers nothing casts no vote
            voters.append(a)
    by_reason: dict[str, list[str]] = {}
    for item, why in seen_veto.items():
        by_reason.setdefault(why, []).append(item)
    for why, vetoed in by_reason.items():
        shown = ", ".join(vetoed[:10]) + (f" and {len(vetoed) - 10} more" if len(vetoed) > 10 else "")
        out.reasons.append(f"{'items' if len(vetoed) > 1 else 'item'} {shown} vetoed: {why}")
    if not voters:
        if failures:
            out.failure = max(failures, key=failures.count)  # a tie: the first model's
        return out
    lists = [_items(a.output) for a in voters]
    if all(items is not None for items in lists):
        _fuse_items(out, voters, lists, weights, longest)  # type: ignore[arg-type]
    else:
        _vote_labels(out, voters, weights)
    return out


def _fuse_items(out: Combined, voters: list[Answer], lists: list[list[Any]], weights: dict[str, float],
                length: int) -> None:
    scores: dict[str, float] = {}
    first_seen: dict[str, Any] = {}
    contribution: dict[str, float] = {}
    for a, items in zip(voters, lists, strict=True):
        strength = weights.get(a.model, 1.0) * _conf(a)
        for rank, item in enumerate(items, start=1):
            key = item if isinstance(item, str) else jsonutil.dumps(item, sort_keys=True).decode()
            first_seen.setdefault(key, item)
            scores[key] = scores.get(key, 0.0) + strength / rank
            contribution[a.model] = contribution.get(a.model, 0.0) + strength / rank
    ranked = sorted(scores, key=lambda k: -scores[k])[:length]
    base = dict(voters[0].output) if isinstance(voters[0].output, dict) else {}
    base["items"] = [first_seen[k] for k in ranked]
    total_w = sum(weights.get(a.model, 1.0) for a in voters)
    out.output = base
    out.confidence = round(sum(weights.get(a.model, 1.0) * _conf(a) for a in voters) / total_w, 6)
    out.model = max(voters, key=lambda a: contribution.get(a.model, 0.0)).model
    if len(voters) == 1:
        out.reasons.append(f"answer from model {out.model} (confidence {_fmt(out.confidence)})")
    else:
        said = ", ".join(f"{a.model} {_fmt(_conf(a))}×{weights.get(a.model, 1.0):g}" for a in voters)
        out.reasons.append(f"ensemble of {len(voters)} models ({said}): items fused by weighted rank; "
                           f"{out.model} contributed most")


def _vote_labels(out: Combined, voters: list[Answer], weights: dict[str, float]) -> None:
    pools: dict[bytes, float] = {}
    outputs: dict[bytes, Any] = {}
    strongest: dict[bytes, Answer] = {}
    for a in voters:
        key = jsonutil.dumps(a.output, sort_keys=True)
        strength = weights.get(a.model, 1.0) * _conf(a)
        pools[key] = pools.get(key, 0.0) + strength
        outputs.setdefault(key, a.output)
        if key not in strongest or strength > weights.get(strongest[key].model, 1.0) * _conf(strongest[key]):
            strongest[key] = a
    winner = max(pools, key=lambda k: pools[k])
    total_w = sum(weights.get(a.model, 1.0) for a in voters)
    out.output = outputs[winner]
    out.confidence = round(pools[winner] / total_w, 6)
    out.model = strongest[winner].model
    if len(voters) == 1:
        out.reasons.append(f"answer from model {out.model} (confidence {_fmt(out.confidence)})")
        return
    agree = [a.model for a in voters if jsonutil.dumps(a.output, sort_keys=True) == winner]
    out.reasons.append(
        f"ensemble of {len(voters)} models: {', '.join(agree)} agreed, {_fmt(pools[winner])} of "
        f"{_fmt(sum(pools.values()))} weighted confidence")


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:.2f}"
