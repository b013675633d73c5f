"""Review queue pages: the list, one item, claim and resolve (operators)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from oversight import access, stopstate
from oversight.access import person_of, role_required
from oversight.errors import ActionError
from oversight.formfields import MISSING, add_action_error, sentence
from oversight.models import AISystem, Level
from reviewqueue import actions, triage
from reviewqueue.forms import ReviewForm
from reviewqueue.models import ReviewItem

operator_only = role_required(access.OPERATOR)


def _uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(hex=value.removeprefix("rev_"))
    except ValueError:
        raise Http404("no such review item") from None


class QueueFilterForm(forms.Form):
    """The queue's filters (a GET form): each field has a label on the page."""

    system = forms.ChoiceField(label="System", required=False)
    kind = forms.ChoiceField(label="Kind", required=False,
                             choices=[("", "any kind"), *ReviewItem.Kind.choices])
    level = forms.TypedChoiceField(label="Level", required=False, coerce=int, empty_value=None,
                                   choices=[("", "any level"), *Level.choices])
    reason = forms.CharField(label="Reason contains", required=False, max_length=200)
    older = forms.IntegerField(label="Older than (minutes)", required=False, min_value=0, max_value=525600)
    q = forms.CharField(label="Subject or decision id", required=False, max_length=200)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        slugs = AISystem.objects.values_list("slug", flat=True)
        self.fields["system"].choices = [("", "all systems"), *((s, s) for s in slugs)]  # type: ignore[attr-defined]

    def filters(self) -> triage.Filters:
        """What the valid fields ask for (a field with an error is shown with it and left out)."""
        self.is_valid()
        c = self.cleaned_data
        return triage.Filters(
            system=c.get("system") or "", kind=c.get("kind") or "", level=c.get("level"),
            reason=(c.get("reason") or "").strip(), older_than_min=c.get("older"), search=(c.get("q") or "").strip(),
        )


def _model_output(item: ReviewItem) -> str:
    """The model's proposed output, short, for one row of the list."""
    prediction = item.decision.prediction
    out = prediction.get("output") if isinstance(prediction, dict) else item.decision.output
    if out is None:
        return ""
    text = json.dumps(out, ensure_ascii=False)
    return text if len(text) <= 80 else text[:79] + "…"


PER_PAGE = 50


def _page_number(request: HttpRequest) -> int:
    try:
        return max(1, int(request.GET.get("page", "1")))
    except ValueError:
        return 1


@operator_only
def queue(request: HttpRequest) -> HttpResponse:
    """Pending items in triage order (reviewqueue.triage), filtered; ``?part=totals`` answers the
    list's live figures as JSON (the page asks when a queue push arrives)."""
    form = QueueFilterForm(request.GET)
    f = form.filters()
    now = timezone.now()
    qs = triage.apply(triage.pending(), f, now)
    sums = triage.totals(qs, now)
    if request.GET.get("part") == "totals":
        return JsonResponse(sums.as_dict())
    paginator = Paginator(qs.select_related("decision", "system", "claimed_by").order_by(*triage.ORDER), PER_PAGE)
    # Counted up to the cap above; past it, only as far as the asked page and one row more.
    wanted = _page_number(request)
    paginator.count = sums.total if sums.total <= sums.cap else triage.count_upto(qs, max(sums.cap, wanted * PER_PAGE))
    more = paginator.count > max(sums.cap, wanted * PER_PAGE)
    page = paginator.get_page(wanted)
    recent = (
        ReviewItem.objects.filter(status=ReviewItem.Status.RESOLVED, resolved_by=person_of(request))
        .select_related("decision", "system")
        .order_by("-resolved_at")[:10]
    )
    stopped = stopstate.current().stopped
    keep = request.GET.copy()
    keep.pop("page", None)
    keep.pop("part", None)
    return render(request, "reviewqueue/queue.html", {
        "form": form, "filters": f, "page": page, "more": more, "sums": sums, "keep": keep.urlencode(),
        "rows": [(it, stopped.get(it.system.slug), _model_output(it)) for it in page],
        "system": f.system, "recent": recent, "now": now,
    })


@require_POST
@operator_only
def claim_next(request: HttpRequest) -> HttpResponse:
    system = request.POST.get("system") or None
    try:
        item = actions.claim_next(person_of(request), system)
    except ActionError as exc:
        messages.error(request, exc.message)
        return redirect("review-queue")
    if item is None:
        messages.info(request, "the queue is empty: nothing waits for a person")
        return redirect("review-queue")
    return redirect("review-item", item_id=item.public_id)


