"""The audit page for admins: who may see it, filters that keep what was typed, details in words,
links, pagination, the empty state and the CSV export."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from oversight import actions, audit
from oversight.models import AuditEvent
from tests.conftest import World, csrf_session

PAGES = ["/audit/", "/audit/export.csv"]


def events_for(world: World) -> None:
    actions.update_system(world.admin, "sup", {"level": 1, "confidence_threshold": 0.7}, reason="tighten after #7")
    actions.set_killswitch(world.admin, "system", True, "<script>alert('x')</script> noisy", system_slug="crit")
    audit.record(world.operator, "review.approve", system=world.critical, target="dec_0123456789abcdef",
                 reason="=HYPERLINK(\"http://evil\")", data={"item": "rev_" + "ab" * 16, "kind": "review"})


def rows_of(content: bytes) -> list[str]:
    return re.findall(r'<tr data-event="(\d+)"', content.decode())


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("who", ["operator", "editor", "nobody"])
def test_only_admins_see_the_log(world: World, who: str, path: str) -> None:
    r = world.person(getattr(world, who)).get(path)
    assert r.status_code == 403
    assert csrf_session(getattr(world, who)).post("/audit/verify/").status_code == 403


@pytest.mark.parametrize("path", [*PAGES, "/audit/verify/"])
def test_anonymous_is_sent_to_log_in(world: World, path: str) -> None:
    r = Client().get(path) if path in PAGES else Client().post(path)
    assert r.status_code == 302
    assert r["Location"].startswith("/login/")


def test_details_are_sentences_and_user_text_is_escaped(world: World) -> None:
    events_for(world)
    r = world.person(world.admin).get("/audit/")
    assert r.status_code == 200
    html = r.content.decode()
    assert "policy version 2: level: 2 → 1, confidence_threshold: 0.6 → 0.7" in html
    assert "engaged the system kill switch for crit" in html
    assert "{&#x27;" not in html
    assert "{'" not in html
    assert "<script>alert(" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; noisy" in html
    assert 'href="/monitor/sup/"' in html
    assert f'href="/review/rev_{"ab" * 16}/"' in html  # the review event's item (and its decision)
    assert "dec_0123456789abcdef" in html
    assert "<th scope=\"row\">confidence_threshold</th>" in html  # system.create's fields, as a table
    assert "Times are in the server's time zone, UTC" in html


def test_filters_narrow_and_keep_what_was_typed(world: World) -> None:
    events_for(world)
    c = world.person(world.admin)
    r = c.get("/audit/", {"actor": "ADMIN", "action": "policy.change", "system": "sup"})
    ids = rows_of(r.content)
    assert len(ids) == 1
    html = r.content.decode()
    assert 'value="ADMIN"' in html
    assert '<option value="policy.change" selected>' in html
    assert '<option value="sup" selected>' in html
    # The world's 3 systems and 3 keys, its 4 accounts and 3 role grants (oversight.people_audit).
    assert len(rows_of(c.get("/audit/", {"actor": "system"}).content)) == 6 + 4 + 3
    assert len(rows_of(c.get("/audit/", {"system": "crit"}).content)) == 4  # create, key, kill switch, review
    now = timezone.localtime()
    since, until = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"), now.strftime("%Y-%m-%dT%H:%M")
    r = c.get("/audit/", {"since": since, "until": until})
    assert len(rows_of(r.content)) == 9 + 4 + 3 + 1  # + accounts, role grants, the admin's login
    assert f'value="{since}"' in r.content.decode()
    r = c.get("/audit/", {"until": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")})
    assert "No event matches these filters." in r.content.decode()


def test_a_bad_filter_says_so_and_keeps_it(world: World) -> None:
    events_for(world)
    r = world.person(world.admin).get("/audit/", {"since": "yesterday-ish", "action": "policy.change"})
    html = r.content.decode()
    assert "Give a date and time" in html
    assert 'value="yesterday-ish"' in html
    assert len(rows_of(r.content)) == 1  # the valid filter still applies
    r = world.person(world.admin).get("/audit/", {"since": "2026-12-03T10:00", "until": "2026-12-03T09:00"})
    assert "“To” is before “From”" in r.content.decode()
    r = world.person(world.admin).get("/audit/", {"action": "no.such"})
    assert "Select a valid choice" in r.content.decode()


def test_pages_keep_the_filters(world: World) -> None:
    for i in range(55):
        audit.record(world.editor, "note.bulk", target=f"n{i}")
    c = world.person(world.admin)
    r = c.get("/audit/", {"action": "note.bulk"})
    assert len(rows_of(r.content)) == 50
    assert 'href="?page=2&amp;action=note.bulk"' in r.content.decode()
    r = c.get("/audit/", {"action": "note.bulk", "page": "2"})
    assert len(rows_of(r.content)) == 5
    assert 'href="/audit/export.csv?action=note.bulk"' in r.content.decode()


def test_an_empty_log_says_so(world: World) -> None:
    r = world.person(world.admin).get("/audit/", {"actor": "nobody-at-all"})
    assert "No event matches these filters." in r.content.decode()


def test_the_csv_has_the_filtered_rows_with_hashes_and_no_formulas(world: World) -> None:
    events_for(world)
    c = world.person(world.admin)
    r = c.get("/audit/export.csv", {"system": "crit", "actor": "operator"})
    assert r.status_code == 200
    assert r["Content-Type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert table[0] == audit.CSV_HEADER
    assert len(table) == 2
    row = dict(zip(table[0], table[1], strict=True))
    assert row["action"] == "review.approve"
    assert row["reason"] == "'=HYPERLINK(\"http://evil\")"
    assert row["details"] == "review item resolved: approve"
    assert row["target"] == "dec_0123456789abcdef"
    assert re.fullmatch(r"[0-9a-f]{64}", row["hash"])
    assert re.fullmatch(r"[0-9a-f]{64}", row["prev_hash"])
    everything = list(csv.reader(io.StringIO(b"".join(c.get("/audit/export.csv").streaming_content).decode())))
    assert len(everything) == 1 + AuditEvent.objects.count()  # every event, the header first
    assert len(everything) == 1 + 9 + 4 + 3 + 1  # + accounts, role grants and the admin's login
    assert all(not cell.startswith(("=", "+", "-", "@")) for line in everything for cell in line)
