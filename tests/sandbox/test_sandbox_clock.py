"""The sandbox clock: injectable base clock, manual advance, and ``max_requests_in_any_second``.

Unit tests drive :class:`SandboxState` with an injected clock; HTTP tests use ``--manual-clock`` so that
the sandbox's time moves only when the test says so (no sleeps, no timing assumptions).
"""

from __future__ import annotations

import random

import pytest
import requests
from sandbox_support import get_token

from koywe_sandbox.clock import SandboxClock, WindowPeak
from koywe_sandbox.faults import TokenBucket
from koywe_sandbox.state import SandboxConfig, SandboxState


class FakeClock:
    """Monotonic seconds that move only when ``now`` is changed."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def brute_force_peak(times: list[float], width: float = 1.0) -> int:
    """Largest number of times in any half-open window [t, t + width), trying every window start."""
    return max((sum(1 for u in times if t <= u < t + width) for t in times), default=0)


# --------------------------------------------------------------------------- WindowPeak


@pytest.mark.parametrize(
    ("times", "peak"),
    [
        ([], 0),
        ([5.0], 1),
        ([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 5),  # 0.0 and 1.0 are one whole second apart: not together
        ([0.0, 0.5, 0.999, 1.0, 1.5], 3),
        ([0.0, 0.0, 0.0, 3.0, 3.0], 3),  # simultaneous arrivals all count
        ([0.0, 0.9, 1.8, 2.7], 2),
        ([0.0, 10.0, 10.1, 10.2, 10.99, 11.0, 11.05], 5),
    ],
)
def test_window_peak_examples(times, peak):
    window = WindowPeak(1.0)
    for t in times:
        window.add(t)
    assert window.peak == peak == brute_force_peak(times)


def test_window_peak_matches_brute_force_on_random_arrivals():
    rng = random.Random(20250415)
    for _ in range(300):
        times, now = [], 0.0
        for _ in range(rng.randint(1, 60)):
            now += rng.choice((0.0, 0.001, 0.05, 0.25, 0.5, 0.999, 1.0, 1.5, rng.random()))
            times.append(now)
        window = WindowPeak(1.0)
        peaks = [window.add(t) for t in times]
        assert window.peak == brute_force_peak(times)
        assert peaks == sorted(peaks)  # the peak never goes down
        assert len(window.recent) <= window.peak  # memory bounded by the peak


def test_window_peak_never_goes_back_in_time():
    window = WindowPeak(1.0)
    for t in (5.0, 4.0, 5.5):  # 4.0 counts as 5.0
        window.add(t)
    assert window.peak == 3


# --------------------------------------------------------------------------- SandboxClock


def test_sandbox_clock_offsets_and_freezes():
    base = FakeClock(10.0)
    clock = SandboxClock(base)
    assert clock() == 10.0
    base.now = 12.0
    assert clock() == 12.0
    assert clock.advance(3) == 15.0
    assert clock.offset == 3.0
    frozen = SandboxClock(base, manual=True)
    base.now = 99.0
    assert frozen() == 12.0  # frozen at its first reading
    assert frozen.advance(0.5) == 12.5
    for bad in (-1, float("nan"), float("inf"), "1", True, None):
        with pytest.raises(ValueError, match="advance_seconds"):
            clock.advance(bad)
    assert clock.offset == 3.0


# --------------------------------------------------------------------------- SandboxState with an injected clock


def _state(clock: FakeClock, **config) -> SandboxState:
    return SandboxState(SandboxConfig(clock=clock, **config))


def test_state_counts_max_requests_in_any_second():
    clock = FakeClock(0.0)
    state = _state(clock)
    arrivals = [0.0, 0.1, 0.2, 0.95, 1.0, 1.1, 1.94, 1.95, 3.0]
    for t in arrivals:
        clock.now = t
        state.enter()
        state.leave()
    # [0.95, 1.95): 0.95, 1.0, 1.1, 1.94 -> 4; [0.0, 1.0): 0.0, 0.1, 0.2, 0.95 -> 4; [1.0, 2.0): 4
    assert state.stats["max_requests_in_any_second"] == brute_force_peak(arrivals) == 4
    assert state.stats["requests_total"] == len(arrivals)
    state.reset()
    assert state.stats["max_requests_in_any_second"] == 0
    clock.now = 3.5  # arrivals before the reset do not count any more
    state.enter()
    assert state.stats["max_requests_in_any_second"] == 1


def test_state_lists_its_arrivals_since_the_last_reset():
    clock = FakeClock(10.0)
    state = _state(clock)
    clock.now = 10.5
    state.enter("POST", "/V1/auth")
    state.reset()
    clock.now = 12.0
    state.enter("GET", "/V1/documents?reference_code=5&reference_number=TX-1")
    clock.now = 12.25
    state.enter("POST", "/V1/documents")
    assert state.arrival_view() == [
        {"at": 1.5, "method": "GET", "target": "/V1/documents?reference_code=5&reference_number=TX-1"},
        {"at": 1.75, "method": "POST", "target": "/V1/documents"},
    ]


def test_state_token_expiry_follows_the_injected_clock():
    clock = FakeClock()
    state = _state(clock, token_ttl=60)
    status, body = state.authenticate(
        {"grant_type": "password", "client_id": "sandbox-client", "client_secret": "sandbox-secret",
         "username": "sandbox-user", "password": "sandbox-password"}
    )  # fmt: skip
    assert status == 200
    header = f"Bearer {body['access_token']}"
    clock.now += 59.999
    assert state.token_valid(header)
    clock.now += 0.001
    assert not state.token_valid(header)


def test_state_token_bucket_uses_the_injected_clock():
    clock = FakeClock()
    state = _state(clock)
    state.set_faults({"rate_limit": 4})
    assert [state.admit() is None for _ in range(5)] == [True] * 4 + [False]
    clock.now += 0.25  # one token back at 4/s
    assert state.admit() is None
    refusal = state.admit()
    assert refusal is not None and refusal.headers == {"Retry-After": "1"}
    bucket = TokenBucket(0.5, clock)
    assert bucket.take() is None
    assert bucket.take() == pytest.approx(2.0)


def test_state_validation_schedule_and_forced_rejection():
    clock = FakeClock()
    state = _state(clock, validation_delay=30.0, reject_references=["bad"])
    body = {
        "header": {"account_id": 1, "document_type_id": 2, "issue_date": "2025-01-01", "currency_id": 39},
        "details": [{"quantity": 1, "unit_price": 10, "total_amount_line": 10}],
        "totals": {"net_amount": 10, "taxes_amount": 0, "total_amount": 10},
    }
    good = state.create_document(body, stamp=False)["document_id"]
    bad = state.create_document(
        {**body, "references": [{"reference_code": 5, "reference_number": "bad"}]}, stamp=False
    )["document_id"]
    assert state.schedule_validation(good) == clock.now + 30
    clock.now += 10
    assert state.schedule_validation(bad) == clock.now + 30
    clock.now += 20
    assert state.due_validations() == [good]
    clock.now += 10
    assert state.due_validations() == [good, bad]
    payloads = {d: state.complete_validation(d) for d in (good, bad)}
    assert payloads[good]["taxbureau_validation_status"] == 3
    assert payloads[bad]["taxbureau_validation_status"] == 5
    assert state.due_validations() == []
    state.reset()  # the start-up reject list survives a reset
    assert state.config.reject_references == ["bad"]


# --------------------------------------------------------------------------- over HTTP


def test_max_requests_in_any_second_over_http(manual_sandbox):
    sb = manual_sandbox
    assert sb.stats()["max_requests_in_any_second"] == 0
    token = get_token(sb)  # /V1/auth counts
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("/documents", "/documents/1000", "/nothing", "/accounts/1"):
        requests.get(f"{sb.base_url}{path}", headers=headers)  # any endpoint and status counts
    assert sb.stats()["max_requests_in_any_second"] == 5
    sb.advance_clock(0.5)
    for _ in range(3):
        requests.get(f"{sb.base_url}/documents")
    assert sb.stats()["max_requests_in_any_second"] == 8
    sb.advance_clock(0.5)  # t = 1.0: the first 5 are a whole second old
    for _ in range(2):
        requests.get(f"{sb.base_url}/documents")
    assert sb.stats()["max_requests_in_any_second"] == 8  # window (0, 1.0] holds 3 + 2
    sb.advance_clock(0.2)
    for _ in range(4):
        requests.get(f"{sb.base_url}/documents")
    assert sb.stats()["max_requests_in_any_second"] == 9  # [0.5, 1.5): 3 + 2 + 4
    for _ in range(3):
        sb.stats(), sb.faults(), sb.documents()  # admin calls are not /V1 requests
    assert sb.stats()["max_requests_in_any_second"] == 9
    assert sb.stats()["requests_total"] == 14
    arrivals = sb.arrivals()  # what was counted, call by call (admin calls not among them)
    assert len(arrivals) == 14
    assert [(a["method"], a["target"]) for a in arrivals[:5]] == [
        ("POST", "/V1/auth"),
        ("GET", "/V1/documents"),
        ("GET", "/V1/documents/1000"),
        ("GET", "/V1/nothing"),
        ("GET", "/V1/accounts/1"),
    ]
    offsets = [0.0] + [0.5] * 3 + [1.0] * 2 + [1.2] * 4  # seconds of the sandbox clock after the first
    assert [round(a["at"] - arrivals[0]["at"], 3) for a in arrivals[4:]] == offsets
    sb.reset()
    assert sb.stats()["max_requests_in_any_second"] == 0
    assert sb.arrivals() == []


def test_rate_limited_requests_count_in_the_window(manual_sandbox):
    manual_sandbox.set_faults(rate_limit=2)
    statuses = [requests.get(f"{manual_sandbox.base_url}/documents").status_code for _ in range(6)]
    assert statuses.count(429) == 4
    stats = manual_sandbox.stats()
    assert stats["max_requests_in_any_second"] == 6  # arrivals, refused or not
    assert stats["rate_limited"] == 4


def test_max_requests_on_the_real_clock_never_spans_an_advance(sandbox):
    """On the real clock the exact peak depends on the machine's speed; its bounds do not."""
    for _ in range(3):
        requests.get(f"{sandbox.base_url}/documents")
    sandbox.advance_clock(10)
    for _ in range(3):
        requests.get(f"{sandbox.base_url}/documents")
    stats = sandbox.stats()
    assert stats["requests_total"] == 6
    assert 1 <= stats["max_requests_in_any_second"] <= 3
