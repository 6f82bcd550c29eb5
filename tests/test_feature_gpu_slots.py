"""Steps of features/gpu_slots.feature: waiting for slots, getting them back, config sync."""

import logging
import os
import signal
import sqlite3
import subprocess
import time

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

# the shared steps assert with plain `assert`; let pytest explain their failures
pytest.register_assert_rewrite("bdd_steps")

from bdd_steps import *  # noqa: E402,F401,F403  (shared steps become fixtures here)
from bdd_steps import shown, slots_shown  # noqa: E402
from harness import wait_for  # noqa: E402

scenarios("gpu_slots.feature")

# "stays queued" is watched for this many ticks of the daemon (each tick tries to
# give the queued case a slot) and at least this long (a few polls of the running job).
WATCH_TICKS = 10
WATCH_SECONDS = 1.0


def groups_setting(datatable) -> dict:
    header, *rows = datatable
    groups = {}
    for row in rows:
        cells = dict(zip(header, row))
        group = {"slots": int(cells["slots"])}
        if cells.get("devices", "").strip():
            group["devices"] = [d.strip() for d in cells["devices"].split(",")]
        groups[cells["group"]] = group
    return groups


@given("the GPU groups are:")
def groups_are(ws, datatable):
    ws.write_config(groups=groups_setting(datatable))


@when("caseflow is restarted with the GPU groups:")
def restarted_with_groups(ws, datatable):
    ws.stop()
    ws.write_config(groups=groups_setting(datatable))
    ws.start()


@then(parsers.parse('the case "{name}" stays queued while "{other}" runs'))
def stays_queued(ws, name, other):
    ws.wait_state(name, "queued")
    ticks = ws.ticks + WATCH_TICKS
    until = time.monotonic() + WATCH_SECONDS

    def watched():
        waiting, running = ws.case(name), ws.case(other)
        assert running.state == "running", f"{other!r} is {running.state}"
        assert waiting.state == "queued", (
            f"{name!r} became {waiting.state} while {other!r} still held the only slot")
        return ws.ticks >= ticks and time.monotonic() >= until

    wait_for(watched, what=f"{WATCH_TICKS} ticks with {name!r} queued")
    holders = [s["case_name"] for s in slots_shown(ws) if s["case_id"] is not None]
    assert name not in holders


@when(parsers.parse('the job of "{name}" is killed outright, leaving no exit code'))
def job_killed(ws, name):
    ws.wait_state(name, "running")
    os.killpg(ws.job_pid(name), signal.SIGKILL)


@given(parsers.parse("the GPU host has room for only {size:d} KB of case folders"))
def tiny_remote(ws, context, size):
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}k", "tmpfs", str(ws.remote)],
                   check=True)
    context.mounts.append(ws.remote)


@then(parsers.parse('no partial copy of "{name}" is left on the GPU host'))
def no_partial_copy(ws, name):
    left = sorted(p.name for p in ws.remote.iterdir() if name in p.name)
    assert left == [], f"left on the GPU host: {left}"


@then("the jobs see:")
def jobs_see(ws, datatable):
    header, *rows = datatable
    for row in rows:
        expected = dict(zip(header, row))
        name = expected.pop("case")
        env_file = ws.remote_folder(name) / "job_env.txt"
        text = wait_for(lambda: env_file.exists() and env_file.read_text(),
                        what=f"the environment of the job of {name!r}")
        env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        seen = {k: env.get(k, "(not set)") for k in expected}
        assert seen == expected, f"the job of {name!r} sees {seen}"
        case = shown(ws, name)
        assert (case["group"], str(case["slot"]), case["device"] or "(not set)") == (
            expected["CASEFLOW_GPU_GROUP"], expected["CASEFLOW_GPU_SLOT"],
            expected["CUDA_VISIBLE_DEVICES"]), f"caseflow shows {name!r} elsewhere: {case}"


@then("the GPU slots are:")
def slots_are(ws, datatable):
    header, *rows = datatable
    expected = [dict(zip(header, row)) for row in rows]
    got = [{"group": s["group"], "slot": str(s["slot"]), "device": s["device"] or "",
            "held by": s["case_name"] or "", "note": "retired" if s["retired"] else ""}
           for s in slots_shown(ws)]
    assert got == expected


@when(parsers.parse('the database is left saying that slot {index:d} of {group} is held by '
                    '"{name}", as after a crash'))
def leak_slot(ws, index, group, name):
    assert ws.daemon is None, "caseflow must be stopped to edit its database"
    case_id = ws.case(name).id
    conn = sqlite3.connect(ws.database)
    try:
        with conn:
            cur = conn.execute("UPDATE slots SET case_id = ? WHERE grp = ? AND idx = ?",
                               (case_id, group, index))
            assert cur.rowcount == 1
    finally:
        conn.close()
    held = [(s["group"], s["slot"]) for s in slots_shown(ws) if s["case_id"] == case_id]
    assert held == [(group, index)]


@then(parsers.parse("slot {index:d} of {group} is free"))
def slot_free(ws, index, group):
    slot = [s for s in slots_shown(ws) if (s["group"], s["slot"]) == (group, index)]
    assert len(slot) == 1 and slot[0]["case_id"] is None, slot


@then(parsers.parse('caseflow warned that it freed slot {index:d} of {group}, held by "{name}"'))
def warned_freed(ws, caplog, index, group, name):
    case_id = ws.case(name).id
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    wanted = f"freed slot {group}[{index}] held by case {case_id}"
    assert any(wanted in w for w in warnings), f"no warning {wanted!r} in {warnings}"


@given("caseflow looks at its cases once a second")
def tick_once_a_second(ws):
    ws.stop()
    ws.write_config(tick_seconds=1, poll_seconds=1)
    ws.start()


@then(parsers.parse('caseflow wakes up at most twice a second while "{name}" waits for '
                    '{seconds:d} seconds'))
def not_busy_while_waiting(ws, name, seconds):
    ws.wait_state(name, "queued")
    start_ticks, start = ws.ticks, time.monotonic()

    def watched():
        assert ws.case(name).state == "queued"
        return time.monotonic() - start >= seconds

    wait_for(watched, interval=0.2, what=f"{seconds} s of {name!r} waiting")
    rate = (ws.ticks - start_ticks) / (time.monotonic() - start)
    assert rate <= 2, f"caseflow ran {rate:.0f} ticks a second while {name!r} waited for a slot"
