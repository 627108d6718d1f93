"""The token cache: entries bound to one base URL and API user, and single-flight login across OS
processes on real SQLite / PostgreSQL / Redis stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from koywe_provider.hooks.token_store import (
    CachedToken,
    MemoryTokenStore,
    RedisTokenStore,
    SqlTokenStore,
    TokenRenewalTimeout,
    VariableTokenStore,
    api_user_key,
    token_store_for,
    variable_key,
)

REDIS_URL = os.environ.get("KOYWE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
USER = "api-user"


def redis_or_skip() -> str:
    """The test Redis URL; skip (or fail under CI=true, like ``postgres_or_skip``) when it does not answer."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
        client.ping()
        client.close()
    except Exception as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but Redis at {REDIS_URL} is unreachable: {err}")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable ({type(err).__name__}); set CI=true to fail")
    return REDIS_URL


def hour_token(value: str, **owner: str) -> CachedToken:
    return CachedToken(value, datetime.now(UTC) + timedelta(hours=1), **owner)


@pytest.fixture
def base_url() -> str:
    return f"https://koywe.test/{uuid.uuid4().hex}/V1"


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def store_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    elif request.param == "postgresql":
        yield request.getfixturevalue("pg_database")
    else:
        yield redis_or_skip()


@pytest.fixture
def shared_store(store_url, base_url):
    store = token_store_for(store_url, base_url=base_url, api_user=USER)
    yield store
    if isinstance(store, RedisTokenStore):
        store._redis.delete(store.redis_key)


def write_raw_entry(store, entry: dict) -> None:
    """Put ``entry`` in the store's slot as another program (or an older version) would."""
    raw = json.dumps(entry)
    if isinstance(store, RedisTokenStore):
        store._redis.set(store.redis_key, raw, px=60_000)
        return
    import sqlalchemy as sa

    engine = sa.create_engine(store.url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO koywe_token_cache (cache_key, entry, updated_at_ms) VALUES (:k, :e, 0) "
                "ON CONFLICT (cache_key) DO UPDATE SET entry = excluded.entry"
            ),
            {"k": store.cache_key, "e": raw},
        )
    engine.dispose()


# ------------------------------------------------------------------------------ owner binding
def test_entries_record_their_base_url_and_api_user():
    token = hour_token("secret-bearer").owned_by("HTTPS://Koywe.test/V1/", USER)
    assert (token.base_url, token.api_user) == ("https://koywe.test/V1", USER)
    assert CachedToken.from_json(token.to_json()) == token
    assert "secret-bearer" not in repr(token)
    legacy = CachedToken.from_json({"access_token": "t", "expires_at": "2030-01-01T00:00:00"})
    assert (legacy.base_url, legacy.api_user, legacy.expires_at.tzinfo) == (None, None, UTC)
    from koywe_provider.models.answers import AuthAnswer

    answer = AuthAnswer.model_validate({"access_token": "abc", "expires_in": 60})
    from_answer = CachedToken.from_auth_answer(answer, base_url="https://k.test/V1/", api_user=USER)
    assert from_answer.belongs_to("https://k.test/V1", USER) and 55 < from_answer.seconds_left() <= 60
    for bad in ("{}", "not json", {"access_token": "", "expires_at": "2030-01-01"}):
        with pytest.raises(ValueError):
            CachedToken.from_json(bad)
    assert api_user_key("https://K.test/V1/", USER) == "https://k.test/V1|api-user"


def test_memory_store_bound_to_an_api_user_stamps_and_refuses_others(base_url):
    store = MemoryTokenStore(base_url=base_url, api_user=USER)
    store.save(hour_token("mine"))
    assert store.load().access_token == "mine" and store.load().belongs_to(base_url, USER)
    with pytest.raises(ValueError, match="another base URL or API user"):
        store.save(hour_token("theirs").owned_by("https://other.test/V1", USER))
    unbound = MemoryTokenStore()
    unbound.save(hour_token("any"))
    assert unbound.load().access_token == "any"


