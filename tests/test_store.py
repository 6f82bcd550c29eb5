"""The SQLite store: schema versions, atomic transitions, a slot never held twice."""

import multiprocessing
import sqlite3

import pytest

from caseflow.config import GroupConfig, HostConfig
from caseflow.errors import StaleCase, StoreError
from caseflow.store import Store
from caseflow.store.schema import MIGRATIONS, SCHEMA_VERSION

GROUPS = (GroupConfig("gpu_a", 2, ("0", "1")), GroupConfig("gpu_b", 1))


def hosts(groups, name="h1"):
    return (HostConfig(name, None, None, tuple(groups)),)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite")
    s.migrate()
    s.sync_slots(hosts(GROUPS))
    yield s
    s.close()


def _case(store, name="c", state="queued"):
    return store.create_case(name, f"/inbox/{name}", "1:2", state, 100.0, 100.0)


def test_schema_is_versioned_and_wal(store, tmp_path):
    conn = sqlite3.connect(tmp_path / "db.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.migrate() == SCHEMA_VERSION  # idempotent


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path).migrate()


def test_transition_writes_state_history_and_slot_together(store):
    cid = _case(store)
    slot = store.free_slot("gpu_a")
    store.commit_transition(cid, "queued", "gpu_locked", "lock_gpu", 101.0, take_slot=slot.id)
    row = store.get(cid)
    assert (row.state, row.slot_index, row.slot_device) == ("gpu_locked", 0, "0")
    assert [(h.src, h.dst, h.trigger) for h in store.history(cid)] == [
        (None, "queued", "detect"), ("queued", "gpu_locked", "lock_gpu")]
    store.commit_transition(cid, "gpu_locked", "failure", "fail", 102.0,
                            changes={"reason": "boom"}, release_slot=True)
    row = store.get(cid)
    assert (row.state, row.slot_index, row.reason) == ("failure", None, "boom")
    assert store.free_slot("gpu_a").idx == 0


def test_a_stale_transition_changes_nothing(store):
    cid = _case(store)
    with pytest.raises(StaleCase):
        store.commit_transition(cid, "running", "success", "complete", 101.0)
    assert store.get(cid).state == "queued"
    assert len(store.history(cid)) == 1


def test_taking_a_held_slot_rolls_the_whole_transition_back(store):
    a, b = _case(store, "a"), _case(store, "b")
    slot = store.free_slot("gpu_b")
    store.commit_transition(a, "queued", "gpu_locked", "lock_gpu", 101.0, take_slot=slot.id)
    with pytest.raises(StaleCase):
        store.commit_transition(b, "queued", "gpu_locked", "lock_gpu", 101.0, take_slot=slot.id)
    assert store.get(b).state == "queued"
    assert len(store.history(b)) == 1


def test_one_case_cannot_hold_two_slots(store):
    cid = _case(store)
    s0, = [s for s in store.slots() if s.grp == "gpu_a" and s.idx == 0]
    s1, = [s for s in store.slots() if s.grp == "gpu_a" and s.idx == 1]
    store.commit_transition(cid, "queued", "gpu_locked", "lock_gpu", 101.0, take_slot=s0.id)
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction() as conn:
            conn.execute("UPDATE slots SET case_id = ? WHERE id = ?", (cid, s1.id))


def _grab(path, names, out):
    s = Store(path)
    got = 0
    for name in names:
        cid = s.create_case(name, f"/inbox/{name}", None, "queued", 1.0, 1.0)
        while True:
            slot = s.free_slot("gpu_a")
            if slot is None:
                break
            try:
                s.commit_transition(cid, "queued", "gpu_locked", "lock_gpu", 2.0, take_slot=slot.id)
                got += 1
                break
            except StaleCase:
                continue
    out.put(got)
    s.close()


def test_slot_taking_is_atomic_across_processes(store):
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_grab, args=(store.path, [f"p{i}-{j}" for j in range(10)], out))
             for i in range(4)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert total == 2  # gpu_a has two slots, 40 cases raced for them
    held = [s for s in store.slots() if s.grp == "gpu_a" and s.case_id is not None]
    assert len(held) == 2 and len({s.case_id for s in held}) == 2
    assert len(store.cases(["gpu_locked"])) == 2


