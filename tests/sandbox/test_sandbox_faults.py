"""Fault injection: rate limit, burst 429, 5xx, lost and slow responses, in-flight, latency, seeds."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import requests

from koywe_sandbox.state import STAT_KEYS
from koywe_sandbox.testing import run_sandbox, wait_for


def _auth_headers(sb, token_for):
    return {"Authorization": f"Bearer {token_for(sb)}"}


def _wait_idle(sb, timeout=30.0):
    """Wait until no /V1 request is in flight (e.g. a slow response the client gave up on)."""
    wait_for(lambda: sb.stats()["in_flight"] == 0, timeout, message="no /V1 request in flight")


def test_stats_have_every_counter(sandbox):
    assert set(sandbox.stats()) == set(STAT_KEYS)


def test_token_bucket_429_with_retry_after():
    """Frozen clock: the bucket refills only when the test advances time, so the counts are exact."""
    with run_sandbox(rate_limit=2, manual_clock=True) as sb:
        statuses, retry_after = [], []
        for _ in range(6):
            response = requests.get(f"{sb.base_url}/documents")  # no token: admitted calls answer 401
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.json() == {"error": "Too many requests"}
                retry_after.append(response.headers["Retry-After"])
        assert statuses == [401, 401, 429, 429, 429, 429]  # burst = max(1, rate) = 2
        assert set(retry_after) == {"1"}
        assert sb.stats()["rate_limited"] == 4
        sb.advance_clock(0.49)  # 2 req/s: one token back after 0.5 s, not before
        assert requests.get(f"{sb.base_url}/documents").status_code == 429
        sb.advance_clock(0.01)
        assert requests.get(f"{sb.base_url}/documents").status_code == 401
        assert requests.get(f"{sb.base_url}/documents").status_code == 429
        sb.advance_clock(60)  # a long pause refills only up to the capacity
        assert [requests.get(f"{sb.base_url}/documents").status_code for _ in range(3)] == [401, 401, 429]


def test_retry_after_is_rounded_up(manual_sandbox):
    manual_sandbox.set_faults(rate_limit=0.5)
    assert requests.get(f"{manual_sandbox.base_url}/documents").status_code == 401
    response = requests.get(f"{manual_sandbox.base_url}/documents")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"  # 1 token at 0.5/s: 2 s
    manual_sandbox.advance_clock(0.5)
    response = requests.get(f"{manual_sandbox.base_url}/documents")
    assert response.headers["Retry-After"] == "2"  # 1.5 s left, rounded up
    manual_sandbox.advance_clock(1.4)
    assert requests.get(f"{manual_sandbox.base_url}/documents").headers["Retry-After"] == "1"  # 0.1 s left


def test_burst_429_from_the_command_line():
    with run_sandbox(burst_429={"every": 3, "length": 2, "retry_after": 7}) as sb:
        responses = [requests.get(f"{sb.base_url}/documents") for _ in range(10)]
        assert [r.status_code for r in responses] == [401, 401, 401, 429, 429] * 2
        assert {r.headers["Retry-After"] for r in responses if r.status_code == 429} == {"7"}
        assert sb.stats()["rate_limited"] == 4
        assert sb.faults()["burst_429"] == {"every": 3, "length": 2, "retry_after": 7}


def test_injected_5xx_creates_nothing(sandbox, token_for, make_doc):
    headers = _auth_headers(sandbox, token_for)
    sandbox.set_faults(error_5xx_rate=1)
    for _ in range(5):
        response = requests.post(f"{sandbox.base_url}/documents", json=make_doc(ref="tx"), headers=headers)
        assert response.status_code in (500, 502, 503)
        assert "error" in response.json()
    assert sandbox.documents() == []
    stats = sandbox.stats()
    assert (stats["injected_5xx"], stats["documents_created"], stats["duplicate_references"]) == (5, 0, 0)
    sandbox.set_faults(error_5xx_rate=0)
    assert requests.post(f"{sandbox.base_url}/documents", json=make_doc(), headers=headers).status_code == 201


def test_lost_response_creates_the_document_and_drops_the_connection(sandbox, token_for, make_doc):
    headers = _auth_headers(sandbox, token_for)
    sandbox.set_faults(lost_response_rate=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(
            f"{sandbox.base_url}/documents", json=make_doc(ref="lost-1"), headers=headers, timeout=5
        )
    documents = sandbox.documents()
    assert [d["references"][0]["reference_number"] for d in documents] == ["lost-1"]
    assert sandbox.stats()["lost_responses"] == 1
    sandbox.set_faults(lost_response_rate=0)
    found = requests.get(
        f"{sandbox.base_url}/documents",
        params={"reference_code": 5, "reference_number": "lost-1"},
        headers=headers,
    ).json()["_embedded"]["documents"]
    assert [d["document_id"] for d in found] == [documents[0]["document_id"]]


def test_lost_response_sends_zero_bytes(sandbox, token_for, make_doc):
    """Raw socket: the whole request is sent, then the server closes without one response byte."""
    import json

    headers = _auth_headers(sandbox, token_for)
    sandbox.set_faults(lost_response_rate=1)
    body = json.dumps(make_doc()).encode()
    request = (
        f"POST /V1/documents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {headers['Authorization']}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received == b""
    assert len(sandbox.documents()) == 1


def test_slow_response_times_out_the_client_but_creates_the_document(sandbox, token_for, make_doc):
    """The abandoned answer is delayed far longer (8 s) than anything else in the test takes."""
    headers = _auth_headers(sandbox, token_for)
    sandbox.set_faults(slow_response_rate=1, slow_response_ms=8000)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(
            f"{sandbox.base_url}/documents", json=make_doc(ref="slow-1"), headers=headers, timeout=(5, 0.3)
        )
    assert time.monotonic() - started < 7.0  # the client gave up; it did not wait for the answer
    assert len(sandbox.documents()) == 1
    assert sandbox.stats()["slow_responses"] == 1
    sandbox.set_faults(slow_response_ms=200)
    response = requests.post(f"{sandbox.base_url}/documents", json=make_doc(), headers=headers, timeout=30)
    assert response.status_code == 201  # a patient client still gets the answer
    assert sandbox.stats()["in_flight"] == 1  # the abandoned slow answer is still pending
    _wait_idle(sandbox)
    assert sandbox.stats()["in_flight"] == 0


def test_latency_is_added_to_v1_calls(sandbox):
    sandbox.set_faults(latency_ms=250)
    started = time.monotonic()
    assert requests.get(f"{sandbox.base_url}/documents").status_code == 401
    assert time.monotonic() - started >= 0.25


def test_max_in_flight_with_concurrent_requests(sandbox, token_for):
    _wait_idle(sandbox)
    sandbox.reset()
    headers = _auth_headers(sandbox, token_for)
    assert sandbox.stats()["max_in_flight"] == 1
    sandbox.set_faults(latency_ms=2000)  # long enough for 8 started threads to overlap on a busy machine
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def call() -> None:
        barrier.wait()
        statuses.append(
            requests.get(f"{sandbox.base_url}/documents", headers=headers, timeout=60).status_code
        )

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 8
    stats = sandbox.stats()
    assert stats["max_in_flight"] >= 6
    assert stats["in_flight"] == 0
    assert stats["list_calls"] == 8


def _statuses(sb, n=30):
    return [requests.get(f"{sb.base_url}/documents").status_code for _ in range(n)]


def test_seed_makes_fault_choices_reproducible(sandbox):
    sandbox.set_faults(seed=42, error_5xx_rate=0.5)
    first = _statuses(sandbox)
    assert 401 in first and {500, 502, 503} & set(first)
    sandbox.reset()  # re-seeds the generator
    assert _statuses(sandbox) == first
    sandbox.set_faults(seed=43)
    assert _statuses(sandbox) != first
    with run_sandbox(seed=42, error_5xx_rate=0.5) as other:
        assert _statuses(other) == first


def test_seeded_lost_responses_are_reproducible(sandbox, token_for, make_doc):
    def run() -> list[bool]:
        headers = _auth_headers(sandbox, token_for)
        lost = []
        for _ in range(12):
            try:
                requests.post(f"{sandbox.base_url}/documents", json=make_doc(), headers=headers, timeout=5)
                lost.append(False)
            except requests.exceptions.ConnectionError:
                lost.append(True)
        return lost

    sandbox.set_faults(seed=5, lost_response_rate=0.5)
    first = run()
    assert True in first and False in first
    assert len(sandbox.documents()) == 12
    sandbox.reset()
    assert run() == first


@pytest.mark.parametrize(
    "payload",
    [
        {"error_5xx_rate": 2},
        {"latency_ms": -1},
        {"nope": 1},
        {"burst_429": {"every": 0, "length": 1}},
        {"seed": "x"},
    ],
)
def test_invalid_faults_are_400_and_change_nothing(sandbox, payload):
    before = sandbox.faults()
    response = httpx.post(
        f"{sandbox.url}/_sandbox/faults", json={"lost_response_rate": 0.5, **payload}, trust_env=False
    )
    assert response.status_code == 400
    assert "error" in response.json()
    assert sandbox.faults() == before


def test_reset_clears_data_and_stats_but_keeps_faults(sandbox, token_for, make_doc):
    headers = _auth_headers(sandbox, token_for)
    requests.post(f"{sandbox.base_url}/documents", json=make_doc(), headers=headers)
    sandbox.set_faults(latency_ms=1)
    sandbox.reset()
    assert sandbox.documents() == []
    assert requests.get(f"{sandbox.base_url}/documents", headers=headers).status_code == 401  # tokens cleared
    stats = sandbox.stats()
    assert stats["documents_created"] == 0 and stats["requests_total"] == 1
    assert sandbox.faults()["latency_ms"] == 1