def test_variable_store_ignores_a_token_saved_for_another_base_url_or_user(monkeypatch, base_url):
    name = variable_key("koywe_owner_test")
    store = VariableTokenStore(name, base_url=base_url, api_user=USER)
    for foreign in (
        hour_token("sandbox").owned_by("http://127.0.0.1:8099/V1", USER),  # what `make demo` leaves
        hour_token("other-user").owned_by(base_url, "someone-else"),
        hour_token("legacy"),  # an entry that names no API user
    ):
        monkeypatch.setenv(f"AIRFLOW_VAR_{name.upper()}", foreign.to_json())
        assert store.load() is None
    monkeypatch.setenv(f"AIRFLOW_VAR_{name.upper()}", hour_token("mine").owned_by(base_url, USER).to_json())
    assert store.load().access_token == "mine"
    monkeypatch.setenv(f"AIRFLOW_VAR_{name.upper()}", "{corrupt")
    assert store.load() is None


def test_shared_store_never_uses_a_token_of_another_base_url_or_user(store_url, shared_store, base_url):
    shared_store.save(hour_token("mine"))
    other_url = token_store_for(store_url, base_url=base_url + "/x", api_user=USER)
    other_user = token_store_for(store_url, base_url=base_url, api_user="someone-else")
    assert other_url.load() is None and other_user.load() is None
    assert shared_store.load().access_token == "mine"
    # An entry in this user's slot that names another base URL (or none) is ignored too.
    write_raw_entry(
        shared_store, json.loads(hour_token("x").owned_by("https://other.test/V1", USER).to_json())
    )
    assert shared_store.load() is None
    write_raw_entry(shared_store, json.loads(hour_token("legacy").to_json()))
    assert shared_store.load() is None


def test_token_store_urls(tmp_path, base_url):
    assert isinstance(
        token_store_for(f"sqlite:///{tmp_path / 'a.db'}", base_url=base_url, api_user=USER), SqlTokenStore
    )
    memory = token_store_for("memory://", base_url=base_url, api_user=USER)
    assert memory is token_store_for("memory://", base_url=base_url + "/", api_user=USER)
    for bad in ("mysql://h/db", "sqlite:///:memory:"):
        with pytest.raises(ValueError):
            token_store_for(bad, base_url=base_url, api_user=USER)
    with pytest.raises(ValueError):
        MemoryTokenStore(base_url=base_url)


# -------------------------------------------------------------------------------- renewal
def test_renew_reuses_a_good_token_and_replaces_a_rejected_one(shared_store):
    calls: list[int] = []

    def fetch() -> CachedToken:
        calls.append(1)
        return hour_token(f"new-{len(calls)}")

    shared_store.save(hour_token("old"))
    assert shared_store.renew(fetch).access_token == "old" and calls == []
    assert shared_store.renew(fetch, rejected="old").access_token == "new-1"
    assert shared_store.load().access_token == "new-1" and calls == [1]
    shared_store.save(CachedToken("short", datetime.now(UTC) + timedelta(seconds=60)))
    assert shared_store.renew(fetch).access_token == "new-2", "60 s left is below the 300 s margin"

    def failing() -> CachedToken:
        raise RuntimeError("POST /auth refused")

    with pytest.raises(RuntimeError):
        shared_store.renew(failing, rejected="new-2")
    assert shared_store.load().access_token == "new-2", "nothing is stored when the login fails"


