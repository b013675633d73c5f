"""WebSocket consumers: a page subscribes to its group and receives small JSON pushes."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from oversight import access, events, stopstate
from oversight.models import AISystem

FORBIDDEN = 4403
NOT_FOUND = 4404


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
            await self.channel_layer.group_add(name, self.channel_name)
            self.groups_joined.append(name)
        await self.accept()
        await self.send_json({"type": "hello", "groups": names})
        await self.after_hello()

    async def after_hello(self) -> None:
        """What a page needs right after (re)connecting, before any push."""

    async def disconnect(self, code: int) -> None:
        for name in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(name, self.channel_name)

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
