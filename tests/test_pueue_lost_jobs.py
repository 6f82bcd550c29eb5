"""Which pueue jobs are lost to the infrastructure (and run again), with the engine, real pueued
3.4.1 and 4.0.4 and the real sshd (issue 28): a person's kill after an earlier restart of
pueued is the job's end; no rerun while a process of the job that left its group still runs; a
lost job whose group id another program got after the reboot is run again."""

import os
import signal
from pathlib import Path

import pytest

from harness import JOB, process_alive, wait_for
from pueue_daemon import PueueDaemon
from sshd import SSHServer, transport_settings

# the harness's job, plus: a case folder holding `stray` starts a helper that leaves the job's
# process group (setsid, as Popen(start_new_session=True) does) and writes its pid
STRAY = (
    'if [ -e stray ]; then setsid sleep 600 > /dev/null 2>&1 < /dev/null & '
    'echo $! > "{ctl}/$CASEFLOW_CASE_NAME.stray"; fi\n'
)


class PueueHost:
    def __init__(self, root: Path, version: str):
        self.server = SSHServer(root / "pueuehost").start()
        self.daemon = PueueDaemon(root / "pueue", version)
        (self.server.bin / "pueue").symlink_to(self.daemon.client)

    def close(self):
        self.daemon.close()
        self.server.stop()


@pytest.fixture(params=["3.4.1", "4.0.4"])
def pueue_ws(ws, request):
    host = PueueHost(ws.root, request.param)
    host.daemon.start()
    command = (STRAY + JOB).replace("{ctl}", str(ws.ctl))
    ws.write_config(transport=transport_settings(host.server, ws.remote),
                    backend={"kind": "pueue", "command": command},
                    groups={"gpu_b": {"slots": 1}})
    yield ws, host
    ws.stop()
    host.close()
    for stray in ws.ctl.glob("*.stray"):  # the helpers that left their job's group
        try:
            os.kill(int(stray.read_text().strip()), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass


def _running_job(ws, name):
    """Wait until the case's job runs (pueue started it, the wrapper wrote its record)."""
    row = wait_for(lambda: (r := ws.case(name)) is not None and r.state == "running"
                   and r.task_id and r, what=f"{name} to run")
    record = Path(row.remote_path) / ".caseflow" / "pueue-job"
    wait_for(record.exists, what="the wrapper's start record")
    return int(record.read_text().split()[1])  # the job's process group


def test_a_job_killed_by_a_person_after_it_outlived_a_pueued_restart_is_not_rerun(pueue_ws):
    """A job killed by a person is the job's failure, no rerun (docs/lifecycle.md). pueued was
    SIGKILLed and started again while the job ran (it goes on: 'pueue lost track'); then a
    person kills the job's process group under the new pueued. The daemon that started the job
    is gone, but the poll saw the job alive under the new one (.caseflow/pueue-outlived): its
    end is its own, also for a caseflow started again in between."""
    ws, host = pueue_ws
    ws.start()
    ws.drop_case("c1", group="gpu_b", hold="c1")
    pgid = _running_job(ws, "c1")
    host.daemon.kill()
    host.daemon.start()  # the job goes on; pueue marks its task Killed
    wait_for(lambda: "lost track" in (ws.case("c1").queue_status or ""),
             what="caseflow to see pueue lost track of the task")
    outlived = Path(ws.case("c1").remote_path, ".caseflow", "pueue-outlived")
    wait_for(outlived.exists, what="the poll to mark the job as having outlived pueued")
    ws.stop()  # caseflow restarts: the mark in the case folder remembers
    os.killpg(pgid, signal.SIGKILL)  # a person, on the same boot, the new pueued running
    ws.start()
    row = wait_for(lambda: ((r := ws.case("c1")).run > 1 or r.state in
                   ("failure", "not_found", "success")) and r, what="the case to end or rerun")
    assert row.run == 1 and row.state in ("failure", "not_found"), (
        f"a job killed by a person was run again: run {row.run}, state {row.state}, "
        f"history: {[h.detail for h in ws.store.history(row.id)][-3:]}")
    assert "outlived a restart of pueued" in (row.reason or "") + " ".join(
        h.detail or "" for h in ws.store.history(row.id))


def test_no_rerun_while_a_process_that_left_the_jobs_group_still_runs(pueue_ws):
    """LOST is 'given only when none of the job's processes can still run'
    (backends/__init__.py). pueued and the job's process group SIGKILLed, pueued started again,
    but a helper the job started outside its group (setsid) still runs: it carries the job's
    label (CASEFLOW_JOB), so the case stays running on its slot ('pueue lost track') and no
    run 2 starts beside it. The helper seen alive under the new pueued, its end is the job's."""
    ws, host = pueue_ws
    ws.start()
    ws.drop_case("c2", group="gpu_b", hold="c2", files={"data.bin": b"x", "stray": ""})
    pgid = _running_job(ws, "c2")
    stray_file = ws.ctl / "c2.stray"
    stray = int(wait_for(lambda: stray_file.exists() and stray_file.read_text().strip(),
                         what="the stray's pid"))
    assert os.getpgid(stray) != pgid
    host.daemon.kill()
    os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: not any(process_alive(p) for p in _group(pgid)), what="the group gone")
    host.daemon.start()
    wait_for(lambda: "lost track" in (ws.case("c2").queue_status or ""),
             what="caseflow to follow the helper: pueue lost track of the task")
    outlived = Path(ws.case("c2").remote_path, ".caseflow", "pueue-outlived")
    wait_for(outlived.exists, what="the poll to see the job alive under the new pueued")
    row = ws.case("c2")
    assert (row.run, row.state) == (1, "running") and process_alive(stray), row
    os.kill(stray, signal.SIGKILL)
    row = wait_for(lambda: (r := ws.case("c2")).state in ("failure", "not_found") and r,
                   what="c2 to end once its helper is gone")
    assert row.run == 1, row


