"""An upload cut by a real broken connection (tests/sshd.py's Relay.cut()) resumes: the next
attempt keeps what arrived and still agrees with the case, sends the rest, and verifies and
renames as strictly as a fresh upload; the job never sees a partial folder, and a staging
folder that no case resumes is removed."""

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from caseflow import casefolder
from caseflow.config import TransportConfig
from caseflow.errors import PermanentError, TransientError
from caseflow.transports import space_needed, upload_resume
from caseflow.transports.local import local_manifest
from caseflow.transports.ssh import SSHTransport
from caseflow.transports.ssh_upload import STALE_MINUTES
from harness import wait_for
from sshd import Relay, transport_settings

MiB = 1 << 20
LARGE = 4 * MiB        # files from this size go in byte ranges
BIG = 12 * MiB         # the case's large file
RATE = 6 * MiB         # bytes/s through the relay: the cut comes while data is under way


@pytest.fixture
def link(sshd, tmp_path, monkeypatch):
    """A slow relay in front of the sshd, and a transport through it; blocks of 1 MiB."""
    monkeypatch.setattr(upload_resume, "BLOCK", MiB)  # several blocks in the large file
    relay = Relay(sshd.port, rate=RATE)
    known = sshd.write_known_hosts(tmp_path / "known_hosts_relay", port=relay.port)
    (tmp_path / "remote").mkdir()
    cfg = TransportConfig(**transport_settings(
        sshd, tmp_path / "remote", port=relay.port, known_hosts=str(known),
        reconnect_min_interval=0, large_file_bytes=LARGE))
    t = SSHTransport(cfg, sleep=lambda s: None)
    yield relay, t
    t.close()
    relay.close()


@pytest.fixture
def case(tmp_path) -> Path:
    d = tmp_path / "case"
    for i in range(24):
        sub = d / f"part{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:02d}.bin").write_bytes(os.urandom(256 * 1024))
    (d / "big.raw").write_bytes(os.urandom(BIG))
    (d / "empty").mkdir()
    os.symlink("big.raw", d / "link")
    return d


def target_and_staging(tmp_path) -> tuple[Path, Path]:
    return tmp_path / "remote" / "1-case", tmp_path / "remote" / ".staging-1-case"


def staged_bytes(staging: Path) -> int:
    return sum(p.stat().st_size for p in staging.rglob("*")
               if p.is_file() and ".caseflow" not in p.parts)


def cut_when(relay: Relay, staging: Path, at_least: int) -> threading.Thread:
    """Cut every connection once the staging folder holds `at_least` bytes."""
    def watch():
        wait_for(lambda: staging.is_dir() and staged_bytes(staging) >= at_least,
                 interval=0.01, what="the upload to be under way")
        relay.cut()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def cut_upload(relay, t, case, target, staging, fraction=0.5):
    """An upload of `case` cut after about `fraction` of it arrived."""
    m = casefolder.scan(case)
    watcher = cut_when(relay, staging, int(m.size_bytes * fraction))
    with pytest.raises(TransientError):
        t.upload_dir(case, str(target), m)
    watcher.join(timeout=60)
    assert not target.exists()  # nothing is in place after a cut
    assert staging.is_dir()     # what arrived is kept for the next attempt
    return m


def arrived_intact(case: Path, staging: Path) -> int:
    """Bytes in the staging folder that are the case's own: whole files, and whole 1 MiB
    blocks of the large file."""
    total = 0
    for p in staging.rglob("*"):
        rel = p.relative_to(staging)
        if not p.is_file() or p.is_symlink() or ".caseflow" in rel.parts:
            continue
        mine = (case / rel).read_bytes()
        theirs = p.read_bytes()
        if rel.name == "big.raw":
            total += sum(MiB for off in range(0, len(mine), MiB)
                         if theirs[off:off + MiB] == mine[off:off + MiB]
                         and len(mine[off:off + MiB]) == MiB)
        elif theirs == mine:
            total += len(mine)
    return total


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
            and ".caseflow" not in p.relative_to(folder).parts}


