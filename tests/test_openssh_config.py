"""The `openssh` transport's settings: mistakes name the file and the key; the control socket
caseflow owns fits a unix socket's path; `caseflow login` is only for openssh hosts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from caseflow.config import load_config
from caseflow.transports.ssh_settings import CONTROL_PATH_MAX
from caseflow.errors import ConfigError
from caseflow.transports.openssh_master import Master

BASE = {"kind": "openssh", "host": "login-node", "root": "/scratch/cases"}


def _load(ws, **transport):
    ws.write_config(transport={**BASE, **transport})
    return load_config(ws.config_path)


@pytest.mark.parametrize("changes, key, words", [
    ({"strict_host_key_checking": False}, "strict_host_key_checking", "a changed host key"),
    ({"strict_host_key_checking": "off"}, "strict_host_key_checking", "must be one of"),
    ({"control_persist": False}, "control_persist", "must be yes or a time"),
    ({"control_persist": "a while"}, "control_persist", "must be yes or a time"),
    ({"master": "auto"}, "master", "must be login"),
    ({"max_sessions": 0}, "max_sessions", "must be at least 2"),
    ({"max_sessions": 1}, "max_sessions", "must be at least 2"),
    ({"max_channels": 10}, "max_channels", "must be less than max_sessions (10)"),
    ({"max_sessions": 4, "max_channels": 4}, "max_channels", "less than max_sessions (4)"),
    ({"max_channels": 0}, "max_channels", "greater than 0"),
    ({"accept_new_host_keys": True}, "accept_new_host_keys", "strict_host_key_checking"),
    ({"host": "-oProxyCommand=evil"}, "host", "not starting with -"),
    ({"root": "relative/path"}, "root", "absolute path"),
    ({"ssh_config": "missing_config"}, "ssh_config", "does not exist"),
    ({"control_persit": "1h"}, "control_persit", "did you mean 'control_persist'"),
    ({"password": "secret"}, "password", "passwords are not accepted"),
])
def test_mistakes_name_file_and_key(ws, changes, key, words):
    with pytest.raises(ConfigError) as err:
        _load(ws, **changes)
    message = str(err.value)
    assert message.startswith(f"{ws.config_path}: transport.{key}:"), message
    assert words in message


def test_openssh_words_read_as_yaml_writes_them(ws):
    # unquoted, YAML reads yes as true: taken as OpenSSH's yes
    t = _load(ws, strict_host_key_checking=True, control_persist=True, max_sessions=6).transport
    assert (t.strict_host_key_checking, t.control_persist, t.max_sessions) == ("yes", "yes", 6)
    t = _load(ws, control_persist="1h30m", strict_host_key_checking="accept-new").transport
    assert (t.control_persist, t.strict_host_key_checking, t.master) == \
        ("1h30m", "accept-new", "login")


@pytest.mark.parametrize("kind", ["openssh", "ssh"])
def test_uploads_leave_sessions_for_commands(ws, kind):
    """Uploads keep at most max_channels open; by default two sessions fewer than
    max_sessions, so a poll or a submit never waits for an upload to end."""
    t = _load(ws, kind=kind).transport
    assert (t.max_sessions, t.max_channels) == (10, 8)
    t = _load(ws, kind=kind, max_sessions=4).transport
    assert (t.max_sessions, t.max_channels) == (4, 2)
    t = _load(ws, kind=kind, max_sessions=2).transport
    assert (t.max_sessions, t.max_channels) == (2, 1)
    t = _load(ws, kind=kind, max_sessions=30, max_channels=20).transport
    assert (t.max_sessions, t.max_channels) == (30, 20)


def test_the_default_control_socket_is_in_the_state_folder_and_short_enough(ws, tmp_path,
                                                                            monkeypatch):
    t = _load(ws).transport
    assert Path(t.control_path).parent == ws.var / "ssh"
    assert len(t.control_path) <= CONTROL_PATH_MAX
    # two hosts, two sockets
    ws.settings = {k: v for k, v in ws.settings.items()
                   if k not in ("transport", "groups", "backend")}
    ws.write_config(hosts={name: {"transport": BASE, "groups": ["g"],
                                  "backend": {"kind": "direct", "command": "true"}}
                           for name in ("a", "b")})
    paths = {h.transport.control_path for h in load_config(ws.config_path).hosts}
    assert len(paths) == 2
    # a state folder too deep for a unix socket's path: the user's runtime folder
    deep = tmp_path / ("d" * 60) / "var"
    deep.mkdir(parents=True)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/4242")
    ws.write_config(database=str(deep / "caseflow.db"), hosts={"a": ws.settings["hosts"]["a"]})
    path = load_config(ws.config_path).transport.control_path
    assert Path(path).parent == Path("/run/user/4242/caseflow")
    # and in /tmp (a folder of this user's) when the runtime folder is too deep as well
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    path = load_config(ws.config_path).transport.control_path
    assert Path(path).parent == Path(f"/tmp/caseflow-{os.getuid()}")
    assert len(path) <= CONTROL_PATH_MAX


def test_a_given_control_path_is_used_as_ssh_expands_it(ws, tmp_path):
    """A control_path of the user's ~/.ssh/config (tokens included) is shared with it."""
    cfg = _load(ws, control_path=str(tmp_path / "cm-%r@%h:%p"), user="alice", port=2222)
    assert Master(cfg.transport).socket_path() == f"{tmp_path}/cm-alice@login-node:2222"


def test_a_folder_others_can_reach_is_refused(ws, tmp_path):
    from caseflow.errors import HostError
    open_folder = tmp_path / "open"
    open_folder.mkdir(mode=0o777)
    open_folder.chmod(0o777)
    master = Master(_load(ws, control_path=str(open_folder / "cm")).transport)
    with pytest.raises(HostError, match="closed to others"):
        master.prepare_folder()


def test_login_without_a_terminal_says_to_run_it_in_one(ws):
    _load(ws)
    out = subprocess.run([sys.executable, "-m", "caseflow.cli", "login", "-c",
                          str(ws.config_path)], stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, out
    assert "run it in a terminal" in out.stderr and "master: daemon" in out.stderr


def test_login_is_only_for_openssh_hosts(ws):
    out = ws.cli("login")
    assert out.returncode == 2 and "openssh hosts: none" in out.stderr
    out = ws.cli("login", "elsewhere")
    assert out.returncode == 2 and "no host 'elsewhere'" in out.stderr
