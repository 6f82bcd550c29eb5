"""caseflow outside `make`: installed with pip and with pipx into fresh environments (what the
package carries: `init`, `check`, `files`, `help` with nothing of the clone), run as the
example systemd unit (config/caseflow.service) says, and docs/service.md followed as written
(as root: a service user, a group sharing the inbox, a person of it dropping a case).

The installs are real (the Python packages come from the package index once, ~1 minute);
the copy of the repository they install from is removed before anything runs, so the
installed `caseflow` can only use what was installed (the machine spec above all).
"""

from __future__ import annotations

import configparser
import grp
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

import service_guide
from harness import DEADLINE, wait_for
from repo_copy import ROOT, copy_of_the_repository

UNIT = ROOT / "config" / "caseflow.service"
INSTALLED_AS = "/opt/caseflow/bin/caseflow"   # the unit's ExecStart program
CONFIG_AS = "/etc/caseflow/caseflow.yaml"     # and its configuration
INSTALL_TIMEOUT = 900


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """{"pip": path of caseflow in a fresh venv, "pipx": path of the pipx-installed one}."""
    base = tmp_path_factory.mktemp("install")
    source = copy_of_the_repository(base / "source")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    if shutil.which("pipx") is None:
        pytest.fail("pipx is missing: run `bash .ci/system-deps` (as root)")
    # what both installs need comes from the index once (~1 minute); then each installs
    # from it, as `pip install DIR` and `pipx install DIR` do it, without the index
    wheels = base / "wheels"
    subprocess.run([str(venv / "bin" / "pip"), "download", "-q", "-d", str(wheels), str(source),
                    "setuptools>=77", "wheel", "pip"], cwd=base, env=env, check=True,
                   timeout=INSTALL_TIMEOUT, stdout=subprocess.DEVNULL)
    env = {**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    pipx_env = {**env, "PIPX_HOME": str(base / "pipx"), "PIPX_BIN_DIR": str(base / "bin")}
    logs = {name: open(base / f"{name}.log", "wb") for name in ("pip", "pipx")}
    jobs = {"pip": subprocess.Popen([str(venv / "bin" / "pip"), "install", str(source)],
                                    cwd=base, env=env, stdout=logs["pip"],
                                    stderr=subprocess.STDOUT),
            "pipx": subprocess.Popen(["pipx", "install", str(source)], cwd=base, env=pipx_env,
                                     stdout=logs["pipx"], stderr=subprocess.STDOUT)}
    for name, job in jobs.items():
        rc = job.wait(timeout=INSTALL_TIMEOUT)
        logs[name].close()
        assert rc == 0, f"{name} install failed:\n{(base / f'{name}.log').read_text()[-3000:]}"
    shutil.rmtree(source)  # nothing of the source tree is there any more
    yield {"pip": venv / "bin" / "caseflow", "pipx": base / "bin" / "caseflow",
           "python": venv / "bin" / "python", "base": base, "env": env}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["pip", "pipx"])
def test_an_installed_caseflow_works_outside_the_source_tree(installed, how, tmp_path):
    caseflow = installed[how]
    run = dict(cwd=tmp_path, env=installed["env"], capture_output=True, text=True,
               timeout=DEADLINE)
    proc = subprocess.run([str(caseflow), "--help"], **run)
    assert proc.returncode == 0 and "usage: caseflow" in proc.stdout, proc.stderr
    proc = subprocess.run([str(caseflow), "diagram"], **run)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (ROOT / "specs" / "case_machine.mmd").read_text()


