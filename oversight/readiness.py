"""The readiness assessment: five questions about a system, scored 0–5. Plain Python, no database.

Each question has a few answers; only the safe one earns its point, so the score is the number of
questions answered the safe way. Two rules follow from it:

- **level 3 needs a score of at least 4** (``check_level``): a system is not made autonomous, and an
  autonomous system's score is not lowered below 4, without a recorded assessment that allows it;
- **a score of 0–1 keeps the system out of live traffic** (``hold_reason``): the gate sends every
  decision to a person until a better assessment is recorded.

A system never assessed has no score (None): the gate treats it as before the assessment existed.
The action that records an assessment is ``oversight.actions.assess_readiness``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oversight.errors import ActionError

MAX_SCORE = 5
LEVEL_3_MIN_SCORE = 4  # level 3 (autonomous) cannot be chosen below this
LIVE_MIN_SCORE = 2  # below this, every decision waits for a person
AUTONOMOUS = 3


@dataclass(frozen=True)
class Choice:
    key: str
    label: str
    points: int  # 1: the safe answer; 0: not safe yet


@dataclass(frozen=True)
class Question:
    key: str
    text: str
    short: str  # how a message names it
    choices: tuple[Choice, ...]

    def choice(self, key: str) -> Choice | None:
        return next((c for c in self.choices if c.key == key), None)


QUESTIONS: tuple[Question, ...] = (
    Question("feedback", "Can the model change the data it learns from?", "its own training data", (
        Choice("yes", "Yes: its decisions feed its training data", 0),
        Choice("partly", "Partly: some of its decisions come back as training data", 0),
        Choice("no", "No: it learns from data its decisions do not touch", 1),
    )),
    Question("blast_radius", "What is the blast radius of a wrong decision?", "the blast radius", (
        Choice("one_reversible", "One person, and it can be undone", 1),
        Choice("many_reversible", "Many people, but it can be undone", 0),
        Choice("irreversible", "It cannot be undone", 0),
    )),
    Question("drift", "How fast can reality drift?", "how fast reality drifts", (
        Choice("months", "Slowly: over months", 1),
        Choice("weeks", "Over weeks", 0),
        Choice("overnight", "Overnight", 0),
    )),
    Question("stop", "Can a person stop it within 60 seconds?", "stopping it within 60 s", (
        Choice("drilled", "Yes: the kill switch is drilled", 1),
        Choice("untested", "There is a kill switch, but it was not tested", 0),
        Choice("no", "No", 0),
    )),
    Question("shared", "Do its models share data and features with other systems?", "shared data and features", (
        Choice("no", "No", 1),
        Choice("some", "Some", 0),
        Choice("yes", "Yes", 0),
    )),
)
BY_KEY: dict[str, Question] = {q.key: q for q in QUESTIONS}


def _field(key: str) -> str:
    return f"answers.{key}"


def check_answers(answers: Mapping[str, Any]) -> dict[str, str]:
    """Every question answered with one of its choices, in question order; else ActionError naming
    the field (``answers.<question>``)."""
    for key in answers:
        if key not in BY_KEY:
            raise ActionError("invalid", f"unknown question {key!r}; the questions are "
                                         f"{', '.join(BY_KEY)}", _field(str(key)))
    out: dict[str, str] = {}
    for q in QUESTIONS:
        given = answers.get(q.key)
        if given is None or given == "":
            raise ActionError("invalid", f"answer “{q.text}” ({q.key}): one of "
                                         f"{', '.join(c.key for c in q.choices)}", _field(q.key))
        if not isinstance(given, str) or q.choice(given) is None:
            raise ActionError("invalid", f"unknown answer {given!r} to “{q.text}” ({q.key}); choose one of "
                                         f"{', '.join(c.key for c in q.choices)}", _field(q.key))
        out[q.key] = given
    return out


def score(answers: Mapping[str, str]) -> int:
    """The number of questions answered the safe way (answers already checked)."""
    total = 0
    for q in QUESTIONS:
        c = q.choice(answers.get(q.key, ""))
        total += c.points if c is not None else 0
    return total


def missing(answers: Mapping[str, str]) -> list[Question]:
    """The questions not answered the safe way: what stands between the system and a full score."""
    return [q for q in QUESTIONS if (c := q.choice(answers.get(q.key, ""))) is None or c.points == 0]


def _gaps(answers: Mapping[str, str] | None) -> str:
    if answers is None:
        return "it has no readiness assessment yet"
    gaps = missing(answers)
    if not gaps:
        return "every question is answered the safe way"
    return "not safe yet: " + "; ".join(f"{q.short} ({_label(q, answers.get(q.key))})" for q in gaps)


def _label(q: Question, key: str | None) -> str:
    c = q.choice(key or "")
    return c.label.lower() if c is not None else "not answered"


def check_level(level: int, current_level: int | None, recorded: int | None,
                answers: Mapping[str, str] | None = None) -> None:
    """Refuse making a system level 3 (from another level, or new: ``current_level`` None) without a
    recorded score of at least 4. A system already at level 3 keeps it (only a new assessment below 4
    is refused, by ``check_assessment``)."""
    if level != AUTONOMOUS or current_level == AUTONOMOUS:
        return
    if recorded is None:
        where = ("a new system has none yet: create it at level 1 or 2, record its readiness assessment, "
                 "then raise it" if current_level is None else "record its readiness assessment first")
        raise ActionError("invalid", f"level 3 (autonomous) needs a readiness score of at least "
                                     f"{LEVEL_3_MIN_SCORE} of {MAX_SCORE}; {where}", "level")
    if recorded < LEVEL_3_MIN_SCORE:
        raise ActionError("invalid", f"level 3 (autonomous) needs a readiness score of at least "
                                     f"{LEVEL_3_MIN_SCORE} of {MAX_SCORE}; this system scores {recorded} of "
                                     f"{MAX_SCORE}, {_gaps(answers)}", "level")


def check_assessment(level: int, new_score: int, answers: Mapping[str, str]) -> None:
    """Refuse a score below 4 for a level-3 system: lower its level first."""
    if level == AUTONOMOUS and new_score < LEVEL_3_MIN_SCORE:
        raise ActionError("invalid", f"this system is level 3 (autonomous), which needs a readiness score of at "
                                     f"least {LEVEL_3_MIN_SCORE} of {MAX_SCORE}; these answers score {new_score} "
                                     f"({_gaps(answers)}): lower its level first, then record this assessment",
                          "answers")


def hold_reason(recorded: int | None) -> str | None:
    """Why the gate holds every decision for a person (score 0–1), or None (never assessed: None)."""
    if recorded is None or recorded >= LIVE_MIN_SCORE:
        return None
    return (f"readiness score {recorded} of {MAX_SCORE}: every decision waits for a person until the "
            "assessment is fixed")