def assert_complete(case: Path, target: Path, staging: Path, m) -> None:
    assert local_manifest(target) == m.as_set()
    assert digests(target) == digests(case)
    assert os.readlink(target / "link") == "big.raw"
    assert not staging.exists()


def test_a_cut_upload_resumes_and_sends_only_the_rest(link, case, tmp_path):
    relay, t = link
    target, staging = target_and_staging(tmp_path)
    m = cut_upload(relay, t, case, target, staging)
    kept = arrived_intact(case, staging)
    assert kept >= m.size_bytes * 0.3
    before = relay.to_server
    assert t.upload_dir(case, str(target), m) is True
    sent = relay.to_server - before
    # the rest, a block or file per stream and range cut in the middle, SSH's framing
    assert sent <= (m.size_bytes - kept) * 1.05 + 3 * MiB, (sent, kept, m.size_bytes)
    assert sent < m.size_bytes * 0.8
    assert_complete(case, target, staging, m)


def test_a_file_changed_here_between_attempts_is_sent_again(link, case, tmp_path):
    relay, t = link
    target, staging = target_and_staging(tmp_path)
    cut_upload(relay, t, case, target, staging, fraction=0.7)
    intact = [p for p in staging.rglob("f*.bin")
              if p.read_bytes() == (case / p.relative_to(staging)).read_bytes()]
    assert len(intact) >= 2
    changed_time = case / intact[0].relative_to(staging)
    changed_time.write_bytes(os.urandom(256 * 1024))       # new bytes, a new mtime
    same_time = case / intact[1].relative_to(staging)
    st = same_time.stat()
    same_time.write_bytes(os.urandom(256 * 1024))          # new bytes, size and mtime as before
    os.utime(same_time, ns=(st.st_atime_ns, st.st_mtime_ns))
    big = bytearray((case / "big.raw").read_bytes())
    big[:4096] = os.urandom(4096)                          # the first block of the large file
    (case / "big.raw").write_bytes(bytes(big))
    m = casefolder.scan(case)
    assert t.upload_dir(case, str(target), m) is True
    assert_complete(case, target, staging, m)


def test_a_damaged_partial_copy_is_found_and_sent_again(link, case, tmp_path):
    relay, t = link
    target, staging = target_and_staging(tmp_path)
    m = cut_upload(relay, t, case, target, staging, fraction=0.7)
    intact = [p for p in staging.rglob("f*.bin")
              if p.read_bytes() == (case / p.relative_to(staging)).read_bytes()]
    assert intact
    for p in (intact[0], staging / "big.raw"):  # damaged in place: same size, same mtime
        st = p.stat()
        with open(p, "r+b") as f:
            f.seek(100)
            f.write(b"\xff" * 64)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    (staging / "part0" / "stray.tmp").write_text("not the case's")  # and something extra
    assert t.upload_dir(case, str(target), m) is True
    assert_complete(case, target, staging, m)


def test_the_job_never_sees_a_partial_folder(link, case, tmp_path):
    """Whenever the target folder exists, during the cut and the resumed upload, it is the
    whole case."""
    relay, t = link
    target, staging = target_and_staging(tmp_path)
    expected = casefolder.scan(case).as_set()
    seen, done = [], threading.Event()

    def look():
        while not done.is_set():
            if target.exists():
                seen.append(local_manifest(target) == expected)
            time.sleep(0.002)
    looker = threading.Thread(target=look, daemon=True)
    looker.start()
    m = cut_upload(relay, t, case, target, staging)
    assert seen == []
    assert t.upload_dir(case, str(target), m) is True
    wait_for(lambda: seen, what="the target to be seen")
    done.set()
    looker.join()
    assert all(seen)
    assert_complete(case, target, staging, m)


