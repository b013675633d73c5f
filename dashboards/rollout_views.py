"""Where the Rollouts and bandit card's forms post, and what its script re-reads after a push (the
card itself: ``dashboards.rollout_card``; the rules: ``oversight.rollout_actions``)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_POST

from dashboards import views
from dashboards.rollout_card import ANCHOR, RolloutActForm, RolloutStartForm, enabled_models, state
from oversight import access, rollout_actions, rollouts
from oversight.access import any_role, role_required
from oversight.models import AISystem


@any_role
def rollouts_data(request: HttpRequest, slug: str) -> HttpResponse:
    """What the card re-reads when a push arrives."""
    return JsonResponse(state(get_object_or_404(AISystem, slug=slug)))


@role_required(access.ADMIN)
@require_POST
def system_rollouts(request: HttpRequest, slug: str) -> HttpResponse:
    """The card's forms: ``op=start`` starts a rollout; ``advance``, ``rollback`` or ``cancel`` acts on
    the running one."""
    system = get_object_or_404(AISystem, slug=slug)
    if request.POST.get("op") == "start":
        def start(data: dict[str, Any]) -> str:
            r = rollout_actions.start(
                request.user, system.slug, data["candidate"], data["baseline"], data["steps"],
                data["step_minutes"] * 60,
                {"metric": data["metric"], "max_drop": data["max_drop"], "min_outcomes": data["min_outcomes"]},
                data["reason"])
            return f"Rollout {r.public_id} started: {r.candidate} takes {rollouts.pct(r.share)} of the traffic."

        form: forms.Form = RolloutStartForm(request.POST, prefix="rollout", models=enabled_models(system))
        return views._card_form(request, system, form, ANCHOR, start, "rollout_start_form")

    def act(data: dict[str, Any]) -> str:
        do = {"advance": rollout_actions.advance, "rollback": rollout_actions.rollback,
              "cancel": rollout_actions.cancel}[data["op"]]
        r = do(request.user, data["rollout_id"], data["reason"])
        return f"Rollout {r.public_id} is {r.state.replace('_', ' ')}: {r.candidate} has {rollouts.pct(r.share)} " \
               "of the traffic."

    act_form = RolloutActForm({**request.POST.dict(), "rollact-op": request.POST.get("op", "")}, prefix="rollact")
    return views._card_form(request, system, act_form, ANCHOR, act, "rollout_act_form")

