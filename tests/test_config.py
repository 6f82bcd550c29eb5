"""A config mistake names the file and the key, and the daemon exits 2 before touching anything."""

import os
from pathlib import Path

import pytest
import yaml

from caseflow.config import load_config
from caseflow.errors import ConfigError
from harness import wait_for
from pueue_daemon import VERSIONS, PueueDaemon


def _config(ws, **changes):
    ws.write_config(**changes)
    return ws.config_path


@pytest.mark.parametrize("changes, key, words", [
    ({"inbox": "nowhere"}, "inbox", "does not exist"),
    ({"tick_seconds": "fast"}, "tick_seconds", "expected a number"),
    ({"tick_seconds": 0}, "tick_seconds", "greater than 0"),
    ({"workers": 1.5}, "workers", "whole number"),
    ({"groups": {"gpu_a": {"slots": 0}}}, "groups.gpu_a.slots", "at least 1"),
    ({"groups": {"gpu_a": {"slots": 2, "devices": [0]}}}, "groups.gpu_a.devices", "1 entry "),
    ({"groups": {"gpu_a": {"slot": 2}}}, "groups.gpu_a.slot", "did you mean 'slots'"),
    ({"groups": {}}, "groups", "at least one group"),
    ({"groups": {"-rf": 1}}, "groups", "not a valid group name"),
    ({"groups": ["ok", "bad name"]}, "groups[1]", "not a valid group name"),
    ({"stability": {"quiet": 3}}, "stability.quiet", "did you mean 'quiet_seconds'"),
    ({"transport": {"kind": "ftp", "root": "remote"}}, "transport.kind", "unknown transport"),
    ({"backend": {"kind": "direct"}}, "backend.command", "is required"),
    ({"backend": {"kind": "direct", "command": []}}, "backend.command", "non-empty"),
    ({"colour": "blue"}, "colour", "unknown key"),
    ({"retry": {"max_seconds": -1}}, "retry.max_seconds", "greater than 0"),
    ({"log": {"level": "LOUD"}}, "log.level", "must be one of"),
    # the value refused is echoed: a typo is seen at once
    ({"transport": {"kind": "local", "root": "remote", "verify": "sha1"}}, "transport.verify",
     "must be one of size, checksum (got 'sha1')"),
    ({"remote_cleanup": "sometimes"}, "remote_cleanup", "(got 'sometimes')"),
    # backend.pueue: a command line, split as a shell would (tests/test_pueue_backend.py runs one)
    ({"backend": {"kind": "pueue", "command": "true", "pueue": " "}}, "backend.pueue",
     "is empty: the pueue client, e.g. `pueue` or `pueue -c FILE` (got ' ')"),
    ({"backend": {"kind": "pueue", "command": "true", "pueue": "pueue -c 'my.yml"}},
     "backend.pueue", "not a command line: No closing quotation"),
    ({"backend": {"kind": "pueue", "command": "true", "pueue": ["pueue", "-c"]}},
     "backend.pueue", "expected a string"),
    # backend.boot_id_file: a path on the host (tests/test_direct_backend.py changes one)
    ({"backend": {"kind": "direct", "command": "true", "boot_id_file": "boot_id"}},
     "backend.boot_id_file", "must be an absolute path on the host (got 'boot_id')"),
    ({"backend": {"kind": "direct", "command": "true", "boot_id_file": 7}},
     "backend.boot_id_file", "expected a string"),
    ({"backend": {"kind": "direct", "command": "true", "boot_id": "/x"}},
     "backend.boot_id", "did you mean 'boot_id_file'"),
])
def test_mistakes_name_file_and_key(ws, changes, key, words):
    path = _config(ws, **changes)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key}:"), message
    assert words in message


def test_the_direct_runners_boot_id_file_is_the_kernels_unless_set(ws):
    assert load_config(_config(ws)).backend.boot_id_file == "/proc/sys/kernel/random/boot_id"
    path = _config(ws, backend={"kind": "direct", "command": "true",
                                "boot_id_file": "/srv/with space/boot id"})
    assert load_config(path).backend.boot_id_file == "/srv/with space/boot id"


def test_missing_required_sections(ws):
    settings = dict(ws.settings)
    del settings["transport"]
    ws.config_path.write_text(yaml.safe_dump(settings))
    with pytest.raises(ConfigError, match=r"transport: is required"):
        load_config(ws.config_path)


