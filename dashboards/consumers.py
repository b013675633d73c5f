"""WebSocket consumers: a page subscribes to its group and receives small JSON pushes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from redis.exceptions import RedisError

from oversight import access, events, stopstate
from oversight.models import AISystem

FORBIDDEN = 4403
NOT_FOUND = 4404
TRY_AGAIN = 1013  # the channel layer (Redis) is unreachable: the page reconnects later
JOIN_TIMEOUT_S = 2.0  # a Redis that accepts and never answers: the handshake gives up, the page retries
log = logging.getLogger(__name__)


class _RoleConsumer(AsyncJsonWebsocketConsumer):
    groups_joined: list[str]

    async def group_names(self) -> list[str] | None:
        """The groups this page listens to; None when what it asked for does not exist."""
        return None

    async def connect(self) -> None:
        self.groups_joined = []
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=FORBIDDEN)
            return
        if not await database_sync_to_async(access.roles_of)(user):
            await self.close(code=FORBIDDEN)
            return
        names = await self.group_names()
        if names is None:
            await self.close(code=NOT_FOUND)
            return
        for name in names:
            if not await self._join(name):
                await self.close(code=TRY_AGAIN)
                return
        await self.accept()
        await self.send_json({"type": "hello", "groups": names})
        await self.after_hello()

    async def _join(self, name: str) -> bool:
        """Join ``name``; once more on a fresh connection if the first try met a dead one (Redis
        restarted: the pool's connections are closed). False when Redis is away: the page retries."""
        for attempt in (1, 2):
            try:
                await asyncio.wait_for(self.channel_layer.group_add(name, self.channel_name), JOIN_TIMEOUT_S)
            except (RedisError, OSError, TimeoutError):  # refused, reset, or silent past the bound
                if attempt == 2:
                    log.warning("could not join %s: the channel layer is unreachable", name, exc_info=True)
                    return False
                continue
            self.groups_joined.append(name)
            return True
        return False

    async def after_hello(self) -> None:
        """What a page needs right after (re)connecting, before any push."""

    async def disconnect(self, code: int) -> None:
        for name in getattr(self, "groups_joined", []):
            try:
                await asyncio.wait_for(self.channel_layer.group_discard(name, self.channel_name), JOIN_TIMEOUT_S)
            except (RedisError, OSError, TimeoutError):  # the group entry expires by itself
                log.info("could not leave %s: the channel layer is unreachable", name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def push(self, event: dict[str, Any]) -> None:
        await self.send_json(event["message"])


class OverviewConsumer(_RoleConsumer):
    async def group_names(self) -> list[str] | None:
        return [events.OVERVIEW_GROUP]


class SystemConsumer(_RoleConsumer):
    async def group_names(self) -> list[str] | None:
        slug = self.scope["url_route"]["kwargs"]["system"]
        exists = await database_sync_to_async(AISystem.objects.filter(slug=slug).exists)()
        return [events.system_group(slug)] if exists else None


class StatusConsumer(_RoleConsumer):
    """Every logged-in page: what is stopped, now (on connect, so a reconnect resynchronises) and on
    every change."""

    async def group_names(self) -> list[str] | None:
        return [events.STATUS_GROUP]

    async def after_hello(self) -> None:
        await self.send_json(events.status_message(await database_sync_to_async(stopstate.current)()))
