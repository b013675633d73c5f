"""Django admin: people and groups (roles), read-only views of the core tables.

Policies, keys and kill switches change only through the Systems page, the overview and the
API, so every change is versioned, audited and bumps the gate's config epoch.
"""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from oversight.models import AISystem, ApiKey, AuditEvent, KillSwitch


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AISystem)
class AISystemAdmin(ReadOnlyAdmin):
    list_display = ("slug", "name", "level", "confidence_threshold", "audit_sample_rate", "policy_version")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor_label", "action", "target", "reason")


@admin.register(ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = ("prefix", "system", "name", "created_at", "revoked_at")


@admin.register(KillSwitch)
class KillSwitchAdmin(ReadOnlyAdmin):
    list_display = ("scope", "system", "model", "engaged", "reason", "changed_by", "changed_at")
