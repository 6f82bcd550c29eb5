"""`caseflow host pause|resume`: a drain for maintenance. The drained host takes no new case
and starts no upload or submit; its running jobs go on; the drain is kept across restarts and
shown by `status`; resumed, the waiting cases go on at once."""

from harness import wait_for


def _ticks(ws, n: int) -> None:
    """n more ticks of the daemon: time enough for a case to move if it could."""
    start = ws.ticks
    wait_for(lambda: ws.ticks >= start + n, what=f"{n} ticks")


def test_a_drained_host_takes_no_new_case_its_running_job_goes_on_and_resume_frees_it(ws):
    ws.start()
    ws.drop_case("busy", hold="h1")
    ws.wait_state("busy", "running")
    out = ws.cli("host", "pause", "local", "--reason", "disk swap,  ticket 7", check=True)
    assert "host local: drained since" in out.stdout, out.stdout
    assert "(disk swap, ticket 7)" in out.stdout and "1 case on it" in out.stdout
    ws.drop_case("waits")
    ws.wait_state("waits", "queued")
    _ticks(ws, 10)
    assert ws.case("waits").state == "queued"  # gpu_a has a free slot: the drain holds it
    status = ws.cli("status", check=True).stdout
    assert "host local: DRAINED since" in status and "disk swap, ticket 7" in status, status
    assert "caseflow host resume local" in status
    ws.release("h1")  # the running job goes on to its end, results and all
    ws.wait_state("busy", "success")
    # kept across a restart, and set or lifted while no daemon runs
    ws.stop()
    assert ws.cli("host", "pause", "local", check=True).returncode == 0  # again: no error
    ws.start()
    _ticks(ws, 10)
    assert ws.case("waits").state == "queued"
    out = ws.cli("host", "resume", "local", check=True)
    assert "host local: resumed; 0 cases on it go on" in out.stdout, out.stdout
    ws.wait_state("waits", "success")
    assert "DRAINED" not in ws.cli("status", check=True).stdout
    again = ws.cli("host", "resume", "local", check=True)
    assert "not drained; nothing to do" in again.stdout


def test_host_names_a_configured_host(ws):
    out = ws.cli("host", "pause", "elsewhere")
    assert out.returncode == 2 and "no host 'elsewhere'; configured: local" in out.stderr
    out = ws.cli("host", "drain", "local")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_an_upload_under_way_when_the_drain_lands_submits_nothing_until_resume(ws, monkeypatch):
    """The drain is looked at again where the step runs, in the host's lane: a case whose
    upload was under way when the host was drained ends its upload and then waits (its submit
    was queued behind it and ran after the drain, found by a review); resumed while no daemon
    runs, it goes on at the next start, not an hour later."""
    import threading

    from caseflow.core import case_model
    gate = threading.Event()
    upload = case_model.Case.upload_case

    def held(self, event):
        if self.row.name == "slow":
            gate.wait(60)
        return upload(self, event)
    monkeypatch.setattr(case_model.Case, "upload_case", held)
    ws.start()
    ws.drop_case("slow")
    ws.wait_state("slow", "gpu_locked")
    ws.cli("host", "pause", "local", check=True)
    _ticks(ws, 3)  # the daemon has seen the drain
    gate.set()
    ws.wait_state("slow", "uploaded")
    _ticks(ws, 10)
    assert ws.case("slow").state == "uploaded"  # no submit on a drained host
    ws.stop()
    ws.cli("host", "resume", "local", check=True)
    ws.start()
    ws.wait_state("slow", "success")
