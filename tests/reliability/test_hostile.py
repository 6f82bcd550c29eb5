"""The hostile-input suite: case folders with names and contents meant to break things, bad
case.yaml files, a folder replaced by a file, a changed host key, careless permissions.

`caseflow run` is a real process over the real sshd to real pueue (4.0.4), run as root
*without* the capabilities that let root read anything (so an unreadable file is unreadable),
on a tmpfs (50,000 files are created and sent) with a 400 MB remote root (one case does not
fit). Each case either runs correctly or fails with a reason naming its problem; no CANARY
file ever appears; the daemon never crashes. The hostile case folders go over `ssh` and over
`openssh` (the changed host key of `openssh` is refused by `caseflow login`: test_openssh.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import unicodedata
from pathlib import Path

import pytest

from harness import JOB, Workspace, wait_for
from pueue_daemon import PueueDaemon
from caseflow.config import TransportConfig
from caseflow.transports.openssh_master import Master
from sshd import SSHServer, transport_settings
from sshd_mfa import MFAServer, open_master, openssh_settings

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

TERMINAL = ("success", "failure", "not_found")
LONG = "long_" + "x" * 215
NFC = unicodedata.normalize("NFC", "café_ünï")
NFD = unicodedata.normalize("NFD", "café_ünï")

# name -> (files, expected state, words the reason must contain)
NAMES = ["with space", "quote'single", 'quote"double', "$(touch CANARY)", "`touch CANARY`",
         "semi;touch CANARY", "pipe|touch CANARY", "new\nline", "tab\there", "-leading-dash",
         LONG, NFC, NFD, "SameName", "samename", "amp&touch CANARY&", "glob*?[x]"]


NAME_JOB = 'printf "%s" "$CASEFLOW_CASE_NAME" > case_name.txt\n'


def _mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode:
        pytest.fail("mounting a tmpfs failed (the tests run as root)")


# `caseflow run` as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH
UNPRIVILEGED = ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


@pytest.fixture
def hostile(tmp_path, request):
    """The tmp file systems, the host, and the config; over `ssh`, or over `openssh` (a login
    node that asks for a one-time code, logged into once) when the test asks for it."""
    kind = getattr(request, "param", "ssh")
    root = tmp_path / "fs"
    _mount(root, "2g")
    ws = Workspace(root)
    _mount(ws.remote, "400m")
    server = (MFAServer if kind == "openssh" else SSHServer)(tmp_path / "gpuhost").start()
    pueue = PueueDaemon(tmp_path / "pueue", "4.0.4").start()
    (server.bin / "pueue").symlink_to(pueue.client)
    master = None
    if kind == "openssh":
        settings = openssh_settings(server, ws.remote, control_path=str(tmp_path / "cm"))
        master = Master(TransportConfig(**settings))
        open_master(server, master)
    else:
        settings = transport_settings(server, ws.remote)
    ws.write_config(transport=settings,
                    backend={"kind": "pueue", "command": NAME_JOB + JOB.replace("{ctl}",
                                                                                 str(ws.ctl))},
                    stability={"quiet_seconds": 1.0, "rescan_seconds": 2},
                    groups={"gpu_a": {"slots": 4}, "gpu_b": {"slots": 1}})
    yield ws, server
    pueue.close()
    if master is not None:
        master.exit()
    server.close() if kind == "openssh" else server.stop()
    ws.close()
    subprocess.run(["umount", "-l", str(ws.remote)])
    subprocess.run(["umount", "-l", str(root)])


def _write(folder: Path, files: dict) -> None:
    folder.mkdir(parents=True)
    for rel, content in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content == "FIFO":
            os.mkfifo(p)
        elif isinstance(content, tuple) and content[0] == "LINK":
            os.symlink(content[1], p)
        elif isinstance(content, tuple) and content[0] == "SPARSE":
            with open(p, "wb") as f:
                f.truncate(content[1])
        elif isinstance(content, tuple) and content[0] == "MODE":
            p.write_text("secret")
            os.chmod(p, content[1])
        else:
            p.write_bytes(content if isinstance(content, bytes) else content.encode())


@pytest.mark.parametrize("hostile", ["ssh", "openssh"], indirect=True)
def test_hostile_case_folders(hostile, daemons):
    ws, server = hostile
    expect: dict[str, tuple[str, str]] = {}
    cases: dict[str, dict] = {}
    for name in NAMES:
        cases[name] = {"data.txt": name}
        expect[name] = ("success", "")
    contents = {
        "link_outside": ({"data.txt": "x", "passwd": ("LINK", "/etc/passwd")}, "failure",
                         "symlink pointing outside"),
        "link_up": ({"data.txt": "x", "up": ("LINK", "../../..")}, "failure",
                    "symlink pointing outside"),
        "has_fifo": ({"data.txt": "x", "pipe": "FIFO"}, "failure", "a fifo"),
        "unreadable": ({"data.txt": "x", "secret.txt": ("MODE", 0o000)}, "failure",
                       "not readable"),
        "empty_folder": ({}, "failure", "holds no files"),
        "too_big_for_remote": ({"huge.bin": ("SPARSE", 600 * 1024 * 1024)}, "failure",
                               "space|disk may be full"),
        "yaml_unknown_key": ({"data.txt": "x", "case.yaml": "group: gpu_a\ncolour: red\n"},
                             "failure", "unknown key 'colour'"),
        "yaml_wrong_type": ({"data.txt": "x", "case.yaml": "priority: high\n"}, "failure",
                            "priority: expected a whole number"),
        "yaml_no_group": ({"data.txt": "x", "case.yaml": "group: gpu_z\n"}, "failure",
                          "unknown group 'gpu_z'"),
        "yaml_not_yaml": ({"data.txt": "x", "case.yaml": "group: [unclosed\n"}, "failure",
                          "not valid YAML"),
        "reserved_name": ({"data.txt": "x", ".caseflow/x": "x"}, "failure",
                          "reserved for caseflow"),
    }
    for name, (files, state, words) in contents.items():
        cases[name] = files
        expect[name] = (state, words)
    # 50,000 files over ssh; over openssh 10,000 cover its stream as well, in less CI time
    count = 10_000 if isinstance(server, MFAServer) else 50_000
    many = {f"d{i // 500:03d}/f{i:05d}": b"%d" % i for i in range(count)}
    cases["fifty_thousand_files"] = many
    expect["fifty_thousand_files"] = ("success", "")

    d = daemons(ws, UNPRIVILEGED)
    d.wait_running()
    for name, files in cases.items():
        staging = ws.root / "staging" / name
        _write(staging, files)
        os.rename(staging, ws.inbox / name)
    # a folder replaced by a file while it is being watched (detected, not yet stable)
    (ws.inbox / "becomes_a_file").mkdir()
    (ws.inbox / "becomes_a_file" / "data.txt").write_text("x")
    ws.wait_state("becomes_a_file", "detected")
    (ws.inbox / "becomes_a_file" / "data.txt").unlink()
    (ws.inbox / "becomes_a_file").rmdir()
    (ws.inbox / "becomes_a_file").write_text("now a file")
    expect["becomes_a_file"] = ("failure", "removed before it was stable")

    def all_ended():
        rows = {r.name: r for r in ws.store.cases()}
        return len(rows) == len(expect) and all(r.state in TERMINAL for r in rows.values())
    wait_for(all_ended, timeout=600, what="every hostile case to end")
    assert d.p.poll() is None, f"the daemon died:\n{d.text()[-3000:]}"
    outcomes = {}
    for row in ws.store.cases():
        state, words = expect[row.name]
        outcomes[row.name] = (row.state, row.reason)
        assert row.state == state, (row.name, row.state, row.reason)
        assert any(w.lower() in (row.reason or "").lower() for w in words.split("|")), \
            (row.name, row.reason)
        if state == "success":
            seen = Path(row.results_path, "case_name.txt").read_text()
            assert seen == row.name, (row.name, seen)  # the job got the name verbatim
        # the operator reaches every case by its name, however odd (`--` before a dash)
        shown = ws.cli("show", "-c", str(ws.config_path), "--json", "--", row.name, check=True)
        assert json.loads(shown.stdout)["id"] == row.id
    # names that differ only in case, or only in their unicode form, stayed apart
    names = {r.name: r for r in ws.store.cases()}
    assert names["SameName"].results_path != names["samename"].results_path
    assert names[NFC].results_path != names[NFD].results_path
    last = count - 1
    assert Path(names["fifty_thousand_files"].remote_path, f"d{last // 500:03d}",
                f"f{last:05d}").read_text() == str(last)
    assert not list(ws.remote.glob(".staging-*")), "a half upload was left on the remote side"
    canaries = subprocess.run(["find", str(ws.root), str(server.root), "/root", "/tmp",
                               "-maxdepth", "6", "-name", "CANARY"],
                              capture_output=True, text=True).stdout.split()
    assert canaries == [], canaries
    assert d.stop() == 0
    width = max(len(repr(n)) for n in outcomes)
    print(f"\nhostile suite: {len(outcomes)} inputs")
    for name, (state, reason) in sorted(outcomes.items()):
        print(f"  {repr(name)[:60]:{min(width, 60)}}  {state:8} {(reason or '')[:90]}")


def test_a_changed_host_key_is_refused_before_anything_is_sent(hostile, daemons):
    ws, server = hostile
    other = ws.root / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    fake = other.with_suffix(".pub").read_text().split()[:2]
    known = ws.root / "known_hosts_changed"
    known.write_text(f"[127.0.0.1]:{server.port} {' '.join(fake)}\n")
    ws.write_config(transport={**ws.settings["transport"], "known_hosts": str(known)})
    d = daemons(ws, UNPRIVILEGED)
    d.wait_running()
    _write(ws.root / "staging" / "sent_nowhere", {"data.txt": "private"})
    os.rename(ws.root / "staging" / "sent_nowhere", ws.inbox / "sent_nowhere")
    wait_for(lambda: ws.store.host_problems(), what="the host to be paused")
    status = ws.cli("status", check=True).stdout
    assert "work PAUSED" in status and "CHANGED" in status, status
    # paused by the probe at the start; the case tries once more after retry.max_seconds
    row = wait_for(lambda: (r := ws.case("sent_nowhere")) and r.state == "gpu_locked" and r,
                   what="the case to take its slot and wait")
    assert row.reason is None
    assert list(ws.remote.iterdir()) == [], "something reached the host"
    assert d.stop() == 0


def test_careless_permissions_are_warned_about(ws, daemons):
    os.chmod(ws.config_path, 0o666)
    os.chmod(ws.var, 0o777)
    try:
        out = ws.cli("check")
        assert out.returncode == 1
        assert f"the configuration {ws.config_path} is writable by every user" in out.stdout
        assert f"the database's folder {ws.var} is writable by every user" in out.stdout
        d = daemons()
        d.wait_running()
        assert "is writable by every user" in d.text()
        assert d.stop() == 0
    finally:
        os.chmod(ws.config_path, 0o644)
        os.chmod(ws.var, 0o755)