class Child:
    """A separate Python process running ``code`` (with ``ARGS`` bound to the JSON ``args``): it prints
    ``ready`` once its store is open, waits for ``go`` on stdin, then prints one JSON line of results."""

    def __init__(self, code: str, *args: object) -> None:
        program = f"import json, sys\nARGS = json.loads(sys.argv[1])\n{textwrap.dedent(code)}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", program, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"child failed to start (exit code {self.proc.poll()})"

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self):
        line = self.proc.stdout.readline()
        assert self.proc.wait(timeout=120) == 0 and line, "child failed"
        return json.loads(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# Renews the token it finds rejected; every call of fetch() (one POST /auth) appends a line to a file.
RENEW = """
import os, time
from datetime import UTC, datetime, timedelta
from koywe_provider.hooks.token_store import CachedToken, token_store_for
url, base_url, api_user, fetch_log, fetch_seconds = ARGS
store = token_store_for(url, base_url=base_url, api_user=api_user)

def fetch():
    with open(fetch_log, "a") as log:
        log.write(f"{os.getpid()}\\n")
    time.sleep(fetch_seconds)  # a slow POST /auth widens the race
    return CachedToken(f"new-from-{os.getpid()}", datetime.now(UTC) + timedelta(hours=1))

print("ready", flush=True)
sys.stdin.readline()
print(json.dumps(store.renew(fetch, rejected="revoked").access_token), flush=True)
"""


def fetches(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.timeout(180)
def test_four_processes_finding_the_token_rejected_log_in_once(store_url, shared_store, base_url, tmp_path):
    shared_store.save(hour_token("revoked"))
    fetch_log = tmp_path / "fetches.log"
    children = [Child(RENEW, store_url, base_url, USER, str(fetch_log), 0.5) for _ in range(4)]
    try:
        for child in children:
            child.wait_ready()
        for child in children:
            child.go()
        tokens = [child.result() for child in children]
    finally:
        for child in children:
            child.kill()
    assert fetches(fetch_log) == 1
    assert len(set(tokens)) == 1 and tokens[0].startswith("new-from-")
    assert shared_store.load().access_token == tokens[0]


@pytest.mark.timeout(180)
def test_a_login_under_way_elsewhere_makes_others_wait_then_reuse_it(
    store_url, shared_store, base_url, tmp_path
):
    shared_store.save(hour_token("revoked"))
    fetch_log = tmp_path / "fetches.log"
    child = Child(RENEW, store_url, base_url, USER, str(fetch_log), 2.0)
    try:
        child.wait_ready()
        child.go()
        deadline = time.monotonic() + 60
        while fetches(fetch_log) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fetches(fetch_log) == 1, "the child is logging in"

        def must_not_fetch() -> CachedToken:
            raise AssertionError("a second login")

        with pytest.raises(TokenRenewalTimeout):
            shared_store.renew(must_not_fetch, rejected="revoked", wait_seconds=0.2)
        token = shared_store.renew(must_not_fetch, rejected="revoked", wait_seconds=60)
        assert token.access_token == child.result()
    finally:
        child.kill()
    assert fetches(fetch_log) == 1


def test_sqlite_login_lock_of_a_dead_holder_is_taken_over(tmp_path, base_url):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = SqlTokenStore(url, base_url=base_url, api_user=USER)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO koywe_token_login_lock VALUES (:k, 'dead-holder', :e)"),
            {"k": store.cache_key, "e": int(time.time() * 1000) + 60_000},
        )
    with pytest.raises(TokenRenewalTimeout):
        store.renew(lambda: hour_token("new"), wait_seconds=0.2)
    with engine.begin() as conn:  # its lease runs out
        conn.execute(sa.text("UPDATE koywe_token_login_lock SET expires_at_ms = 0"))
    engine.dispose()
    assert store.renew(lambda: hour_token("new")).access_token == "new"


def test_threads_sharing_a_memory_store_log_in_once(base_url):
    store = MemoryTokenStore(base_url=base_url, api_user=USER)
    store.save(hour_token("revoked"))
    calls: list[int] = []
    start = threading.Barrier(4)
    tokens: list[str] = []

    def fetch() -> CachedToken:
        calls.append(1)
        time.sleep(0.2)
        return hour_token("new")

    def worker() -> None:
        start.wait(timeout=30)
        tokens.append(store.renew(fetch, rejected="revoked").access_token)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert calls == [1] and tokens == ["new"] * 4
