"""A local file error while results arrive is the case's, never the connection's (defect 8).

Writing the results into the local results folder can fail: a full disk (a small tmpfs
mounted on it), a read-only file system (a read-only bind mount) or an immutable folder
(`chattr +i`: root ignores file permissions, not that). Over both transports that talk to a
real sshd (`ssh`: one paramiko connection; `openssh`: one master, `master: daemon`), through a
relay that slows the link so that another case's upload is under way on the same connection
when the fetch fails: that upload completes, the connection is the same one (no reconnect),
and the error says what to fix: a full disk is transient (room can be made; the case waits,
as with the `local` transport), a folder that cannot be written is permanent.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from caseflow import casefolder
from caseflow.config import TransportConfig
from caseflow.errors import PermanentError, TransientError
from caseflow.transports.local import local_manifest
from caseflow.transports.openssh import OpenSSHTransport
from caseflow.transports.ssh import SSHTransport
from harness import wait_for
from sshd import Relay, transport_settings

CASE = "3-case"
RATE = 8 * 1024 * 1024  # bytes/s each way through the relay: the upload takes a few seconds


@pytest.fixture(params=["ssh", "openssh"])
def host(request, sshd, tmp_path):
    """A transport of the kind asked for, to the real sshd through a slowed relay; the
    remote root holds a finished case whose job wrote 512 KiB of results."""
    relay = Relay(sshd.port, rate=RATE)
    known = sshd.write_known_hosts(tmp_path / "known_hosts_relay", port=relay.port)
    remote = tmp_path / "remote"
    (remote / CASE / "output").mkdir(parents=True)
    (remote / CASE / "output" / "result.bin").write_bytes(os.urandom(512 * 1024))
    (remote / CASE / "job.log").write_text("the job's log\n")
    settings = {**transport_settings(sshd, remote), "port": relay.port,
                "known_hosts": str(known)}
    if request.param == "openssh":
        settings.update(kind="openssh", master="daemon", control_path=str(tmp_path / "cm"))
        t = OpenSSHTransport(TransportConfig(**settings))
    else:
        t = SSHTransport(TransportConfig(**settings))
    yield t
    if isinstance(t, OpenSSHTransport):
        t.channels.master.exit()
    t.close()
    relay.close()


def _fetch(t, how: str, dest: Path):
    remote = t.path(CASE)
    if how == "fetch_results":
        return t.fetch_results(remote, dest)
    return t.fetch_results_and_tail(remote, dest, None, "job.log", 1000)


def _other_upload(t, tmp_path):
    """Another case's upload on the same connection, under way when it returns: (thread,
    errors, the case, its manifest, its target)."""
    case = tmp_path / "other-case"
    (case / "scans").mkdir(parents=True)
    for i in range(24):  # 24 MiB in files of 1 MiB: one tar stream, ~3 s through the relay
        (case / "scans" / f"slice_{i:03d}.raw").write_bytes(os.urandom(1 << 20))
    m = casefolder.scan(case)
    target = Path(t.path("9-other"))
    errors: list[Exception] = []

    def upload():
        try:
            t.upload_dir(case, str(target), m)
        except Exception as exc:  # the test looks at it
            errors.append(exc)

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    staging = target.parent / f".staging-{target.name}" / "scans"
    wait_for(lambda: staging.is_dir() and len(list(staging.iterdir())) >= 2, interval=0.01,
             what="the other upload to be under way")
    return thread, errors, case, m, target


def _connections(t) -> int:
    return t.connects


def _check_survivors(t, thread, errors, case, m, target, connects):
    thread.join(timeout=120)
    assert not thread.is_alive(), "the other upload did not end"
    assert errors == [], f"the other case's upload was cut: {errors!r}"
    assert local_manifest(target) == m.as_set()
    assert (target / "scans" / "slice_007.raw").read_bytes() == (
        case / "scans" / "slice_007.raw").read_bytes()
    assert _connections(t) == connects, "the connection was dropped and made again"
    assert t.run(["true"]).returncode == 0 and _connections(t) == connects


@pytest.mark.parametrize("how", ["fetch_results", "fetch_results_and_tail"])
def test_a_full_local_disk_while_fetching_leaves_the_connection_and_other_uploads_alone(
        host, tmp_path, how):
    t = host
    assert t.run(["true"]).returncode == 0
    connects = _connections(t)
    results = tmp_path / "results"
    results.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs",
                       str(results)]).returncode:
        pytest.fail("mounting a tmpfs failed (the tests run as root)")
    try:
        thread, errors, case, m, target = _other_upload(t, tmp_path)
        with pytest.raises(TransientError) as err:
            _fetch(t, how, results / CASE)
        _check_survivors(t, thread, errors, case, m, target, connects)
        # it says what is wrong and where, as the local disk's problem, not the host's
        text = str(err.value)
        assert f"results could not be written to {results}" in text, text
        assert "No space left on device" in text and "[Errno" not in text, text
        assert list(results.iterdir()) == []  # the staging folder is gone
    finally:
        subprocess.run(["umount", "-l", str(results)])
    # room again: the same fetch brings the results home, on the same connection
    count = _fetch(t, how, results / CASE)
    assert (count if how == "fetch_results" else count[0]) == 2
    assert (results / CASE / "output" / "result.bin").stat().st_size == 512 * 1024
    assert _connections(t) == connects


@pytest.fixture(params=["read-only file system", "immutable folder"])
def unwritable(request, tmp_path):
    """A results folder nothing can be written into, even by root: (folder, the words of
    the error)."""
    results = tmp_path / "results"
    results.mkdir()
    if request.param == "read-only file system":
        for argv in (["mount", "--bind", str(results), str(results)],
                     ["mount", "-o", "remount,ro,bind", str(results)]):
            if subprocess.run(argv).returncode:
                pytest.fail(f"{argv} failed (the tests run as root)")
        yield results, "Read-only file system"
        subprocess.run(["umount", "-l", str(results)])
    else:
        if subprocess.run(["chattr", "+i", str(results)]).returncode:
            pytest.fail("chattr +i failed (the tests run as root on ext4)")
        yield results, "Operation not permitted"
        subprocess.run(["chattr", "-i", str(results)])


@pytest.mark.parametrize("how", ["fetch_results", "fetch_results_and_tail"])
def test_a_results_folder_that_cannot_be_written_fails_the_case_and_keeps_the_connection(
        host, tmp_path, unwritable, how):
    t = host
    results, words = unwritable
    assert t.run(["true"]).returncode == 0
    connects = _connections(t)
    thread, errors, case, m, target = _other_upload(t, tmp_path)
    with pytest.raises((PermanentError, TransientError)) as err:
        _fetch(t, how, results / CASE)
    _check_survivors(t, thread, errors, case, m, target, connects)
    text = str(err.value)
    assert isinstance(err.value, PermanentError), f"{type(err.value).__name__}: {text}"
    assert f"results could not be written to {results}" in text and words in text, text


def test_a_file_the_results_cannot_replace_is_the_local_sides_problem(host, tmp_path):
    """The results land, then an earlier copy at the target cannot be replaced (an immutable
    file): permanent, named, and no connection is dropped."""
    t = host
    results = tmp_path / "results"
    (results / CASE).mkdir(parents=True)
    (results / CASE / "kept.txt").write_text("an earlier fetch\n")
    assert t.run(["true"]).returncode == 0
    connects = _connections(t)
    subprocess.run(["chattr", "+i", str(results / CASE / "kept.txt")], check=True)
    try:
        with pytest.raises(PermanentError, match="Operation not permitted") as err:
            t.fetch_results(t.path(CASE), results / CASE)
        assert f"results could not be written to {results}" in str(err.value)
    finally:
        subprocess.run(["chattr", "-i", str(results / CASE / "kept.txt")], check=True)
    assert sorted(p.name for p in results.iterdir()) == [CASE]  # no staging folder left
    assert _connections(t) == connects
    assert t.fetch_results(t.path(CASE), results / CASE) == 2
