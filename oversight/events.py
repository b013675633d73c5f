"""Live events: small JSON messages pushed to Channels groups, always after commit."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from oversight import stopstate

log = logging.getLogger(__name__)

OVERVIEW_GROUP = "overview"
STATUS_GROUP = "status"  # every logged-in page: what is stopped (the banner)


def system_group(slug: str) -> str:
    return f"system.{slug}"


# After the channel layer times out (Redis hung), this process skips pushes for QUIET_S seconds,
# so one request waits at most one EVENTS_SEND_TIMEOUT_S however many pushes it makes.
QUIET_S = 5.0
_quiet_until = 0.0


def send_now(groups: list[str], message: dict[str, Any]) -> None:
    send_all([(groups, message)])


def send_all(pushes: list[tuple[list[str], dict[str, Any]]]) -> None:
    """Every push at once (one hop into the event loop, the group sends side by side)."""
    global _quiet_until
    layer = get_channel_layer()
    if layer is None or not pushes:
        return
    if time.monotonic() < _quiet_until:
        return  # the layer just failed: skip pushes for a moment rather than wait again
    sends = [(group, message) for groups, message in pushes for group in groups]

    async def run() -> list[Any]:
        # Bounded: a Redis that hangs (stopped, not dead) costs a request this long at most, not the
        # socket's timeout per send; the pages catch up on their next push or reconnect.
        return await asyncio.wait_for(asyncio.gather(
            *(layer.group_send(group, {"type": "push", "message": message}) for group, message in sends),
            return_exceptions=True,
        ), timeout=settings.EVENTS_SEND_TIMEOUT_S)

    try:
        results = async_to_sync(run)()
    except TimeoutError:  # the layer hangs: let the next requests through without waiting on it again
        log.warning("could not push %d messages in time; pushes pause for %.0f s", len(sends), QUIET_S)
        _quiet_until = time.monotonic() + QUIET_S
        return
    except Exception:  # a live page missing one push must never fail a write
        log.warning("could not push %d messages", len(sends), exc_info=True)
        return
    for (group, message), result in zip(sends, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("could not push %s to %s", message.get("type"), group, exc_info=result)


def send_on_commit(groups: list[str], message: dict[str, Any]) -> None:
    transaction.on_commit(lambda: send_now(groups, message))


def send_all_on_commit(pushes: list[tuple[list[str], dict[str, Any]]]) -> None:
    transaction.on_commit(lambda: send_all(pushes))


def status_message(state: stopstate.StopState) -> dict[str, Any]:
    """What the banner of every page shows: the whole stop state (not a delta), with its epoch so a
    page ignores a push older than what it already shows."""
    return {
        "type": "status",
        "epoch": state.epoch,
        "global": state.everything.as_dict() if state.everything else None,
        "systems": [s.as_dict() for s in state.systems
                    if s.killed_reason is not None or s.models_killed or s.tripped or s.models_tripped],
        "stopped": state.stopped,
    }


def send_status_on_commit() -> None:
    """After a change to what is stopped commits: the state as of then, to every page."""
    transaction.on_commit(lambda: send_now([STATUS_GROUP], status_message(stopstate.current())))
