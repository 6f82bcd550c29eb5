"""Results retrieval and the wrap-up after a case ended, driven tick by tick."""

import os
from pathlib import Path

import pytest

from caseflow.core import wrapup
from caseflow.config import load_config
from caseflow.errors import ConfigError, PermanentError, TransientError
from caseflow.transports.local import LocalTransport
from test_engine import make_engine, run_until, state_of  # noqa: F401  (fixture)


class FetchTransport(LocalTransport):
    """fetch_results fails with the given errors first, and counts its calls."""

    def __init__(self, root, errors=()):
        super().__init__("local", root)
        self.errors = list(errors)
        self.fetches = 0
        self.removed = []

    def fetch_results(self, remote_path, local_path, patterns=None):
        self.fetches += 1
        if self.errors:
            raise self.errors.pop(0)
        return super().fetch_results(remote_path, local_path, patterns)

    def remove_tree(self, remote_path):
        self.removed.append(remote_path)
        return super().remove_tree(remote_path)


def test_a_transient_fetch_error_keeps_the_case_running_then_it_succeeds(ws, make_engine):
    t = FetchTransport(str(ws.remote), errors=[TransientError("connection reset")] * 2)
    engine, clock = make_engine(transport=t, workers=False,
                                retry={"initial_seconds": 10, "max_seconds": 100})
    ws.drop_case("slowfetch")
    run_until(engine, clock, lambda: t.fetches >= 1, step=0.5)
    row = ws.case("slowfetch")
    assert (row.state, row.job_outcome, row.attempts) == ("running", "success", 1)
    assert "connection reset" in row.last_error
    assert row.next_attempt_at == pytest.approx(clock.now + 10)
    run_until(engine, clock, lambda: state_of(ws, "slowfetch") == "success", step=5)
    row = ws.case("slowfetch")
    assert t.fetches == 3 and row.results_fetched and row.exit_code == 0
    assert sorted(os.listdir(row.results_path)) == ["caseflow-job.log", "job_env.txt", "output"]
    assert row.slot_index is None and not row.wrapup


def test_a_permanent_fetch_error_fails_the_case_and_keeps_the_remote_folder(ws, make_engine):
    t = FetchTransport(str(ws.remote), errors=[PermanentError("permission denied on out/")])
    engine, clock = make_engine(transport=t, workers=False, remote_cleanup="always")
    ws.drop_case("nofetch", exit_code=6)
    run_until(engine, clock, lambda: state_of(ws, "nofetch") == "failure", step=0.5)
    row = ws.case("nofetch")
    assert row.reason == ("job exited with code 6; results could not be retrieved: "
                          "permission denied on out/")
    assert not row.results_fetched and t.removed == []
    assert Path(row.remote_path, "output", "result.txt").exists()
    # the job log was fetched before the results failed: the person needs it most now
    assert Path(ws.var, "logs", f"{row.id}-1.log").read_text().startswith("job of case")


def test_results_of_cases_with_the_same_name_never_overwrite_each_other(ws, make_engine):
    engine, clock = make_engine(workers=False, archive={"done": "done"})
    ws.drop_case("twin")
    run_until(engine, clock, lambda: state_of(ws, "twin") == "success" and
              not ws.case("twin").wrapup, step=0.5)
    first = ws.case("twin")
    ws.drop_case("twin")  # the same name again, once the first has left the inbox
    run_until(engine, clock, lambda: len(ws.cases("twin")) == 2 and
              ws.cases("twin")[1].state == "success" and not ws.cases("twin")[1].wrapup,
              step=0.5)
    second = ws.cases("twin")[1]
    assert first.results_path == str(ws.root / "results" / "twin")
    assert second.results_path == str(ws.root / "results" / f"twin-{second.id}")
    assert second.local_path == str(ws.root / "done" / f"twin-{second.id}")
    for row in (first, second):
        assert Path(row.results_path, "output", "result.txt").read_text().strip() == \
            f"result of {row.id}"


ODD = "$(touch CANARY) `id` -x; ünï'\"|"


def test_odd_names_come_home_and_reach_the_hook_verbatim(ws, make_engine):
    engine, clock = make_engine(workers=False, archive={"done": "done"},
                                on_finish=["sh", "-c", 'printf "%s" "$CASEFLOW_CASE_NAME" > '
                                                       '"$CASEFLOW_RESULTS/hook-saw.txt"'])
    ws.drop_case(ODD)
    run_until(engine, clock, lambda: state_of(ws, ODD) == "success" and not ws.case(ODD).wrapup,
              step=0.5)
    row = ws.case(ODD)
    assert Path(row.results_path).name == ODD and Path(row.local_path).name == ODD
    assert Path(row.results_path, "hook-saw.txt").read_text() == ODD
    assert row.wrapup_note is None
    assert list(ws.root.rglob("CANARY")) == []


def test_the_wrap_up_is_safe_to_repeat_after_a_crash(ws, make_engine):
    engine, clock = make_engine(workers=False, archive={"failed": "failed"},
                                remote_cleanup="always", on_finish="echo x >> hook.log")
    ws.drop_case("crashy", exit_code=1)
    run_until(engine, clock, lambda: state_of(ws, "crashy") == "failure" and
              not ws.case("crashy").wrapup, step=0.5)
    row = ws.case("crashy")
    assert Path(row.local_path) == ws.root / "failed" / "crashy" and not Path(row.remote_path).exists()
    with ws.store.transaction() as conn:  # as if the daemon died before the wrap-up was noted
        conn.execute("UPDATE cases SET wrapup = 1 WHERE id = ?", (row.id,))
    wrapup.wrap_up(engine, ws.case("crashy"))
    again = ws.case("crashy")
    assert again.local_path == row.local_path and Path(again.local_path, "data.bin").exists()
    assert (again.state, again.reason, again.wrapup, again.wrapup_note) == \
        ("failure", "job exited with code 1", 0, None)
    assert (ws.root / "hook.log").read_text() == "x\nx\n"  # the hook: at least once



