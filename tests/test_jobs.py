"""The job table's leases: a job is taken over only when its owner stops renewing it."""

import time

from server.jobs import MAX_ATTEMPTS, JobStore


def _store(tmp_path) -> JobStore:
    store = JobStore(tmp_path / "jobs.sqlite")
    store.create("a1", {}, source_name="source.mp4", source_bytes=1, source_sha256="0" * 64, idempotency_key=None)
    return store


def test_a_live_lease_is_not_taken_and_a_lapsed_one_is(tmp_path):
    store = _store(tmp_path)
    job = store.claim_next("server-a", lease_seconds=0.5)
    assert job is not None and job.status == "processing" and job.lease_owner == "server-a" and job.attempts == 1
    assert store.claim_next("server-b", lease_seconds=0.5) is None  # a holds it
    assert store.heartbeat("a1", "server-a", 0.5) == "held"
    assert store.heartbeat("a1", "server-b", 0.5) == "lost"  # only the lease owner renews
    time.sleep(0.6)  # a stops renewing (killed)
    taken = store.claim_next("server-b", lease_seconds=30)
    assert taken is not None and taken.lease_owner == "server-b" and taken.attempts == 2
    assert store.heartbeat("a1", "server-a", 30) == "lost"  # a, if it wakes up, learns it lost the job
    store.finish("a1")
    done = store.get("a1")
    assert done.status == "ready" and done.lease_owner is None


def test_a_job_that_keeps_dying_fails_with_a_reason(tmp_path):
    store = _store(tmp_path)
    for attempt in range(MAX_ATTEMPTS):
        job = store.claim_next(f"server-{attempt}", lease_seconds=0.01)
        assert job is not None and job.attempts == attempt + 1
        time.sleep(0.02)
    assert store.claim_next("server-last", lease_seconds=30) is None
    job = store.get("a1")
    assert job.status == "errored" and "interrupted" in job.error["detail"]


def test_release_requeues_at_once_and_keeps_the_attempt_count(tmp_path):
    store = _store(tmp_path)
    store.claim_next("server-a", lease_seconds=30)
    store.release("a1", "server-a")
    job = store.claim_next("server-b", lease_seconds=30)
    assert job is not None and job.lease_owner == "server-b" and job.attempts == 2


def test_an_older_database_gains_the_lease_columns(tmp_path):
    import sqlite3

    from server import jobs

    path = tmp_path / "old.sqlite"
    old_schema = jobs.SCHEMA.replace("    lease_owner TEXT,\n    lease_expires REAL,\n", "")
    con = sqlite3.connect(path)
    con.executescript(old_schema)
    con.execute("INSERT INTO assets (id, status, options, created, updated) VALUES ('x', 'queued', '{}', 0, 0)")
    con.commit()
    con.close()
    store = JobStore(path)
    assert store.claim_next("s", 30).lease_owner == "s"


def test_cancel_is_immediate_when_queued_and_asked_of_the_dispatcher_when_processing(tmp_path):
    store = _store(tmp_path)
    store.create("a2", {}, source_name="source.mp4", source_bytes=1, source_sha256="0" * 64, idempotency_key=None)
    assert store.cancel("a2") == "canceled"
    job = store.claim_next("server-a", lease_seconds=30)
    assert job is not None and job.id == "a1"  # a canceled job is never claimed
    assert store.claim_next("server-b", lease_seconds=30) is None
    assert store.cancel("a1") == "processing" and store.heartbeat("a1", "server-a", 30) == "cancel"
    assert not store.canceled("a1", "server-b")  # fenced: only the lease owner ends it
    assert store.canceled("a1", "server-a") and store.get("a1").status == "canceled"
    assert not store.finish("a1", lease_owner="server-a")  # the stopped worker's late end changes nothing
    assert store.cancel("a1") == "canceled"


def test_idempotency_keys_and_listing_are_per_owner(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    for owner, asset in (("alice", "a1"), ("bob", "b1")):
        store.create(asset, {}, source_name="s.mp4", source_bytes=10, source_sha256="0" * 64,
                     idempotency_key="same-key", owner=owner)
    assert store.by_idempotency_key("alice", "same-key").id == "a1"
    assert store.by_idempotency_key("bob", "same-key").id == "b1"
    assert [j.id for j in store.list(owner="alice")] == ["a1"]
    assert store.get("b1", owner="alice") is None and store.get("b1", owner="bob").id == "b1"
    assert store.usage("alice") == (1, 10) and store.usage() == (2, 20)


def test_each_thread_keeps_one_connection_and_a_failed_transaction_leaves_nothing(tmp_path):
    """The store's connections stay open per thread (a file request's lookup opens nothing); an
    exception inside ``BEGIN IMMEDIATE`` rolls back, so neither this thread's next call nor
    another thread's write waits on a lock it left."""
    import threading

    import pytest

    store = _store(tmp_path)
    with store._connect() as first, store._connect() as second:
        assert first is second
    with pytest.raises(RuntimeError), store._connect() as con:
        con.execute("BEGIN IMMEDIATE")
        con.execute("UPDATE assets SET stage='half-written' WHERE id='a1'")
        raise RuntimeError("crash mid-transaction")
    assert store.get("a1").stage == "queued"  # rolled back
    other: list = []
    thread = threading.Thread(target=lambda: other.append(store.cancel("a1")))
    thread.start()
    thread.join(5)
    assert other == ["canceled"]  # another thread (its own connection) wrote at once
    with store._connect() as con:
        assert not con.in_transaction and store.get("a1").status == "canceled"
