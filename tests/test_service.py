"""caseflow outside `make`: installed with pip and with pipx into fresh environments, and
run as the example systemd unit (config/caseflow.service) says.

The installs are real (the Python packages come from the package index once, ~1 minute);
the copy of the repository they install from is removed before anything runs, so the
installed `caseflow` can only use what was installed (the machine spec above all).
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import DEADLINE
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
def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
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