def _item_or_404(uid: uuid.UUID) -> ReviewItem:
    obj = ReviewItem.objects.select_related("decision", "system", "claimed_by", "resolved_by").filter(id=uid).first()
    if obj is None:
        raise Http404("no such review item")
    return obj


def _blocked(obj: ReviewItem) -> dict[str, str]:
    """What the page disables, with the sentence shown next to each action."""
    return {action: sentence(why) for action, why in actions.blocked_actions(obj).items()}


def _votes(prediction: Any) -> list[dict[str, Any]]:
    """Each model's vote as the item page lists it (hosted ensembles, or votes a client sent)."""
    votes = prediction.get("votes") if isinstance(prediction, dict) else None
    out = []
    for v in votes if isinstance(votes, list) else []:
        if not isinstance(v, dict):
            continue
        veto = v.get("veto") or {}
        out.append({
            "model": v.get("model", ""), "role": v.get("role", "voter"), "confidence": v.get("confidence"),
            "weight": v.get("weight"), "error": v.get("error", ""), "detail": v.get("detail", ""),
            "vetoed": v.get("vetoed", ""),
            "said": "" if "error" in v else json.dumps(v.get("output"), ensure_ascii=False)[:300],
            "veto": ", ".join([*veto.get("models", []), *veto.get("items", [])][:20]) if isinstance(veto, dict) else "",
        })
    return out


def _item_page(request: HttpRequest, obj: ReviewItem, form: ReviewForm, status: int = 200) -> HttpResponse:
    d = obj.decision
    stopstate.page_is_about(request, obj.system.slug)  # the banner shows this system's stopped models too
    return render(request, "reviewqueue/item.html", {
        "item": obj,
        "d": d,
        "form": form,
        "blocked": _blocked(obj),
        "mine": obj.status == ReviewItem.Status.CLAIMED and obj.claimed_by_id == request.user.pk,
        "votes": _votes(d.prediction),
        "pretty": {
            "context": json.dumps(d.context, indent=2, ensure_ascii=False),
            "features": json.dumps(d.features, indent=2, ensure_ascii=False),
            "prediction": json.dumps(d.prediction, indent=2, ensure_ascii=False),
            "output": json.dumps(d.output, indent=2, ensure_ascii=False),
        },
    }, status=status)


def _blank_form(obj: ReviewItem) -> ReviewForm:
    """The form as an item opens: the output box holds what the model proposed."""
    return ReviewForm(initial={"output": (obj.decision.prediction or {}).get("output")}, auto_id="%s")


@operator_only
def item(request: HttpRequest, item_id: str) -> HttpResponse:
    obj = _item_or_404(_uuid(item_id))
    if request.GET.get("part") == "blocked":  # the open page asks again when what is stopped changes
        return JsonResponse({"blocked": _blocked(obj)})
    return _item_page(request, obj, _blank_form(obj))


DONE = {"approve": "approved", "reject": "rejected", "modify": "modified and released"}


@require_POST
@operator_only
def act(request: HttpRequest, item_id: str) -> HttpResponse:
    """Claim, give back or resolve. A refusal shows the item again with what was typed kept."""
    uid = _uuid(item_id)
    form = ReviewForm(request.POST, auto_id="%s")
    status = 422
    if form.is_valid():
        op = form.cleaned_data["op"]
        try:
            if op == "claim":
                actions.claim_item(person_of(request), uid)
                return redirect("review-item", item_id=item_id)
            if op == "release":
                actions.release(person_of(request), uid)
                messages.info(request, "lease given back: the item is open for others")
                return redirect("review-queue")
            output = form.cleaned_data["output"]
            done = actions.resolve(
                person_of(request), uid, op, form.cleaned_data["note"],
                None if output is MISSING else output, form.output_given,
            )
        except ActionError as exc:
            if exc.code == "not_found":
                raise Http404(exc.message) from None
            add_action_error(form, exc)
            status = exc.status
        else:
            messages.success(request, f"{done.decision.public_id}: {DONE.get(op, op)}")
            if form.wants_next():
                return claim_next(request)
            return redirect("review-queue")
    return _item_page(request, _item_or_404(uid), form, status=status)
