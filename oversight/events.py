"""Live events: small JSON messages pushed to Channels groups, always after commit."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

OVERVIEW_GROUP = "overview"


def system_group(slug: str) -> str:
    return f"system.{slug}"


def send_now(groups: list[str], message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    payload = {"type": "push", "message": message}
    for group in groups:
        try:
            async_to_sync(layer.group_send)(group, payload)
        except Exception:  # a live page missing one push must never fail a write
            log.warning("could not push %s to %s", message.get("type"), group, exc_info=True)


def send_on_commit(groups: list[str], message: dict[str, Any]) -> None:
    transaction.on_commit(lambda: send_now(groups, message))