def test_sync_slots_is_idempotent_and_retires_held_slots(store):
    assert store.sync_slots(hosts(GROUPS)) == []
    cid = _case(store)
    b = store.free_slot("gpu_b")
    store.commit_transition(cid, "queued", "gpu_locked", "lock_gpu", 101.0, take_slot=b.id)
    changes = store.sync_slots(hosts([GroupConfig("gpu_a", 3)]))
    assert "slot gpu_a[2] on h1 added" in changes
    assert any("gpu_b[0] on h1 retired" in c for c in changes)
    by_key = {(s.grp, s.idx): s for s in store.slots()}
    assert by_key[("gpu_b", 0)].retired and by_key[("gpu_b", 0)].case_id == cid
    assert by_key[("gpu_a", 0)].device is None  # devices were dropped from the config
    store.commit_transition(cid, "gpu_locked", "success", "complete", 102.0, release_slot=True)
    assert ("gpu_b", 0) not in {(s.grp, s.idx) for s in store.slots()}
    assert store.free_slot("gpu_b") is None


def test_reconcile_frees_slots_of_terminal_and_missing_cases(store):
    holding = ["gpu_locked", "uploaded", "running"]
    a, b = _case(store, "a"), _case(store, "b")
    s0 = store.free_slot("gpu_a")
    store.commit_transition(a, "queued", "gpu_locked", "lock_gpu", 101.0, take_slot=s0.id)
    s1 = store.free_slot("gpu_a")
    store.commit_transition(b, "queued", "gpu_locked", "lock_gpu", 101.0, take_slot=s1.id)
    with store.transaction() as conn:  # simulate a leak: b ended without releasing
        conn.execute("UPDATE cases SET state = 'success' WHERE id = ?", (b,))
    freed = store.reconcile_slots(holding)
    assert [(f[3], f[4]) for f in freed] == [(b, "success")]
    assert store.get(a).slot_index == 0
    assert store.reconcile_slots(holding) == []


def test_slots_belong_to_hosts_and_a_free_one_is_taken_where_most_are_free(store):
    two = (HostConfig("h1", None, None, (GroupConfig("gpu_a", 1),)),
           HostConfig("h2", None, None, (GroupConfig("gpu_a", 2), GroupConfig("gpu_b", 1))))
    store.sync_slots(two)
    assert sorted((s.host, s.grp, s.idx) for s in store.slots()) == [
        ("h1", "gpu_a", 0), ("h2", "gpu_a", 0), ("h2", "gpu_a", 1), ("h2", "gpu_b", 0)]
    first = store.free_slot("gpu_a", ["h1", "h2"])
    assert (first.host, first.idx) == ("h2", 0)  # h2 has two free, h1 one
    cid = _case(store)
    store.commit_transition(cid, "queued", "gpu_locked", "lock_gpu", 101.0, take_slot=first.id)
    tie = store.free_slot("gpu_a", ["h1", "h2"])
    assert tie.host == "h1"  # one free on each: the earlier host
    assert store.free_slot("gpu_a", ["h2"]).host == "h2"
    assert store.free_slot("gpu_b", ["h1"]) is None
    row = store.get(cid)
    assert (row.slot_host, row.slot_index) == ("h2", 0)


def test_slots_of_an_older_database_get_their_host_from_the_config(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    for v, script in enumerate(MIGRATIONS[:5]):
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {v + 1}")
    conn.execute("INSERT INTO cases (name, local_path, state, next_attempt_at, created_at,"
                 " updated_at) VALUES ('held', '/x', 'running', 0, 0, 0)")
    conn.execute("INSERT INTO slots (grp, idx, device, case_id) VALUES ('gpu_a', 0, '0', 1)")
    conn.commit()
    conn.close()
    store = Store(path)
    assert store.migrate() == SCHEMA_VERSION
    changes = store.sync_slots(hosts(GROUPS, name="gpu1"))
    slots = {(s.host, s.grp, s.idx): s for s in store.slots()}
    assert slots[("gpu1", "gpu_a", 0)].case_id == 1  # the running case keeps its slot
    assert set(slots) == {("gpu1", "gpu_a", 0), ("gpu1", "gpu_a", 1), ("gpu1", "gpu_b", 0)}
    assert "slot gpu_a[0] on gpu1 added" not in changes
    assert store.get(1).slot_host == "gpu1"
    store.close()