@pytest.mark.slow
def test_the_installed_spec_is_the_packages_own(installed, tmp_path):
    code = ("import caseflow, caseflow.spec as s; print(caseflow.__file__); "
            "print(s.default_spec_path()); print(len(s.load_spec().states))")
    proc = subprocess.run([str(installed["python"]), "-c", code], cwd=tmp_path,
                          env=installed["env"], capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 0, proc.stderr
    module, spec, states = proc.stdout.split()
    venv = str(installed["python"].parents[1])
    assert module.startswith(venv) and spec.startswith(venv), (module, spec)
    assert int(states) == 9


# -- the systemd unit ------------------------------------------------------------------------
def _service(unit: Path = UNIT) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read_string(unit.read_text())
    return parser["Service"]


def _unit_for(caseflow: Path, dest: Path) -> Path:
    """The unit with ExecStart pointing at a caseflow that exists here."""
    text = UNIT.read_text()
    assert INSTALLED_AS in text and CONFIG_AS in text
    path = dest / "caseflow.service"
    path.write_text(text.replace(INSTALLED_AS, str(caseflow)))
    return path


def test_the_unit_says_what_the_docs_promise():
    service = _service()
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["User"] == "caseflow" and service["User"] != "root"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert shlex.split(service["ExecStart"]) == [INSTALLED_AS, "-c", CONFIG_AS, "run"]
    assert int(service["TimeoutStopSec"]) > 30  # the default shutdown_grace_seconds
    assert service["RestartPreventExitStatus"] == "2"


@pytest.mark.slow
def test_systemd_analyze_verifies_the_unit(installed, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: run `bash .ci/system-deps` (as root)")
    unit = _unit_for(installed["pip"], tmp_path)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, timeout=DEADLINE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", \
        f"systemd-analyze warns:\n{proc.stdout}{proc.stderr}"
    broken = tmp_path / "broken.service"  # the check can fail: a misspelt key is reported
    broken.write_text(unit.read_text().replace("KillSignal=", "KilSignal="))
    proc = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True,
                          text=True, timeout=DEADLINE, cwd=tmp_path)
    assert "Unknown key 'KilSignal'" in proc.stdout + proc.stderr


def _start_as_systemd_would(installed, config: Path, notify: Path, log: Path):
    service = _service()
    argv = [str(installed["pip"]) if a == INSTALLED_AS else str(config) if a == CONFIG_AS
            else a for a in shlex.split(service["ExecStart"])]
    env = {**installed["env"], "NOTIFY_SOCKET": str(notify)}
    with open(log, "wb") as out:
        return subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_the_units_exec_start_runs_the_daemon_and_stops_on_its_kill_signal(installed, ws,
                                                                           tmp_path):
    service = _service()
    notify_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(DEADLINE)
        log = tmp_path / "journal.log"
        proc = _start_as_systemd_would(installed, ws.config_path, notify_path, log)
        try:
            assert notify.recv(4096) == b"READY=1", log.read_text()
            ws.drop_case("as a service")
            ws.wait_state("as a service", "success")
        finally:
            proc.send_signal(getattr(signal, service["KillSignal"]))
            rc = proc.wait(timeout=int(service["TimeoutStopSec"]))
        assert rc == 0, log.read_text()
        assert "caseflow running" in log.read_text() and "stopped" in log.read_text()

        ws.write_config(groups={"gpu_a": {"slots": 0}})  # a mistake: not restarted
        proc = _start_as_systemd_would(installed, ws.config_path, notify_path, log)
        rc = proc.wait(timeout=DEADLINE)
        assert str(rc) in service["RestartPreventExitStatus"].split(), log.read_text()
        assert "groups.gpu_a.slots" in log.read_text()
        notify.settimeout(0.5)
        with pytest.raises(socket.timeout):
            notify.recv(4096)  # never said it was ready


# -- what the package carries: init, check, files and help with nothing of the clone ---------
@pytest.mark.slow
def test_init_check_files_and_help_work_from_the_pipx_install_alone(installed, tmp_path):
    """In a folder that is not the clone (whose copy is gone): a starter config, `check` on it,
    the docs, and every shipped file byte for byte the repository's."""
    from caseflow.shipped import PATTERNS

    caseflow = str(installed["pipx"])
    run = dict(cwd=tmp_path, env=installed["env"], capture_output=True, text=True,
               timeout=DEADLINE)
    proc = subprocess.run([caseflow, "init", "caseflow.yaml"], **run)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "caseflow.yaml").read_text() == \
        (ROOT / "config" / "local.yaml").read_text().replace("../", "./")
    (tmp_path / "inbox").mkdir()  # as init's output says
    proc = subprocess.run([caseflow, "-c", "caseflow.yaml", "check"], **run)
    assert proc.returncode == 0 and "all checks passed" in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run([caseflow, "init", "caseflow.yaml", "--example", "slurm"], **run)
    assert proc.returncode == 2 and "never overwrites" in proc.stderr

    proc = subprocess.run([caseflow, "help"], **run)
    assert proc.returncode == 0 and "  service " in proc.stdout, proc.stderr
    proc = subprocess.run([caseflow, "help", "service"], **run)
    assert proc.stdout == (ROOT / "docs" / "service.md").read_text(), proc.stderr
    proc = subprocess.run([caseflow, "--help"], **run)
    assert "`caseflow help cli`" in proc.stdout and "docs/" not in proc.stdout

    proc = subprocess.run([caseflow, "files", "--path", "specs/case_machine.yaml"], **run)
    shipped = Path(proc.stdout.strip()).parents[1]
    assert shipped.is_relative_to(installed["base"] / "pipx"), shipped
    assert shipped.name == "caseflow" and shipped.parent.name == "share"
    ours = sorted(p.relative_to(ROOT) for pattern in PATTERNS for p in ROOT.glob(pattern))
    theirs = sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file())
    assert theirs == ours
    assert len(ours) > 20  # the control: config/, docs/ and specs/ were found
    for rel in ours:
        assert (shipped / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
        proc = subprocess.run([caseflow, "files", str(rel)], **{**run, "text": False})
        assert proc.stdout == (ROOT / rel).read_bytes(), rel


# -- docs/service.md, followed as written ----------------------------------------------------
def _the_unit_as_installed_by_the_guide(path: Path, base: Path, user: str) -> None:
    """The person's edit of the lines marked ADJUST: the places of this test, and its user."""
    text = path.read_text()
    for place in service_guide.PLACES:
        text = text.replace(place, f"{base}{place}")
    text = re.sub(r"^(User|Group)=caseflow$", rf"\1={user}", text, flags=re.M)
    path.write_text(text)


def _the_config_as_edited(path: Path, data_dir: Path) -> None:
    """The person's edit of the starter: its folders (/data/caseflow/...) are this test's; no
    GPU host here, so the host is this machine (the transport local, the direct runner); the
    waits are short. The rest as init wrote it (the groups, archiving, the log file)."""
    text = path.read_text()
    assert "inbox: /data/caseflow/inbox" in text  # its ADJUST paths, moved to this test's
    data = yaml.safe_load(text.replace("/data/caseflow", str(data_dir)))
    data.update(tick_seconds=0.2, poll_seconds=0.5, stability={"quiet_seconds": 1,
                                                              "rescan_seconds": 2})
    data["transport"] = {"kind": "local", "root": f"{data_dir}/remote"}
    data["backend"] = {"kind": "direct",
                       "command": "mkdir -p output && cat input.txt > output/copy.txt"}
    data["retry"].update(initial_seconds=0.5, max_seconds=2)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _start_as_the_units_user(argv: list[str], notify: Path, log: Path, env: dict):
    """ExecStart as systemd starts it: as User= and Group=, with the user's other groups,
    UMask=, HOME of the user, / as the folder, NOTIFY_SOCKET."""
    service = _service(UNIT_AS_INSTALLED[0])
    account = pwd.getpwnam(service["User"])
    gid = grp.getgrnam(service["Group"]).gr_gid
    env = {"PATH": env.get("PATH", "/usr/bin:/bin"), "HOME": account.pw_dir,
           "USER": account.pw_name, "LOGNAME": account.pw_name, "NOTIFY_SOCKET": str(notify)}
    with open(log, "wb") as out:
        return subprocess.Popen(argv, env=env, cwd="/", user=account.pw_uid, group=gid,
                                extra_groups=os.getgrouplist(account.pw_name, gid),
                                umask=int(service["UMask"], 8), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


UNIT_AS_INSTALLED: list[Path] = []  # the guide's /etc/systemd/system/caseflow.service, moved


@pytest.mark.slow
def test_the_service_guide_followed_as_written(installed, tmp_path):
    """As root: every command of docs/service.md that needs no systemd as PID 1 and no GPU host
    (service_guide.NOT_RUN), as written, in page order, with the places under a folder of this
    test and unique names for the user, the group and the person; the person's edits where
    the guide says to edit. Then the unit's ExecStart runs as its user, and the person drops a
    case as the guide shows: it is run, its results are readable by that person, its folder is
    archived; a case dropped without the guide's `chmod g+w` stays, and says why."""
    if os.geteuid() != 0:
        pytest.fail("following docs/service.md needs root (useradd, runuser): run it as root, "
                    "as CI does")
    tag = f"cf{os.getpid() % 100000}{secrets.token_hex(2)}"
    names = {service_guide.USER: f"{tag}svc", service_guide.GROUP: f"{tag}grp",
             service_guide.PERSON: f"{tag}ann"}
    user, group, person = names.values()
    base = Path(tempfile.mkdtemp(prefix="cf-guide-", dir="/tmp"))  # readable by the users
    base.chmod(0o755)
    for folder in ("opt", "etc/systemd/system", "etc/logrotate.d", "var/lib", "data",
                   "home", "run"):
        (base / folder).mkdir(parents=True, exist_ok=True)  # what every machine has
    source = copy_of_the_repository(tmp_path / "caseflow")
    data_dir = base / "data" / "caseflow"
    config = base / "etc" / "caseflow" / "caseflow.yaml"
    env = {k: v for k, v in installed["env"].items() if k != "CASEFLOW_CONFIG"}
    daemon, rc = None, 0
    try:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", person],
                       check=True)  # a person who will drop cases, already on the machine
        ran = []
        for command in service_guide.run_by_the_test():
            if command == service_guide.DROP:
                continue  # the person drops a case once the daemon runs
            moved = service_guide.moved(command, base, names, source)
            out = subprocess.run(["sh", "-c", moved], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
            assert out.returncode == 0, f"`{moved}` exited {out.returncode}:\n{out.stderr}"
            ran.append(command)
            if " init /etc/caseflow/caseflow.yaml" in command:
                _the_config_as_edited(config, data_dir)
            if command.endswith("> /etc/systemd/system/caseflow.service"):
                UNIT_AS_INSTALLED[:] = [base / "etc/systemd/system/caseflow.service"]
                _the_unit_as_installed_by_the_guide(UNIT_AS_INSTALLED[0], base, user)
            if command.startswith("/usr/bin/python3 --version"):
                assert re.match(r"Python 3\.(1\d|[2-9]\d)\.", out.stdout), out.stdout
        # every command the guide shows that can run here did (the control)
        assert any("useradd" in c for c in ran) and any(" check" in c for c in ran)
        assert any("systemd-analyze verify" in c for c in ran)

        # what the guide promised: the service user's home, the group's shared inbox
        account = pwd.getpwnam(user)
        assert account.pw_dir == f"{base}/var/lib/caseflow" and Path(account.pw_dir).is_dir()
        assert Path(account.pw_dir).stat().st_uid == account.pw_uid
        assert grp.getgrnam(group).gr_mem == sorted([user, person]) or \
            set(grp.getgrnam(group).gr_mem) == {user, person}
        inbox = data_dir / "inbox"
        assert inbox.stat().st_mode & 0o7777 == 0o2770 and inbox.stat().st_gid == \
            grp.getgrnam(group).gr_gid
        # the unit as installed: its Documentation= is the guide, installed with caseflow
        service = _service(UNIT_AS_INSTALLED[0])
        docs = configparser.ConfigParser(interpolation=None, strict=False)
        docs.read_string(UNIT_AS_INSTALLED[0].read_text())
        documentation = docs["Unit"]["Documentation"]
        assert documentation.startswith("file://")
        assert Path(documentation[len("file://"):]).read_text() == \
            (ROOT / "docs" / "service.md").read_text()
        assert (base / "etc/logrotate.d/caseflow").read_text() == \
            (ROOT / "config" / "caseflow.logrotate").read_text()

        notify_path = base / "run" / "notify"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            notify_path.chmod(0o666)  # the service user sends READY=1 to it
            notify.settimeout(DEADLINE)
            argv = shlex.split(service["ExecStart"])
            assert argv[0] == f"{base}/opt/caseflow/bin/caseflow" and argv[2] == str(config)
            log = tmp_path / "journal.log"
            daemon = _start_as_the_units_user(argv, notify_path, log, env)
            assert notify.recv(4096) == b"READY=1", log.read_text()

        home = base / "home" / person  # the person's cases, as they would have them
        for case in ("my-case", "plain-copy"):
            (home / case).mkdir(parents=True)
            (home / case / "input.txt").write_text(f"from {case}\n")
        subprocess.run(["chown", "-R", person, str(home)], check=True)
        drop = service_guide.moved(service_guide.DROP, base, names, source)
        for command in (drop, drop.split(" && ")[0].replace("my-case", "plain-copy")):
            out = subprocess.run(["runuser", "-u", person, "--", "sh", "-c", command], cwd=home,
                                 capture_output=True, text=True, timeout=DEADLINE)
            assert out.returncode == 0, f"`{command}` as {person}: {out.stderr}"

        def case(name):  # as an operator asks: `caseflow status --json` as the service user
            out = subprocess.run(["runuser", "-u", user, "--", argv[0], "-c", str(config),
                                  "status", "--json"], capture_output=True, text=True,
                                 timeout=DEADLINE, cwd="/")
            assert out.returncode == 0, out.stderr
            return {c["name"]: c for c in json.loads(out.stdout)}.get(name)

        done = data_dir / "done" / "my-case"
        wait_for(lambda: done.is_dir(), timeout=DEADLINE * 2, what="my-case to be archived")
        assert case("my-case")["state"] == "success"
        results = data_dir / "results" / "my-case" / "output" / "copy.txt"
        out = subprocess.run(["runuser", "-u", person, "--", "cat", str(results)],
                             capture_output=True, text=True, timeout=DEADLINE)
        assert out.stdout == "from my-case\n", out.stderr  # the person reads the results
        plain = wait_for(lambda: (c := case("plain-copy")) and c["wrapup_note"] and c,
                         timeout=DEADLINE * 2, what="plain-copy to end")
        assert plain["state"] == "success"
        assert "needs write permission on the case folder itself" in plain["wrapup_note"]
        assert "chmod g+w" in plain["wrapup_note"] and (inbox / "plain-copy").is_dir()
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            rc = daemon.wait(timeout=DEADLINE * 2)
        for who in (user, person):
            subprocess.run(["userdel", who], capture_output=True)
        for name in (group, user):  # the user's own group, if userdel left it
            subprocess.run(["groupdel", name], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    assert rc == 0, (tmp_path / "journal.log").read_text()
