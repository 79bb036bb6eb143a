"""Failed-login lockout: the counting rules (fake clock) and the real server's answers."""

from __future__ import annotations

import logging
import time

from edge.web.throttle import MAX_ADDRESSES, FailedLogins
from tests.util import Clock
from tests.web.conftest import PASSWORD, TOKEN, USER, basic, bearer, start_standin


def guess(logins: FailedLogins, addr: str) -> bool:
    """One wrong attempt through the reserve/settle cycle the server uses."""
    assert logins.begin(addr) == 0
    return logins.finish(addr, failed=True)


def test_lockout_after_limit_within_window_and_release() -> None:
    clock = Clock()
    logins = FailedLogins(limit=3, window=60, clock=clock)
    assert [guess(logins, "a") for _ in range(3)] == [False, False, True]
    assert logins.begin("a") == 60
    assert logins.begin("b") == 0                    # per address
    clock.t += 59.5
    assert logins.begin("a") == 1                    # rounded up, never 0 while locked
    clock.t += 0.5
    assert logins.begin("a") == 0


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    logins = FailedLogins(limit=3, window=60, clock=clock)
    for _ in range(10):
        assert not guess(logins, "a")
        clock.t += 31                                # at most two inside any 60 s
    assert logins.begin("a") == 0


def test_success_clears_no_header_does_not_count_zero_limit_disables() -> None:
    logins = FailedLogins(limit=2, window=60, clock=Clock())
    guess(logins, "a")
    assert logins.begin("a") == 0 and not logins.finish("a", failed=False, cleared=True)
    assert not guess(logins, "a")                    # the count started again
    for _ in range(5):                               # no Authorization header: not a guess
        assert logins.begin("a") == 0 and not logins.finish("a", failed=False)
    off = FailedLogins(limit=0, window=60, clock=Clock())
    assert not any(guess(off, "a") for _ in range(100)) and off.begin("a") == 0


def test_parallel_requests_cannot_exceed_the_limit() -> None:
    """Reserved before the check: 8 requests in flight at once get 3 tries, not 8."""
    logins = FailedLogins(limit=3, window=60, clock=Clock())
    admitted = [logins.begin("a") == 0 for _ in range(8)]
    assert admitted.count(True) == 3
    assert [logins.finish("a", failed=True) for _ in range(3)] == [False, False, True]
    assert logins.begin("a") == 60


def test_memory_is_bounded_by_address_count() -> None:
    logins = FailedLogins(limit=5, window=60, clock=Clock())
    for i in range(MAX_ADDRESSES + 500):
        guess(logins, f"10.0.{i // 256}.{i % 256}")
    assert len(logins._failures) == MAX_ADDRESSES and not logins._pending


def test_server_locks_out_a_guesser_then_lets_it_back(tmp_path, secret_files, caplog) -> None:
    caplog.set_level(logging.INFO, logger="edge.web")
    run = start_standin(tmp_path, auth={**secret_files, "max_failed_logins": 4, "lockout_seconds": 2})
    try:
        assert run.post("/api/v1/reload").status == 401                  # no header: not a guess
        for _ in range(4):
            assert run.post("/api/v1/reload", headers=basic(USER, "guess")).status == 401
        for headers in (basic(USER, "guess"), basic(USER, PASSWORD), bearer(TOKEN)):
            r = run.post("/api/v1/reload", headers=headers)
            assert r.status == 429 and r.json()["error"] == "locked_out", r.body
            assert 1 <= int(r.headers["retry-after"]) <= 2
        assert run.get("/api/v1/status").status == 200                   # read-only stays open
        locks = [rec for rec in caplog.records if "locked out 127.0.0.1" in rec.getMessage()]
        assert len(locks) == 1 and locks[0].levelno == logging.WARNING
        assert "guess" not in caplog.text and PASSWORD not in caplog.text
        wait = int(run.post("/api/v1/reload", headers=bearer(TOKEN)).headers["retry-after"])
        time.sleep(wait + 0.1)
        assert run.post("/api/v1/reload", headers=bearer(TOKEN)).status == 200
    finally:
        run.server.stop(timeout=5)
        run.daemon.close()