def _group(pgid):
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            out.append(int(stat.parent.name))
    return out


def _process_with_pid(pid: int):
    """A process of a session (and group) of its own whose pid is `pid`: after a reboot the
    pid numbers are handed out again (pid_max 32768 here), and a lost job's group id may be a
    live group of another program."""
    import subprocess
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), what=f"pid {pid} to be reaped")
    for _ in range(500):
        Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
        p = subprocess.Popen(["sleep", "600"], start_new_session=True)
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
    raise AssertionError(f"could not get pid {pid}")


def test_a_lost_job_whose_group_id_was_reused_after_the_reboot_is_rerun(pueue_ws):
    """A job lost to a reboot (pueued and the job's group killed, pueued started again) whose
    process group id is, after the reboot, the group of an unrelated program (pids are reused:
    pid_max 32768). That group carries no CASEFLOW_JOB of the job: it is not taken for the job
    (which would hold the GPU slot while the other program runs); the case runs again."""
    ws, host = pueue_ws
    ws.start()
    ws.drop_case("c3", group="gpu_b", hold="c3")
    pgid = _running_job(ws, "c3")
    host.daemon.kill()
    os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: not any(process_alive(p) for p in _group(pgid)), what="the group gone")
    other = _process_with_pid(pgid)  # an unrelated program, after the "reboot"
    try:
        host.daemon.start()
        try:
            wait_for(lambda: ws.case("c3").run == 2, timeout=30, what="run 2 of c3")
        except AssertionError:
            row = ws.case("c3")
            raise AssertionError(
                f"c3 not rerun after its job was lost: {row.state}, {row.queue_status!r}, "
                f"slot {row.slot_index} held; group {pgid} is now process {other.pid} "
                f"({Path(f'/proc/{other.pid}/cmdline').read_bytes()!r})") from None
    finally:
        other.kill()
        other.wait()
