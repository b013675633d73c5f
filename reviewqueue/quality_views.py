"""The reviewer-quality page (being built)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from reviewqueue.views import reviewers_only


@reviewers_only
def quality(request: HttpRequest) -> HttpResponse:
    return HttpResponse("quality: being built", content_type="text/plain")
