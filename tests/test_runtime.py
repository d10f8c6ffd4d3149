"""The GC pause of unnest._runtime: nesting, deadlines, a user's own setting, fork."""

import gc
import os
import threading

import pytest

from unnest import _runtime
from unnest._runtime import no_gc, pause_gc, resume_gc


@pytest.fixture
def gc_on():
    """The collector enabled, as in most processes; restored after."""
    enabled = gc.isenabled()
    gc.enable()
    yield
    assert _runtime.gc_resumed.is_set(), "a pause outlived its test"
    if not enabled:
        gc.disable()


def test_pauses_nest_and_the_last_to_end_resumes(gc_on):
    outer = pause_gc()
    assert not gc.isenabled() and not _runtime.gc_resumed.is_set()
    with no_gc():
        inner = pause_gc()
        assert not gc.isenabled()
    resume_gc(outer)  # ended before the inner one: the inner one still holds
    assert not gc.isenabled()
    resume_gc(inner)
    assert gc.isenabled() and _runtime.gc_resumed.is_set()
    resume_gc(inner)  # again: nothing
    assert gc.isenabled()


def test_a_users_gc_disable_is_respected(gc_on):
    gc.disable()
    try:
        token = pause_gc(seconds=0)
        assert _runtime.gc_resumed.wait(10)  # ended by its deadline
        resume_gc(token)
        with no_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.timeout(30)
def test_a_pause_ends_at_its_deadline_without_its_owner(gc_on):
    token = pause_gc(seconds=0.05)
    assert not gc.isenabled()
    assert _runtime.gc_resumed.wait(10), "the deadline thread did not end the pause"
    assert gc.isenabled()
    resume_gc(token)  # its owner, later: nothing
    assert gc.isenabled()


@pytest.mark.timeout(30)
def test_a_deadline_ends_its_own_pause_and_no_other(gc_on):
    held = pause_gc()
    pause_gc(seconds=0.01)  # never resumed by its owner
    with _runtime._gc_lock:  # the deadline thread cannot end anything meanwhile
        assert len(_runtime._gc_pauses) == 2
    resume_gc(held)
    # The timed pause ended at its deadline, the held one when resumed: only
    # then is the collector back.
    assert _runtime.gc_resumed.wait(10)
    assert gc.isenabled()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
@pytest.mark.timeout(60)
def test_a_child_forked_during_a_pause_has_its_gc_back(gc_on):
    token = pause_gc()
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, and never return into pytest
            try:
                ok = gc.isenabled() and _runtime.gc_resumed.is_set()
                again = pause_gc(seconds=0.01)
                ok = ok and not gc.isenabled() and _runtime.gc_resumed.wait(10) and gc.isenabled()
                resume_gc(again)
                os.write(write, b"1" if ok else b"0")
            finally:
                os._exit(0)
        os.close(write)
        answer = os.read(read, 1)
        os.waitpid(pid, 0)
        os.close(read)
    finally:
        resume_gc(token)
    assert answer == b"1", "the child's GC was not back, or pauses did not work there"


def test_a_timed_pause_has_a_daemon_timer_that_ends_with_it(gc_on):
    before = set(threading.enumerate())
    token = pause_gc(seconds=60)
    timers = [t for t in threading.enumerate() if t not in before and t.name == "unnest-gc"]
    assert len(timers) == 1 and timers[0].daemon
    resume_gc(token)
    # Ended with its pause: distributed's test utilities fail a test that
    # leaves a thread behind.
    timers[0].join(10)
    assert not timers[0].is_alive()


def test_a_lost_untimed_pause_ends_at_the_next_pause_after_its_backstop(gc_on, monkeypatch):
    # As when an interrupt lands between a walk's pause and the walk holding
    # its token: nobody will resume it.
    monkeypatch.setattr(_runtime, "GC_BACKSTOP", 0.0)
    pause_gc()
    assert not gc.isenabled()
    monkeypatch.setattr(_runtime, "GC_BACKSTOP", 60.0)
    with no_gc():
        pass
    assert gc.isenabled() and _runtime.gc_resumed.is_set()


@pytest.mark.timeout(30)
def test_a_bound_of_years_is_the_longest_wait_there_is(gc_on):
    years = pause_gc(seconds=1e12)  # above what Condition.wait takes at once
    pause_gc(seconds=0.05)
    resume_gc(years)
    assert _runtime.gc_resumed.wait(10), "the short bound did not end its pause"
