"""``bulk.gc_paused``: the collector is off while batches build their rows, and comes back after."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator

import pytest

from oversight import bulk
from oversight.bulk import gc_paused


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:  # pragma: no cover - pytest runs with the collector on
        gc.disable()


def test_off_inside_on_after_even_when_the_batch_fails() -> None:
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("the batch failed")
    assert gc.isenabled()


def test_concurrent_batches_share_the_pause() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with gc_paused():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with gc_paused():
            second_in.set()
            first_out.wait(5)
            seen["after the first ended"] = gc.isenabled()
        seen["after both ended"] = gc.isenabled()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == {"after the first ended": False, "after both ended": True}


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_batches_that_keep_overlapping_still_collect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "GC_MAX_PAUSE_S", 0.05)
    collections: list[str] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(phase)

    gc.callbacks.append(seen)
    try:
        with gc_paused():
            with gc_paused():
                time.sleep(0.02)
            assert collections == []  # a short overlap: no collection
            with gc_paused():
                time.sleep(0.1)
            assert collections  # the pause had lasted too long: the batch that ended collected
            assert not gc.isenabled()  # ...and the outer batch still runs paused
        assert gc.isenabled()
    finally:
        gc.callbacks.remove(seen)
