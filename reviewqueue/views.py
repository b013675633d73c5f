"""Review queue pages: the list, one item, claim and resolve (operators)."""

from __future__ import annotations

import json
import uuid
from contextlib import suppress
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from oversight import access, stopstate
from oversight.access import person_of, role_required
from oversight.errors import ActionError
from oversight.formfields import MISSING, add_action_error, sentence
from oversight.models import AISystem, Decision, Level
from reviewqueue import actions, triage
from reviewqueue.forms import ReviewForm
from reviewqueue.models import ReviewItem

reviewers_only = role_required(*access.REVIEWERS)


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


@reviewers_only
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
    # Counted up to the cap above; past it, only as far as the asked page and one row more (a page
    # within the cap needs no count of its own).
    wanted = _page_number(request)
    deep = sums.total > sums.cap and wanted * PER_PAGE > sums.cap
    paginator.count = triage.count_upto(qs, wanted * PER_PAGE) if deep else sums.total
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
        # What "Review next" and each row's link carry: the filters in force (a field with an error is left out).
        "carry": list(f.params().items()), "carry_query": urlencode(f.params()),
    })


def _filters(request: HttpRequest) -> triage.Filters:
    """The filters of the operator's list (``triage.PARAMS``): they stay through claim → resolve →
    next, as hidden fields in the pages' forms (POST) and in the item page's address (GET)."""
    return triage.Filters.from_params(
        {k: request.POST.get(k) or request.GET.get(k) or "" for k in triage.PARAMS})


def _with_filters(url: str, f: triage.Filters) -> str:
    query = urlencode(f.params())
    return f"{url}?{query}" if query else url


def _queue_url(f: triage.Filters) -> str:
    return _with_filters(reverse("review-queue"), f)


def _item_url(public_id: str, f: triage.Filters) -> str:
    return _with_filters(reverse("review-item", args=[public_id]), f)


# The next item's page, fetched by the open item's page before the person acts (``READY``: the item
# being worked on). It shows the item as it will be once this person claims it; the action that
# claims it sends the browser there, and the browser shows the copy it fetched (``Cache-Control:
# private, max-age``: the page is the person's own, for a minute). Nothing is claimed to prefetch.
READY = "ready"
READY_MAX_AGE_S = 60


def _ready_url(next_id: uuid.UUID, f: triage.Filters, after: str) -> str:
    return f"{_item_url(f'rev_{next_id.hex}', f)}{'&' if f.params() else '?'}{urlencode({READY: after})}"


def _skipped(request: HttpRequest) -> list[uuid.UUID]:
    return [uuid.UUID(hex=h) for h in request.session.get(SKIPPED, [])]


SKIPPED = "review_skipped"  # the session's items passed over with "next" (J), newest last
SKIPPED_KEEP = 50


@require_POST
@reviewers_only
def claim_next(request: HttpRequest) -> HttpResponse:
    """Claim the next item of the operator's filters. With ``skip`` (the J key on an item), the item
    being passed over is given back first and is not handed out again to this person in this session."""
    f = _filters(request)
    person = person_of(request)
    skipped: list[str] = []
    if "skip" in request.POST:
        skipped = list(request.session.get(SKIPPED, []))
        passed = _uuid_or_none(request.POST["skip"])
        if passed is not None:
            with suppress(ActionError):  # not ours (any more): nothing to give back
                actions.release(person, passed, why="passed over for the next item")
            skipped = [*skipped, passed.hex][-SKIPPED_KEEP:]
            request.session[SKIPPED] = skipped
    try:
        item = actions.claim_next(person, filters=f, skip=[uuid.UUID(hex=h) for h in skipped])
    except ActionError as exc:
        messages.error(request, exc.message)
        return redirect(_queue_url(f))
    if item is None:
        where = f" of {f.describe()}" if f.any() else ""
        messages.info(request, f"the queue is empty: nothing{where} waits for a person"
                      + (" (besides the items you passed over)" if skipped else ""))
        return redirect(_queue_url(f))
    return redirect(_item_url(item.public_id, f))


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(hex=value.removeprefix("rev_"))
    except ValueError:
        return None


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


def subject_recent(d: Decision, n: int = 10) -> list[Decision]:
    """The newest other decisions about ``d``'s subject in its system (index ``decision_subject``)."""
    if not d.subject:
        return []
    return list(Decision.objects.filter(subject=d.subject, system_id=d.system_id).exclude(id=d.id)
                .order_by("-created_at").only("id", "created_at", "status", "output")[:n])


def _previous(request: HttpRequest, obj: ReviewItem) -> str | None:
    """The item this person resolved before this one (K), or None."""
    qs = ReviewItem.objects.filter(status=ReviewItem.Status.RESOLVED, resolved_by=request.user.pk).exclude(id=obj.id)
    if obj.resolved_by_id == request.user.pk and obj.resolved_at is not None:
        qs = qs.filter(resolved_at__lt=obj.resolved_at)
    prev = qs.order_by("-resolved_at").values_list("id", flat=True).first()
    return f"rev_{prev.hex}" if prev else None


def _lease(obj: ReviewItem) -> dict[str, Any]:
    """The lease as the page's timer and heartbeat read it: seconds left, so the browser's clock does not matter."""
    left = (obj.lease_expires_at - timezone.now()).total_seconds() if obj.lease_expires_at else 0.0
    return {"status": obj.status, "claimed_by": obj.claimed_by.get_username() if obj.claimed_by else None,
            "lease_expires_at": obj.lease_expires_at.isoformat() if obj.lease_expires_at else None,
            "seconds_left": max(0, int(left)), "lease_s": actions.LEASE_S}


