"""Is this system stopped, and why: one answer for the banner, the pages and the live push.

Pure functions over the gate's own cached snapshot (``config.Snapshot``), so a page says exactly
what the gate does: a global or system kill switch stops the whole system, a model kill switch
leaves that model out. Who flipped a switch and since when are not in the snapshot; they are read
once per config epoch (one query, and only while something is engaged), not once per page.

Circuit breakers add their state here too (``SystemStop``), so every page keeps reading one place.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateformat import format as date_format
from django.utils.functional import SimpleLazyObject

from oversight import access, config
from oversight.models import KillSwitch

SINCE_FORMAT = "Y-m-d H:i e"


@dataclass(frozen=True)
class Flip:
    """An engaged kill switch: why, who, since when."""

    reason: str
    by: str = ""
    since: datetime | None = None

    @property
    def since_text(self) -> str:
        return date_format(timezone.localtime(self.since), SINCE_FORMAT) if self.since else ""

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "by": self.by, "since": self.since.isoformat() if self.since else None,
                "since_text": self.since_text}


def _by(who: str) -> str:
    return f" (by {who})" if who else ""


@dataclass(frozen=True)
class SystemStop:
    """One system's stop state as the gate sees it."""

    id: int
    slug: str
    name: str
    global_reason: str | None = None
    killed_reason: str | None = None  # its own (system) kill switch
    killed: Flip | None = None  # who engaged that switch, since when
    models_killed: Mapping[str, Flip] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)  # everything that stops it or a model, in words
    global_by: str = ""  # who engaged the global switch
    breaker: str = "closed"  # the system's circuit breaker: closed | open | half_open
    breaker_reason: str = ""
    models_tripped: Mapping[str, str] = field(default_factory=dict)  # model -> why its breaker is open

    @property
    def tripped(self) -> bool:
        """Its breaker is open or half-open: the fallback answers (all, or all but a canary share)."""
        return self.breaker != "closed"

    @property
    def breaker_line(self) -> str:
        """The breaker as pages show it next to the system ("" when closed and no model's is open)."""
        parts = []
        if self.breaker == "open":
            parts.append(f"circuit breaker open: {self.breaker_reason}")
        elif self.breaker == "half_open":
            parts.append(f"circuit breaker half-open (a canary share goes to the model): {self.breaker_reason}")
        parts += [f"model {m}'s breaker open: {r}" for m, r in sorted(self.models_tripped.items())]
        return "; ".join(parts)

    @property
    def stopped(self) -> str | None:
        """Why the whole system is stopped (global first), in the gate's words; None when it runs."""
        if self.global_reason is not None:
            return f"global kill switch engaged: {self.global_reason}"
        if self.killed_reason is not None:
            return f"system kill switch engaged: {self.killed_reason}"
        return None

    @property
    def stop_line(self) -> str | None:
        """Why the whole system is stopped and by whom, as pages show it next to the system: the
        global switch first, then its own when both are engaged. None when it runs."""
        if self.stopped is None:
            return None
        parts = []
        if self.global_reason is not None:
            parts.append(f"global kill switch engaged: {self.global_reason}" + _by(self.global_by))
        if self.killed_reason is not None:
            who = self.killed.by if self.killed else ""
            parts.append(f"system kill switch engaged: {self.killed_reason}{_by(who)}")
        return "; ".join(parts)

    @property
    def models_line(self) -> str:
        """The stopped models as pages list them ("" when none is)."""
        parts = [f"{m} — {f.reason}{_by(f.by)}" for m, f in self.models_killed.items()]
        return "Models stopped: " + "; ".join(parts) if parts else ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug, "name": self.name, "stopped": self.stopped, "killed_reason": self.killed_reason,
            "killed_by": self.killed.by if self.killed else "",
            "killed_since": self.killed.as_dict()["since"] if self.killed else None,
            "killed_since_text": self.killed.since_text if self.killed else "",
            "models_killed": {m: f.as_dict() for m, f in self.models_killed.items()},
            "models_line": self.models_line,
            "reasons": list(self.reasons),
            "breaker": self.breaker, "breaker_reason": self.breaker_reason,
            "models_tripped": dict(self.models_tripped), "breaker_line": self.breaker_line,
        }


@dataclass(frozen=True)
class StopState:
    """What is stopped everywhere, as of one config epoch."""

    epoch: int
    everything: Flip | None  # the global kill switch, when engaged
    systems: list[SystemStop]

    @property
    def by_slug(self) -> dict[str, SystemStop]:
        return {s.slug: s for s in self.systems}

    @property
    def stopped(self) -> dict[str, str]:
        """Every stopped system (by the global switch or its own): slug -> why in the gate's words, and who."""
        return {s.slug: line for s in self.systems if (line := s.stop_line) is not None}

    @property
    def killed_systems(self) -> list[SystemStop]:
        """Systems stopped by their own kill switch."""
        return [s for s in self.systems if s.killed_reason is not None]

    @property
    def tripped_systems(self) -> list[SystemStop]:
        """Systems whose circuit breaker is open or half-open."""
        return [s for s in self.systems if s.tripped]

    def models_of(self, slug: str | None) -> list[tuple[str, Flip]]:
        s = self.by_slug.get(slug or "")
        return sorted(s.models_killed.items()) if s is not None else []