def test_a_crash_between_archiving_and_its_record_finds_the_moved_folder(ws, make_engine):
    """The daemon died after renaming the case folder into the archive but before the store
    knew: the next wrap-up finds the folder there (its inode is the case's) and records it,
    instead of noting it as gone and keeping the inbox path (seen in a crash-suite run)."""
    engine, clock = make_engine(workers=False, archive={"failed": "failed"})
    folder = ws.drop_case("moved", exit_code=1, hold="moved")
    run_until(engine, clock, lambda: state_of(ws, "moved") == "running", step=0.5)
    (ws.root / "failed").mkdir(exist_ok=True)
    (ws.root / "failed" / "moved").mkdir()  # another case's folder of that name is there
    ws.release("moved")
    run_until(engine, clock, lambda: state_of(ws, "moved") == "failure" and
              not ws.case("moved").wrapup, step=0.5)
    row = ws.case("moved")
    assert row.local_path == str(ws.root / "failed" / f"moved-{row.id}")
    with ws.store.transaction() as conn:  # as if the daemon died right after the rename
        conn.execute("UPDATE cases SET wrapup = 1, local_path = ? WHERE id = ?",
                     (str(folder), row.id))
    wrapup.wrap_up(engine, ws.case("moved"))
    after = ws.case("moved")
    assert after.local_path == str(ws.root / "failed" / f"moved-{row.id}")
    assert (after.wrapup, after.wrapup_note) == (0, None)
    assert not list((ws.root / "failed" / "moved").iterdir())  # the other one left alone


def test_a_folder_gone_before_archiving_and_a_hook_that_hangs_are_noted(ws, make_engine):
    engine, clock = make_engine(workers=False, archive={"done": "done"},
                                on_finish="sleep 60", on_finish_timeout_seconds=0.5)
    folder = ws.drop_case("vanishing", hold="vanishing")
    run_until(engine, clock, lambda: state_of(ws, "vanishing") == "running", step=0.5)
    os.rename(folder, ws.root / "elsewhere")
    ws.release("vanishing")
    run_until(engine, clock, lambda: state_of(ws, "vanishing") == "success" and
              not ws.case("vanishing").wrapup, step=0.5)
    row = ws.case("vanishing")
    assert "case folder not archived" in row.wrapup_note and "no longer there" in row.wrapup_note
    assert "on_finish hook killed after" in row.wrapup_note
    assert (row.state, row.reason) == ("success", None)


@pytest.mark.parametrize("changes, key, words", [
    ({"archive": {"done": "inbox/done"}}, "archive.done", "inside the inbox"),
    ({"archive": {"failed": "nowhere/failed"}}, "archive.failed", "does not exist"),
    ({"archive": {"kept": "done"}}, "archive.kept", "unknown key"),
    ({"results": {"fetch": False}, "remote_cleanup": "always"}, "remote_cleanup", "results.fetch"),
    ({"remote_cleanup": "sometimes"}, "remote_cleanup", "must be one of"),
    ({"results": {"patterns": ["../secrets"]}}, "results.patterns", "not a pattern inside"),
    ({"results": {"patterns": "out/*"}}, "results.patterns", "expected a list"),
    ({"results": {"folder": "inbox"}}, "results.folder", "inside the inbox"),
    ({"on_finish": []}, "on_finish", "non-empty"),
    ({"on_finish": 5}, "on_finish", "expected a shell command"),
])
def test_finish_settings_mistakes_name_the_key(ws, changes, key, words):
    ws.write_config(**changes)
    with pytest.raises(ConfigError) as err:
        load_config(ws.config_path)
    assert str(err.value).startswith(f"{ws.config_path}: {key}:"), str(err.value)
    assert words in str(err.value)


def test_archive_on_another_file_system_is_refused(ws):
    other = ws.root / "other-fs"
    other.mkdir()
    assert os.system(f"mount -t tmpfs -o size=64k tmpfs {other}") == 0
    try:
        ws.write_config(archive={"done": "other-fs/done"})
        with pytest.raises(ConfigError, match="archive.done: .* another file system"):
            load_config(ws.config_path)
    finally:
        os.system(f"umount {other}")


def test_a_restart_fetches_the_results_without_asking_the_queue_again(ws, make_engine):
    t = FetchTransport(str(ws.remote), errors=[TransientError("connection reset")])
    engine, clock = make_engine(transport=t, workers=False,
                                retry={"initial_seconds": 30, "max_seconds": 30})
    ws.drop_case("restarted")
    run_until(engine, clock, lambda: t.fetches >= 1, step=0.5)
    engine.shutdown()
    again, clock2 = make_engine(transport=FetchTransport(str(ws.remote)), workers=False)
    clock2.now = clock.now + 31
    asked = []
    status = again.backend.status
    again.backend.status = lambda refs: asked.append(refs) or status(refs)
    again.tick()
    row = ws.case("restarted")
    assert (row.state, row.results_fetched, asked) == ("success", 1, [])
