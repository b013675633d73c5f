"""Review queue pages: the list, one item, claim and resolve (operators)."""

from __future__ import annotations

import json
import uuid

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from oversight import access
from oversight.access import role_required
from oversight.actions import ActionError
from oversight.models import AISystem
from reviewqueue import actions
from reviewqueue.models import ReviewItem

operator_only = role_required(access.OPERATOR)


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(hex=value.removeprefix("rev_"))
    except ValueError:
        raise Http404("no such review item") from None


@operator_only
def queue(request: HttpRequest) -> HttpResponse:
    system = request.GET.get("system", "")
    qs = ReviewItem.objects.filter(~Q(status=ReviewItem.Status.RESOLVED)).select_related(
        "decision", "system", "claimed_by"
    )
    if system:
        qs = qs.filter(system__slug=system)
    page = Paginator(qs.order_by("due_at", "created_at"), 50).get_page(request.GET.get("page"))
    recent = ReviewItem.objects.filter(status=ReviewItem.Status.RESOLVED, resolved_by=request.user).select_related(
        "decision", "system"
    ).order_by("-resolved_at")[:10]
    return render(request, "reviewqueue/queue.html", {
        "page": page, "system": system, "systems": AISystem.objects.all(), "recent": recent,
        "now": timezone.now(),
    })


@require_POST
@operator_only
def claim_next(request: HttpRequest) -> HttpResponse:
    system = request.POST.get("system") or None
    try:
        item = actions.claim_next(request.user, system)  # type: ignore[arg-type]
    except ActionError as exc:
        messages.error(request, exc.message)
        return redirect("review-queue")
    if item is None:
        messages.info(request, "the queue is empty: nothing waits for a person")
        return redirect("review-queue")
    return redirect("review-item", item_id=item.public_id)


@operator_only
def item(request: HttpRequest, item_id: str) -> HttpResponse:
    obj = ReviewItem.objects.select_related("decision", "system", "claimed_by", "resolved_by").filter(
        id=_uuid(item_id)
    ).first()
    if obj is None:
        raise Http404("no such review item")
    d = obj.decision
    return render(request, "reviewqueue/item.html", {
        "item": obj,
        "d": d,
        "mine": obj.status == ReviewItem.Status.CLAIMED and obj.claimed_by_id == request.user.pk,
        "pretty": {
            "context": json.dumps(d.context, indent=2, ensure_ascii=False),
            "features": json.dumps(d.features, indent=2, ensure_ascii=False),
            "prediction": json.dumps(d.prediction, indent=2, ensure_ascii=False),
            "output": json.dumps(d.output, indent=2, ensure_ascii=False),
        },
        "proposed": json.dumps((d.prediction or {}).get("output"), ensure_ascii=False),
    })


@require_POST
@operator_only
def act(request: HttpRequest, item_id: str) -> HttpResponse:
    uid = _uuid(item_id)
    op = request.POST.get("op", "")
    try:
        if op == "claim":
            actions.claim_item(request.user, uid)  # type: ignore[arg-type]
            return redirect("review-item", item_id=item_id)
        if op == "release":
            actions.release(request.user, uid)  # type: ignore[arg-type]
            messages.info(request, "lease given back: the item is open for others")
            return redirect("review-queue")
        output = None
        given = False
        if op == "modify":
            raw = request.POST.get("output", "")
            try:
                output, given = json.loads(raw), True
            except ValueError as exc:
                messages.error(request, f"the modified output is not valid JSON: {exc}")
                return redirect("review-item", item_id=item_id)
        done = actions.resolve(request.user, uid, op, request.POST.get("note", ""), output, given)  # type: ignore[arg-type]
    except ActionError as exc:
        messages.error(request, exc.message)
        return redirect("review-item", item_id=item_id)
    done_verb = {"approve": "approved", "reject": "rejected", "modify": "modified and released"}.get(op, op)
    messages.success(request, f"{done.decision.public_id}: {done_verb}")
    if request.POST.get("then") == "next":
        return claim_next(request)
    return redirect("review-queue")