Key = tuple[str, int | None, str]  # (scope, system id, model)


def _engaged(snapshot: config.Snapshot) -> frozenset[tuple[Key, str]]:
    """The engaged switches the snapshot knows, with their reasons."""
    found: set[tuple[Key, str]] = set()
    for e in snapshot.systems_by_slug.values():
        if e.kills.global_reason is not None:
            found.add(((KillSwitch.Scope.GLOBAL, None, ""), e.kills.global_reason))
        if e.kills.system_reason is not None:
            found.add(((KillSwitch.Scope.SYSTEM, e.id, ""), e.kills.system_reason))
        found.update(((KillSwitch.Scope.MODEL, e.id, m), r) for m, r in e.kills.models.items())
    return frozenset(found)


class _Flips:
    """Who engaged each switch and when: read when the engaged switches change, kept per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: tuple[frozenset[tuple[Key, str]], dict[Key, Flip]] | None = None

    def get(self, snapshot: config.Snapshot) -> dict[Key, Flip]:
        engaged = _engaged(snapshot)
        if not engaged:
            return {}
        seen = self._seen
        if seen is not None and seen[0] == engaged:
            return seen[1]
        rows = KillSwitch.objects.filter(engaged=True).select_related("changed_by")
        flips = {
            (k.scope, k.system_id, k.model): Flip(k.reason, k.changed_by.get_username() if k.changed_by else "",
                                                  k.changed_at)
            for k in rows
        }
        with self._lock:
            self._seen = (engaged, flips)
        return flips

    def clear(self) -> None:
        self._seen = None


flips = _Flips()


def system_stop(entry: config.SystemEntry, known: Mapping[Key, Flip] | None = None) -> SystemStop:
    """One system's stop state from its snapshot entry (``known``: who flipped what, when)."""
    known = known or {}
    kills = entry.kills
    reasons = [r for r in (kills.stopped,) if r]
    if kills.global_reason is not None and kills.system_reason is not None:
        reasons.append(f"system kill switch engaged: {kills.system_reason}")
    models = {
        m: known.get((KillSwitch.Scope.MODEL, entry.id, m)) or Flip(r) for m, r in sorted(kills.models.items())
    }
    reasons += [f"model {m} is stopped: kill switch engaged ({f.reason})" for m, f in models.items()]
    killed = None
    if kills.system_reason is not None:
        killed = known.get((KillSwitch.Scope.SYSTEM, entry.id, "")) or Flip(kills.system_reason)
    everything = known.get((KillSwitch.Scope.GLOBAL, None, "")) if kills.global_reason is not None else None
    b = entry.breaker
    if b.state == "open":
        reasons.append(f"circuit breaker open: {b.reason}")
    elif b.state == "half_open":
        reasons.append(f"circuit breaker half-open: {b.reason}")
    reasons += [f"model {m} is stopped: circuit breaker open ({r})" for m, r in sorted(b.models.items())]
    return SystemStop(entry.id, entry.slug, entry.name, kills.global_reason, kills.system_reason, killed, models,
                      reasons, everything.by if everything else "", b.state, b.reason, dict(b.models))


def stop_state(snapshot: config.Snapshot, known: Mapping[Key, Flip] | None = None) -> StopState:
    known = known or {}
    systems = [system_stop(e, known) for e in snapshot.systems_by_slug.values()]
    # The snapshot keeps the global switch on each system's entry (with no system, nothing is stopped).
    glob = next((e.kills.global_reason for e in snapshot.systems_by_slug.values()), None)
    everything = None
    if glob is not None:
        everything = known.get((KillSwitch.Scope.GLOBAL, None, "")) or Flip(glob)
    return StopState(snapshot.epoch, everything, systems)


def current() -> StopState:
    """The stop state as of now: the gate's cached snapshot, and who flipped what (cached per change)."""
    snapshot = config.cache.current()
    return stop_state(snapshot, flips.get(snapshot))


# --- the banner on every page --------------------------------------------------------------------

PAGE_SYSTEM_ATTR = "oversight_page_system"


def page_is_about(request: HttpRequest, slug: str) -> None:
    """Say which system a page is about, so its banner shows that system's stopped models too."""
    setattr(request, PAGE_SYSTEM_ATTR, slug)


def page_system(request: HttpRequest) -> str:
    slug = getattr(request, PAGE_SYSTEM_ATTR, None)
    if slug is None and request.resolver_match is not None:
        slug = request.resolver_match.kwargs.get("slug")
    return str(slug or "")


@dataclass(frozen=True)
class Banner:
    """What the banner at the top of a page says: the global switch, the systems stopped by their own
    switch, and the stopped models of the system the page is about."""

    state: StopState
    page_system: str
    models: list[tuple[str, Flip]]

    @property
    def shown(self) -> bool:
        return bool(self.state.everything or self.state.killed_systems or self.models or self.state.tripped_systems)


def banner(request: HttpRequest, state: StopState | None = None) -> Banner:
    state = state if state is not None else current()
    slug = page_system(request)
    return Banner(state, slug, state.models_of(slug))


def context_processor(request: HttpRequest) -> dict[str, Any]:
    """``stop_banner`` for people with a role, read only when a template uses it."""
    if not access.roles_of(getattr(request, "user", None)):
        return {}
    return {"stop_banner": SimpleLazyObject(lambda: banner(request))}
