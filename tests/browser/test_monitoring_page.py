"""A system's monitoring page (/monitor/<slug>/): empty states, live drift without a reload, the heat
map's hover, the phone width, and who may open it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from django.db import connection
from django.utils import timezone
from playwright.sync_api import expect

from dashboards import drift_job
from tests.browser.conftest import console_errors
from tests.conftest import World
from tests.integration.test_drift_job import items, make_reference

pytestmark = pytest.mark.browser

LIVE_MS = 2000  # a drift result must be on an open page within 2 s of the job finishing


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` off Playwright's thread (its event loop forbids Django's async_to_sync there)."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        finally:
            connection.close()

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert out, "the work in the thread failed (see the log)"
    return out[0]


def drifting_history(live_server_url: str, world: World) -> None:
    """A reference and three hours of decisions, the last one shifted (x moves by 1.5 std), sent
    to the live server as a client would."""
    make_reference(world.supervised)
    rng = np.random.default_rng(7)
    start = (timezone.now() - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    batch = items(rng, 300, start, timedelta(hours=1)) + items(rng, 300, start + timedelta(hours=1), timedelta(hours=1))
    batch += items(rng, 300, start + timedelta(hours=2), timedelta(hours=1), shift=1.5)
    r = httpx.post(f"{live_server_url}/api/v1/systems/sup/decisions/batch", json={"items": batch},
                   headers={"Authorization": f"Bearer {world.keys['sup']}"}, timeout=30)
    assert r.status_code == 200, r.text


def test_an_open_page_shows_a_drift_result_within_2_s_and_its_numbers_on_hover(login_as, live_world,
                                                                                live_server_url):
    drifting_history(live_server_url, live_world)
    page = login_as(live_world.operator, "/monitor/sup/")
    errors = console_errors(page)
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator('[data-empty="drift"]')).to_be_visible()  # no results yet: it says what to do
    page.evaluate("window.__notReloaded = true")

    in_thread(lambda: drift_job.run_system(live_world.supervised.id))
    finished = time.monotonic()
    page.wait_for_function("() => (document.getElementById('heatmap').data || []).some("
                           "(t) => t.z.flat().some((v) => v !== null))", timeout=LIVE_MS)
    assert time.monotonic() - finished < LIVE_MS / 1000
    assert page.evaluate("window.__notReloaded") is True
    expect(page.locator('[data-empty="drift"]')).to_be_hidden()
    expect(page.locator("#alerts li")).to_contain_text("x drifted")

    # Hover the newest window's cell of feature x: the method, statistic, threshold and p-value.
    state = page.evaluate("document.getElementById('heatmap').data[0]")
    row = state["y"].index("x")
    plot_area = page.locator("#heatmap .nsewdrag").first
    box = plot_area.bounding_box()
    assert box is not None
    n_rows, n_cols = len(state["y"]), len(state["x"])
    plot_area.hover(position={"x": box["width"] * (n_cols - 0.5) / n_cols,
                              "y": box["height"] * (1 - (row + 0.5) / n_rows)})
    hover = page.locator("#heatmap .hoverlayer")
    expect(hover).to_contain_text("threshold")
    expect(hover).to_contain_text("p-value")
    expect(hover).to_contain_text("DRIFT")
    assert not errors, errors


def test_the_page_fits_a_phone_and_every_role_may_read_it(login_as, live_world):
    for user in (live_world.operator, live_world.editor, live_world.admin):
        page = login_as(user, "/monitor/sup/")
        errors = console_errors(page)
        page.set_viewport_size({"width": 390, "height": 800})
        page.reload()
        expect(page.locator("#live")).to_have_text("live")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.goto("/")  # the overview: one tile per system, nothing sideways
        expect(page.locator('#systems tr[data-system="sup"] td.drift')).to_be_visible()
        label = page.evaluate("getComputedStyle(document.querySelector('#systems td.drift'), '::before').content")
        assert "Worst drift" in label  # each cell says what it is, as the hidden header did
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert not errors, errors
    nobody = login_as(live_world.nobody, "/")
    assert nobody.goto("/monitor/sup/").status == 403
    assert nobody.goto("/monitor/nope/").status in (403, 404)


def test_an_admin_uploads_a_reference_with_progress_and_a_bad_file_is_explained_in_place(login_as, live_world):
    page = login_as(live_world.admin, "/monitor/sup/")
    errors = console_errors(page)
    expect(page.get_by_text("No reference yet")).to_be_visible()
    page.evaluate("window.__notReloaded = true")
    file_input = page.get_by_label("Reference file (CSV with a header row, or JSON lines)")
    file_input.set_input_files({"name": "bad.csv", "mimeType": "text/csv", "buffer": b"tempo\n120\nfast\n"})
    page.get_by_role("button", name="Upload as the reference").click()
    expect(page.locator("#upload-status")).to_contain_text("Line 3, column 'tempo'")
    assert page.evaluate("window.__notReloaded") is True  # explained in place, nothing lost

    rows = "\n".join(f"{100 + i % 80},{'jazz' if i % 3 else 'rock'}" for i in range(20000))
    file_input.set_input_files({"name": "ref.csv", "mimeType": "text/csv", "buffer": f"tempo,genre\n{rows}\n".encode()})
    page.get_by_role("button", name="Upload as the reference").click()
    expect(page.locator("#reference")).to_contain_text("20000 rows from an upload")
    expect(page.get_by_role("status").filter(has_text="reference stored")).to_have_count(0)  # a fresh page
    expect(page.locator("#reference table")).to_contain_text("genre")
    assert not [e for e in errors if "422" not in e], errors  # the refused upload's 422 is expected


def test_an_admin_acknowledges_an_alert_with_one_click(login_as, live_world):
    from dashboards.models import Alert

    Alert.objects.create(system=live_world.supervised, kind="drift", subject="tempo", message="tempo drifted",
                         opened_at=timezone.now())
    operator = login_as(live_world.operator, "/monitor/sup/")
    expect(operator.locator("#alerts li")).to_contain_text("tempo drifted")
    expect(operator.get_by_role("button", name="Acknowledge")).to_have_count(0)  # admins only
    page = login_as(live_world.admin, "/monitor/sup/")
    errors = console_errors(page)
    page.get_by_role("button", name="Acknowledge").click()
    expect(page.locator("#alerts li")).to_contain_text("acknowledged by admin")
    expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)
    assert not errors, errors
