"""Breaker tests for issue 28 (infrastructure reruns) with real pueued over the real sshd.

Each test states the promise it checks; a failing test is a finding."""

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


def test_job_killed_by_a_person_after_an_earlier_pueued_restart_is_not_rerun(pueue_ws):
    """docs/lifecycle.md: a job killed (not by the infrastructure) is the job's failure, no
    rerun. pueued was SIGKILLed and started again while the job ran (the job goes on, 'pueue
    lost track'); minutes later a person kills the job's process group on the same boot, the
    new pueued running all along. caseflow reruns it: LOST only asks whether the daemon that
    started the job still runs, not whether it died when the job did."""
    ws, host = pueue_ws
    ws.start()
    ws.drop_case("c1", group="gpu_b", hold="c1")
    pgid = _running_job(ws, "c1")
    host.daemon.kill()
    host.daemon.start()  # the job goes on; pueue marks its task Killed
    wait_for(lambda: "lost track" in (ws.case("c1").queue_status or ""),
             what="caseflow to see pueue lost track of the task")
    os.killpg(pgid, signal.SIGKILL)  # a person, on the same boot, the new pueued running
    row = wait_for(lambda: ((r := ws.case("c1")).run > 1 or r.state in
                   ("failure", "not_found", "success")) and r, what="the case to end or rerun")
    assert row.run == 1 and row.state in ("failure", "not_found"), (
        f"a job killed by a person was run again: run {row.run}, state {row.state}, "
        f"history: {[h.detail for h in ws.store.history(row.id)][-3:]}")


def test_no_rerun_while_a_process_of_the_lost_job_still_runs(pueue_ws):
    """backends/__init__.py: LOST is 'given only when none of the job's processes can still
    run'; the rerun gives the slot back ('no process of the job runs'). A job whose helper left
    its process group (setsid) is 'lost' as pueued and the job's group are SIGKILLed (the
    features' 'reboot, short of rebooting'): the helper still runs, yet the case is rerun and
    run 2's job starts on the same GPU slot beside it."""
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
    try:
        row = wait_for(lambda: (r := ws.case("c2")).run == 2 and r.state == "running"
                       and r.task_id and r, timeout=30, what="run 2")
    except AssertionError:
        return  # not rerun while the helper runs: the promise holds
    alive = process_alive(stray)
    os.kill(stray, signal.SIGKILL)
    assert not alive, (f"run 2 (task {row.task_id}) was started on slot {row.slot_index} of "
                       f"gpu_b while process {stray} of run 1's job still ran")


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
    pid_max 32768): pueue-poll.sh asks `kill -0 -PGID` and `ps` for that number alone, so the
    case stays `running` ("pueue lost track of the task; waiting for its processes to end"),
    holding its GPU slot for as long as the other program runs; it is never rerun."""
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