def test_not_yaml_and_not_a_mapping(ws):
    ws.config_path.write_text("inbox: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(ws.config_path)
    ws.config_path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(ws.config_path)


def test_relative_paths_follow_the_config_file_not_the_working_directory(ws, monkeypatch, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(ws.config_path)
    assert config.inbox == ws.inbox.resolve()
    assert config.database == ws.database.resolve()
    assert Path(config.transport.root) == ws.remote.resolve()


def test_group_forms_and_defaults(ws):
    config = load_config(_config(ws, groups=["a", "b"]))
    assert [(g.name, g.slots, g.devices) for g in config.groups] == [("a", 1, None), ("b", 1, None)]
    assert config.default_group == "a"
    config = load_config(_config(ws, groups={"x": 3, "y": {"slots": 2, "devices": ["0,1", 2]}}))
    assert [(g.name, g.slots) for g in config.groups] == [("x", 3), ("y", 2)]
    assert config.group("y").devices == ("0,1", "2")
    assert config.retry.delay(1) == pytest.approx(0.2)
    assert config.retry.delay(10) == pytest.approx(1.0)  # capped at max_seconds


def test_cli_exits_2_naming_the_key_and_creates_nothing(ws):
    _config(ws, groups={"gpu_a": {"slots": 0}})
    proc = ws.cli("run")
    assert proc.returncode == 2
    assert "groups.gpu_a.slots" in proc.stderr and str(ws.config_path) in proc.stderr
    assert not ws.database.exists()
    assert not Path(f"{ws.database}.lock").exists()


def test_cli_without_any_config(ws):
    env = {k: v for k, v in os.environ.items() if k != "CASEFLOW_CONFIG"}
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "caseflow.cli", "status"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert "CASEFLOW_CONFIG" in proc.stderr


def test_config_from_the_environment(ws):
    ws.start()
    ws.drop_case("envcase")
    ws.wait_state("envcase", "success")
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "caseflow.cli", "status", "--json"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "CASEFLOW_CONFIG": str(ws.config_path)})
    assert proc.returncode == 0, proc.stderr
    assert '"envcase"' in proc.stdout


def test_usage_errors_exit_2(ws):
    assert ws.cli("status", "--state", "sleeping").returncode in (1, 2)
    proc = ws.cli("frobnicate")
    assert proc.returncode == 2