@pytest.mark.parametrize("size", ["small", "large"])
def test_a_staging_folder_no_attempt_touched_for_a_week_is_removed(sshd, tmp_path, case, size):
    """By the prepare command, or by the one command of a small case."""
    if size == "small":
        case = tmp_path / "small"
        case.mkdir()
        (case / "data.bin").write_bytes(os.urandom(4096))
    remote = tmp_path / "remote"
    old, recent = remote / ".staging-98-old", remote / ".staging-99-recent"
    for d in (old, recent):
        (d / ".caseflow").mkdir(parents=True)
        (d / ".caseflow" / "attempt").touch()
        (d / "half.bin").write_bytes(b"x" * 1000)
    week = time.time() - (STALE_MINUTES + 60) * 60
    os.utime(old / ".caseflow" / "attempt", (week, week))
    t = SSHTransport(TransportConfig(**transport_settings(sshd, remote)))
    try:
        m = casefolder.scan(case)
        assert t.upload_dir(case, str(remote / "1-case"), m) is True
    finally:
        t.close()
    assert not old.exists()
    assert (recent / "half.bin").exists()  # another case may still resume it


def test_a_case_that_ends_before_its_upload_leaves_no_staging_folder(ssh_ws, sshd):
    """A case cancelled after an interrupted upload: its staging folder goes with it."""
    relay = Relay(sshd.port, rate=256 * 1024)
    try:
        known = sshd.write_known_hosts(ssh_ws.root / "known_hosts_relay", port=relay.port)
        ssh_ws.write_config(
            transport={**ssh_ws.settings["transport"], "port": relay.port,
                       "known_hosts": str(known), "reconnect_min_interval": 0.5},
            retry={"initial_seconds": 30, "max_seconds": 30})
        ssh_ws.start()
        ssh_ws.drop_case("cut", files={"data.bin": os.urandom(3 * MiB)})
        staging = wait_for(lambda: next(iter(ssh_ws.remote.glob(".staging-*")), None),
                           what="the upload to begin")
        wait_for(lambda: staged_bytes(staging) > 256 * 1024, interval=0.01,
                 what="data to arrive")
        relay.cut()
        wait_for(lambda: ssh_ws.case("cut").attempts >= 1, what="the failed attempt")
        assert staging.is_dir()  # kept for the next attempt
        ssh_ws.cli("cancel", "cut", check=True)
        ssh_ws.wait_state("cut", "failure")
        wait_for(lambda: not staging.exists(), what="the staging folder to be removed")
        assert list(ssh_ws.remote.iterdir()) == []
    finally:
        relay.close()


def test_what_arrived_counts_as_room_and_a_full_disk_still_fails_the_case(link, tmp_path):
    """The disk has room for the case once: the resumed attempt fits because what arrived
    stays; a case larger than what is left fails at once, and its staging folder goes."""
    relay, t = link
    small = tmp_path / "remote" / "small"
    small.mkdir()
    case = tmp_path / "fits"
    case.mkdir()
    for i in range(8):
        (case / f"f{i}.bin").write_bytes(os.urandom(512 * 1024))
    m = casefolder.scan(case)
    size_kib = (space_needed(m) + 256 * 1024) // 1024
    assert os.system(f"mount -t tmpfs -o size={size_kib}k tmpfs {small}") == 0
    try:
        target, staging = small / "1-case", small / ".staging-1-case"
        cut_upload(relay, t, case, target, staging)
        assert shutil.disk_usage(small).free < space_needed(m)  # no room for a second copy
        assert t.upload_dir(case, str(target), m) is True
        assert local_manifest(target) == m.as_set() and digests(target) == digests(case)
        other = tmp_path / "too-big"
        other.mkdir()
        (other / "data.bin").write_bytes(os.urandom(3 * MiB))
        with pytest.raises(PermanentError, match="no space left on the remote side"):
            t.upload_dir(other, str(small / "2-case"), casefolder.scan(other))
        assert sorted(p.name for p in small.iterdir()) == ["1-case"]
    finally:
        os.system(f"umount {small}")