def _item_page(request: HttpRequest, obj: ReviewItem, form: ReviewForm, status: int = 200,
               ready_after: str = "") -> HttpResponse:
    d = obj.decision
    f = _filters(request)
    stopstate.page_is_about(request, obj.system.slug)  # the banner shows this system's stopped models too
    previous = ready_after or _previous(request, obj)
    mine = obj.status == ReviewItem.Status.CLAIMED and obj.claimed_by_id == request.user.pk
    ready_url = ready_item = ""
    if mine and actions.lease_live(obj):
        next_id = actions.peek_next(person_of(request), f, skip=[obj.id, *_skipped(request)])
        if next_id is not None:
            ready_url, ready_item = _ready_url(next_id, f, obj.public_id), f"rev_{next_id.hex}"
    return render(request, "reviewqueue/item.html", {
        "ready_url": ready_url,
        "ready_item": ready_item,
        "ready_page": bool(ready_after),
        "hold_messages": bool(ready_after),  # a prefetched page must not take the messages of the page before
        "item": obj,
        "d": d,
        "form": form,
        "blocked": _blocked(obj),
        # Ours even once the lease lapsed: the page's next heartbeat takes it again if nobody else did.
        "mine": mine,
        "held": actions.lease_live(obj),
        "lease": _lease(obj),
        "system": f.system,
        "filters": f,
        "carry": list(f.params().items()),  # hidden fields in each form: the list's filters ride along
        "queue_url": _queue_url(f),
        "previous_url": _item_url(previous, f) if previous else "",
        "votes": _votes(d.prediction),
        "subject_recent": subject_recent(d),
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


@reviewers_only
def item(request: HttpRequest, item_id: str) -> HttpResponse:
    obj = _item_or_404(_uuid(item_id))
    if request.GET.get("part") == "blocked":  # the open page asks again when what is stopped changes
        return JsonResponse({"blocked": _blocked(obj)})
    after = _uuid_or_none(request.GET.get(READY, ""))
    if after is not None and actions.claimable_by(obj, person_of(request)):
        # Prefetched (or opened from the action that claimed it): shown as this person's, claimed now.
        response = _item_page(request, actions.as_claimed(obj, person_of(request)), _blank_form(obj),
                              ready_after=f"rev_{after.hex}")
        response["Cache-Control"] = f"private, max-age={READY_MAX_AGE_S}"
        return response
    return _item_page(request, obj, _blank_form(obj))


def _conflict(exc: ActionError) -> JsonResponse:
    if exc.code == "not_found":
        raise Http404(exc.message)
    return JsonResponse({"error": {"code": exc.code, "message": sentence(exc.message), "field": exc.field or None}},
                        status=exc.status)


@require_POST
@reviewers_only
def heartbeat(request: HttpRequest, item_id: str) -> HttpResponse:
    """The open item page, every minute: renew the lease (or take the item again if it lapsed and is free)."""
    try:
        obj = actions.heartbeat(person_of(request), _uuid(item_id))
    except ActionError as exc:
        return _conflict(exc)
    return JsonResponse(_lease(obj))


@require_POST
@reviewers_only
def give_back(request: HttpRequest, item_id: str) -> HttpResponse:
    """The item page closed (``navigator.sendBeacon`` on ``pagehide``): the item goes back to the queue."""
    try:
        actions.release(person_of(request), _uuid(item_id), why="the item's page was closed")
    except ActionError as exc:
        return _conflict(exc)
    return HttpResponse(status=204)


DONE = {"approve": "approved", "reject": "rejected", "modify": "modified and released"}


@require_POST
@reviewers_only
def act(request: HttpRequest, item_id: str) -> HttpResponse:
    """Claim, give back or resolve. A refusal shows the item again with what was typed kept."""
    uid = _uuid(item_id)
    form = ReviewForm(request.POST, auto_id="%s")
    f = _filters(request)
    status = 422
    if form.is_valid():
        op = form.cleaned_data["op"]
        try:
            if op == "claim":
                actions.claim_item(person_of(request), uid)
                return redirect(_item_url(item_id, f))
            if op == "release":
                actions.release(person_of(request), uid)
                messages.info(request, "lease given back: the item is open for others")
                return redirect(_queue_url(f))
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
            said = f"{done.decision.public_id}: {DONE.get(op, op)}"
            if form.wants_next() and request.headers.get("Accept") == "application/json":
                return _next_for_page(request, f, f"rev_{uid.hex}", said)
            messages.success(request, said)
            if form.wants_next():
                return claim_next(request)
            return redirect(_queue_url(f))
    return _item_page(request, _item_or_404(uid), form, status=status)


def _next_for_page(request: HttpRequest, f: triage.Filters, item_id: str, said: str) -> JsonResponse:
    """After a resolution sent by the item page's script: claim the item it prefetched (``ready``)
    and send it there, to the page it holds; when that item was taken meanwhile, the usual next."""
    ready = _uuid_or_none(request.POST.get(READY, ""))
    if ready is not None:
        try:
            actions.claim_item(person_of(request), ready)
        except ActionError:
            pass  # someone else has it now (or it is gone): the next free one, as without a prefetch
        else:
            return JsonResponse({"url": _ready_url(ready, f, item_id), "said": said})
    messages.success(request, said)
    return JsonResponse({"url": claim_next(request)["Location"]})