def test_the_shipped_pueue_example_is_valid(tmp_path):
    """config/config.yaml, with its host-specific paths pointed at a temp folder, loads."""
    root = Path(__file__).resolve().parents[1]
    data = yaml.safe_load((root / "config" / "config.yaml").read_text())
    (tmp_path / "inbox").mkdir()
    data["inbox"] = str(tmp_path / "inbox")
    data["database"] = str(tmp_path / "caseflow.db")
    data["log"]["file"] = str(tmp_path / "caseflow.log")
    data["results"]["folder"] = str(tmp_path / "results")
    data["archive"] = {k: str(tmp_path / k) for k in data["archive"]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    assert config.backend.kind == "pueue" and config.transport.kind == "ssh"
    assert [g.name for g in config.groups] == ["gpu_a", "gpu_big"]
    assert config.group("gpu_big").devices == ("2,3",)
    assert config.retry.give_up_after_seconds == 86400
    assert config.finish.remote_cleanup == "on_success"
    assert config.finish.archive_done == tmp_path / "done"
    assert not config.results.folder.exists()  # made by `caseflow run`, not by reading


@pytest.mark.parametrize("version", VERSIONS)
def test_the_shipped_pueue_example_runs_a_case_on_real_pueue(ws, sshd, version):
    """config/config.yaml as shipped, with only its ADJUST values (paths, the host, the job)
    pointed at this test's folders, the test sshd and a real pueued, and its waits shortened:
    a case in group gpu_big runs to success in a pueue group the example made."""
    root = Path(__file__).resolve().parents[1]
    data = yaml.safe_load((root / "config" / "config.yaml").read_text())
    daemon = PueueDaemon(ws.root / "pueue", version).start()
    try:
        data.update(inbox=str(ws.inbox), database=str(ws.database), tick_seconds=0.2,
                    poll_seconds=0.2, stability={"quiet_seconds": 0.5, "rescan_seconds": 5})
        data["log"]["file"] = str(ws.root / "caseflow.log")
        data["results"]["folder"] = str(ws.root / "results")
        data["archive"] = {k: str(ws.root / k) for k in data["archive"]}
        data["transport"].update(host="127.0.0.1", port=sshd.port, user=sshd.user,
                                 identity_file=str(sshd.client_key),
                                 known_hosts=str(sshd.known_hosts), root=str(ws.remote))
        data["backend"].update(pueue=str(daemon.client),
                               command='mkdir -p output && echo "$CUDA_VISIBLE_DEVICES" > '
                                       'output/devices.txt')
        data["retry"].update(initial_seconds=0.2, max_seconds=1)
        ws.settings = data
        ws.write_config()
        ws.start()
        ws.drop_case("example", group="gpu_big")
        row = ws.wait_state("example", "success", "failure", "not_found")
        assert row.state == "success", row.reason
        # archived as the example says, by the wrap-up that follows the terminal state
        wait_for(lambda: (ws.root / "done" / "example").is_dir(), what="the case archived")
        assert Path(row.results_path, "output", "devices.txt").read_text() == "2,3\n"
        groups = daemon.groups()
        assert groups["gpu_a"]["parallel_tasks"] == 2 and groups["gpu_big"]["parallel_tasks"] == 1
        assert daemon.tasks()[row.task_id]["group"] == "gpu_big"
    finally:
        ws.stop()
        daemon.close()


def test_the_local_example_is_valid(tmp_path):
    root = Path(__file__).resolve().parents[1]
    data = yaml.safe_load((root / "config" / "local.yaml").read_text())
    (tmp_path / "inbox").mkdir()
    data.update(inbox=str(tmp_path / "inbox"), database=str(tmp_path / "db"))
    data["transport"]["root"] = str(tmp_path / "remote")
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_config(path).backend.kind == "direct"


# -- loading changes nothing on disk -------------------------------------------------------
def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("changes, key", [
    ({"results": {"folder": "inbox/res"}}, "results.folder"),
    ({"archive": {"done": "inbox/done"}}, "archive.done"),
    ({"archive": {"done": "done"}, "log": {"level": "LOUD"}}, "log.level"),
])
def test_a_refused_config_makes_nothing(ws, changes, key):
    ws.write_config(**changes)
    before = _tree(ws.root)
    proc = ws.cli("run")
    assert proc.returncode == 2 and f"{key}:" in proc.stderr, proc.stderr
    assert _tree(ws.root) == before


def test_read_only_commands_make_nothing(ws):
    """status, show, check, resources and diagram leave the disk as they found it, also
    with folders configured that `run` would make."""
    ws.start()
    ws.drop_case("seen")
    ws.wait_state("seen", "success")
    lanes = [t for h in ws.daemon.engine.hosts.values() if h.lane is not None
             for pool in (h.lane, h.short_lane) for t in pool._threads]
    ws.stop()
    ws.close()
    # work a stop abandons (a poll, a probe) may still end in a lane thread and open the
    # database there (its -wal and -shm files appeared during the checks: CI, once)
    wait_for(lambda: not any(t.is_alive() for t in lanes), what="the daemon's lanes to end")
    ws.write_config(results={"folder": "res"}, archive={"done": "arch"},
                    database="var/caseflow.db")
    before = _tree(ws.root)
    for args in (["status"], ["status", "--json"], ["show", "seen"], ["show", "--json", "seen"],
                 ["resources"], ["resources", "--json"], ["diagram"]):
        proc = ws.cli(*args)
        assert proc.returncode == 0, (args, proc.stderr)
        assert _tree(ws.root) == before, args
    proc = ws.cli("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout
    assert _tree(ws.root) == before


def test_check_makes_no_missing_folder_and_says_it_would(ws):
    ws.write_config(transport={"kind": "local", "root": "later"},
                    archive={"done": "nosuch"})
    before = _tree(ws.root)
    proc = ws.cli("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "made by `caseflow run`" in proc.stdout, proc.stdout
    assert _tree(ws.root) == before


def test_run_makes_its_folders_after_the_checks_and_logs_them(ws, tmp_path):
    import shutil
    shutil.rmtree(ws.var)
    shutil.rmtree(ws.remote)
    ws.write_config(results={"folder": "out"}, archive={"failed": "failed"},
                    transport={"kind": "local", "root": "var/remote"})  # var/: the database's
    config = ws.config()
    assert not ws.var.exists() and not (ws.root / "out").exists()  # reading made nothing
    ws.start()
    for folder, key in ((ws.var, "database"), (ws.root / "out", "results.folder"),
                        (ws.root / "failed", "archive.failed"),
                        (ws.var / "remote", "transport.root")):
        assert folder.is_dir(), folder
    ws.drop_case("fine")
    ws.wait_state("fine", "success")
    assert config.database.exists()


def test_run_logs_the_folders_it_made(ws, caplog):
    import shutil
    shutil.rmtree(ws.var)
    ws.start()
    assert f"made the folder {ws.var} (database)" in caplog.text
    assert f"made the folder {ws.root / 'results'} (results.folder)" in caplog.text


def test_a_folder_below_a_missing_one_is_taken_for_a_typo(ws):
    ws.write_config(results={"folder": "resluts/here"})
    with pytest.raises(ConfigError, match=r": results\.folder: folder .*/resluts does not exist"):
        load_config(ws.config_path)


def test_a_folder_that_cannot_be_made_is_named(ws):
    (ws.root / "afile").write_text("x")
    for changes, key in (({"database": "afile/db/caseflow.db"}, "database"),
                         ({"results": {"folder": "afile/results"}}, "results.folder"),
                         ({"transport": {"kind": "local", "root": "afile/r"}}, "transport.root")):
        ws.write_config(**changes)
        with pytest.raises(ConfigError) as err:
            load_config(ws.config_path)
        assert str(err.value).startswith(f"{ws.config_path}: {key}:"), str(err.value)
        assert "is a file, not a folder" in str(err.value)
        ws.write_config(database="var/caseflow.db", results={},
                        transport={"kind": "local", "root": "remote"})


# -- mistakes that used to pass or were named wrong --------------------------------------
def test_a_key_given_twice_is_refused_naming_it(ws):
    ws.config_path.write_text(ws.config_path.read_text() + "tick_seconds: 5\n")
    with pytest.raises(ConfigError) as err:
        load_config(ws.config_path)
    assert str(err.value).startswith(f"{ws.config_path}: tick_seconds: given twice (lines ")
    text = ws.config_path.read_text().replace("kind: local", "kind: local\n  kind: ssh")
    ws.config_path.write_text(text)
    with pytest.raises(ConfigError, match=r": transport\.kind: given twice \(lines \d+ and \d+\)"):
        load_config(ws.config_path)


def test_anchors_and_merge_keys_are_not_taken_for_duplicates(ws):
    text = ws.config_path.read_text()
    text = text.replace("retry:", "x-base: &base\n  initial_seconds: 0.2\nretry:\n  <<: *base", 1)
    text = text.replace("  initial_seconds: 0.2\n  max_seconds: 1", "  max_seconds: 1")
    ws.config_path.write_text(text)
    assert load_config(ws.config_path).retry.initial_seconds == 0.2


def test_an_inbox_that_is_a_file_says_so(ws):
    (ws.root / "inbox.txt").write_text("not a folder")
    path = _config(ws, inbox="inbox.txt")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: inbox: ") and "is a file, not a folder" in str(
        err.value)


@pytest.mark.parametrize("section, typo, right", [
    ("transport", "kidn", "kind"),
    ("transport", "roots", "root"),
    ("backend", "comand", "command"),
])
def test_a_typo_of_a_required_key_names_the_typo(ws, section, typo, right):
    settings = dict(ws.settings[section])
    settings[typo] = settings.pop(right)
    path = _config(ws, **{section: settings})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {section}.{typo}: unknown key (did you mean "
                                     f"{right!r}?"), str(err.value)


def test_an_absent_setting_is_its_declared_default(ws):
    """A config without the optional keys reads into the defaults the dataclasses declare
    (caseflow.settings.setting), of the declared types."""
    from dataclasses import fields

    from caseflow.config import Config
    from caseflow.retry import Policy
    settings = {k: v for k, v in ws.settings.items()
                if k in ("inbox", "database", "groups", "transport", "backend")}
    settings["groups"] = ["a"]
    ws.config_path.write_text(yaml.safe_dump(settings))
    config = load_config(ws.config_path)
    declared = [(config, f) for f in fields(Config)] + [(config.retry, f) for f in fields(Policy)]
    checked = 0
    for obj, f in declared:
        if "doc" in f.metadata:
            value = getattr(obj, f.name)
            assert value == f.default and type(value) is type(f.default), f.name
            checked += 1
    assert checked == 15
    assert config.shutdown_timeout_seconds == 60.0
    assert config.groups[0].slots == 1
    assert config.finish.remote_cleanup == "never"
    assert config.finish.on_finish_timeout_seconds == 300.0
