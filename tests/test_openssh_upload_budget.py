"""Every channel and every unit of the channel budget comes back, whatever ends an upload
(defect 10).

A large case goes to a login node that asks for a key and a one-time code (the real sshd with
PAM's TOTP module, tests/sshd_mfa.py) through its OpenSSH master, opened with `caseflow login`
in a real pseudo-terminal; a relay slows the link so that the master can be SIGKILLed while the
tar streams, then the byte ranges, are under way. Each time the upload says the host needs a
login (no case fails), and afterwards the transport, kept as a daemon keeps it, has all its
channels back: the budget is full, every session free, no `ssh` of a stream left running. Once
the person has logged in again the upload resumes and completes. Channels the host refuses
for a moment (its MaxSessions) are asked for again. The budget's own waits are bounded; units
taken by a holder that raises come back.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from caseflow import casefolder
from caseflow.config import load_config
from caseflow.errors import TransientError
from caseflow.transports import upload_ranges
from caseflow.transports.local import local_manifest
from caseflow.transports.openssh import NeedsLogin, OpenSSHTransport
from caseflow.transports.ssh import ChannelTransport
from caseflow.transports.ssh_upload import ChannelBudget
from caseflow.transports.tarstream import Counter
from caseflow.transports.upload_streams import Opening, Streams
from harness import wait_for
from sshd_mfa import LoginNode, openssh_settings, prompts_in, pty_login

RATE = 40 * 1024 * 1024  # bytes/s through the relay: the whole case takes about 6 s
BIG = 192 << 20  # the large file: byte ranges on several channels
SMALL = 240  # files of 100 KiB: 24 MB, four tar streams


@pytest.fixture
def node(ws):
    n = LoginNode(ws.root)
    yield n
    n.close(ws.config_path)


@pytest.fixture
def big_case(ws):
    case = ws.root / "big-case"
    (case / "slices").mkdir(parents=True)
    for i in range(SMALL):
        (case / "slices" / f"slice_{i:03d}.raw").write_bytes(os.urandom(100 * 1024))
    with open(case / "volume.raw", "wb") as f:
        # not zeros: the remote file's holes would pass the resume's block check for them
        for _ in range(BIG >> 24):
            f.write(os.urandom(1 << 24))
    return case


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _free_sessions(t: OpenSSHTransport) -> int:
    """How many of max_sessions are free (taken and given back at once)."""
    got = 0
    while t.channels.sessions.acquire(blocking=False):
        got += 1
    for _ in range(got):
        t.channels.sessions.release()
    return got


def _stream_processes(t: OpenSSHTransport) -> list[str]:
    """This process's `ssh` children that go through the host's control socket."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != os.getpid():
            continue
        text = " ".join(os.fsdecode(a) for a in cmdline)
        if text.startswith("ssh ") and t.cfg.control_path in text:
            found.append(text[:200])
    return found


def _all_back(t: OpenSSHTransport) -> None:
    free = t.channel_budget().free
    assert free == t.cfg.max_channels, \
        f"{t.cfg.max_channels - free} unit(s) of the channel budget were never given back"
    assert _free_sessions(t) == t.cfg.max_sessions, "sessions were never given back"
    assert _stream_processes(t) == [], "an ssh of a stream is still running"


def test_a_master_killed_mid_upload_again_and_again_gives_every_channel_back(
        ws, node, big_case, caplog):
    ws.write_config(transport=openssh_settings(node.server, ws.remote))
    rc, shown = pty_login(node.server, ws.config_path)
    assert rc == 0 and prompts_in(shown) == 1, shown
    t = OpenSSHTransport(load_config(ws.config_path).transport)  # kept, as the daemon does
    assert (t.cfg.max_sessions, t.cfg.max_channels) == (10, 8)  # OpenSSH's MaxSessions
    node.relay.rate = RATE
    m = casefolder.scan(big_case)
    target = ws.remote / "1-big-case"

    def upload(after: int | None):
        """The upload, and the master SIGKILLed once `after` more bytes are sent."""
        errors: list[Exception] = []
        first: list[int] = []
        reached = threading.Event()

        def progress(sent, total):
            first[:] = first or [sent]
            if after is not None and sent - first[0] >= after:
                reached.set()

        def run():
            try:
                errors.append(t.upload_dir(big_case, str(target), m, progress=progress))
            except Exception as exc:  # the test looks at it
                errors.append(exc)
            finally:
                reached.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        if after is not None:
            assert reached.wait(120), "the upload did not get under way"
            assert thread.is_alive(), f"the upload ended before the kill: {errors}"
            os.kill(t.channels.master.pid(), signal.SIGKILL)
        thread.join(timeout=180)
        assert not thread.is_alive(), "the upload is stuck"
        return errors

    # killed in the tar streams (4 channels), then twice in the byte ranges (up to 8)
    for round_, after in enumerate((6 << 20, 50 << 20, 40 << 20)):
        outcome = upload(after)
        assert len(outcome) == 1 and isinstance(outcome[0], NeedsLogin), (round_, outcome)
        assert str(outcome[0]) == "needs login: caseflow login testhost"
        _all_back(t)
        with pytest.raises(NeedsLogin):  # the host is paused until someone logs in
            t.run(["true"])
        assert not target.exists()
        rc, shown = pty_login(node.server, ws.config_path)
        assert rc == 0 and prompts_in(shown) == 1, shown

    # logged in again: the upload resumes from what the earlier attempts left, and completes
    assert upload(None) == [True]
    assert "the upload to testhost:" in caplog.text and " resumes: " in caplog.text
    _all_back(t)
    assert local_manifest(target) == m.as_set()
    assert (target / "slices" / "slice_123.raw").read_bytes() == (
        big_case / "slices" / "slice_123.raw").read_bytes()
    assert _digest(target / "volume.raw") == _digest(big_case / "volume.raw")
    assert node.server.logins() == 4


def test_byte_ranges_the_host_refuses_for_a_moment_are_asked_for_again(tmp_path, monkeypatch,
                                                                        caplog):
    """sshd counts sessions this transport does not (for a moment after their `ssh` ended;
    here: another transport's commands on the same master): with OpenSSH's MaxSessions of
    10, 4 of them and the upload's 8 byte ranges are more than it takes, and it refuses some
    ("Session open refused by peer"). Those are asked for again as sessions are freed: the
    upload completes with every channel back. A refusal used to fail the upload (and keep
    its channels' units of the budget for good)."""
    from caseflow.config import TransportConfig
    from sshd import SSHServer, transport_settings
    caplog.set_level(logging.DEBUG, "caseflow.openssh")
    server = SSHServer(tmp_path / "sshd", max_sessions=10).start()
    settings = {**transport_settings(server, tmp_path / "remote"), "kind": "openssh",
                "master": "daemon", "control_path": str(tmp_path / "cm"),
                "large_file_bytes": 1 << 20}  # one tar stream (a.txt), then the ranges
    t = OpenSSHTransport(TransportConfig(**settings))
    other = OpenSSHTransport(TransportConfig(**settings))  # the same master, sessions apart
    busy = []
    try:
        (tmp_path / "remote").mkdir()
        case = tmp_path / "case"
        case.mkdir()
        (case / "a.txt").write_text("a\n")
        (case / "volume.raw").write_bytes(os.urandom(48 << 20))
        monkeypatch.setattr(upload_ranges, "channels_for", lambda rtt, most: 8)
        m = casefolder.scan(case)
        assert t.run(["true"]).returncode == 0  # the master
        started = tmp_path / "started"
        for _ in range(4):
            busy.append(threading.Thread(target=other.run, args=(
                ["sh", "-c", f"echo >> {started}; sleep 3"],), daemon=True))
            busy[-1].start()
        wait_for(lambda: started.exists() and len(started.read_text()) == 4,
                 what="the other sessions")
        assert t.upload_dir(case, str(tmp_path / "remote" / "2-case"), m) is True
        assert "testhost refused a new session" in caplog.text  # it did refuse some
        assert local_manifest(tmp_path / "remote" / "2-case") == m.as_set()
        assert _digest(tmp_path / "remote" / "2-case" / "volume.raw") == _digest(
            case / "volume.raw")
        _all_back(t)
        assert t.connects == 1
    finally:
        for thread in busy:
            thread.join(timeout=30)
        t.channels.master.exit()
        server.stop()


# -- the budget itself ---------------------------------------------------------------------
def test_a_budget_wait_is_bounded_and_says_why():
    budget = ChannelBudget(2, "gpu-host")
    assert budget.take(5) == 2
    t0 = time.monotonic()
    with pytest.raises(TransientError, match=r"no upload channel to gpu-host came free within "
                                             r"0 s: all 2 \(transport.max_channels\) in use"):
        budget.take(1, timeout=0.3)
    assert 0.25 <= time.monotonic() - t0 < 5
    assert budget.take(1, wait=False) == 0  # not waiting: none
    budget.release()
    assert budget.take(3, timeout=1) == 1
    budget.release(2)
    assert budget.free == 2
    with pytest.raises(ValueError, match="more than were taken"):
        budget.release()
    assert budget.free == 2


def test_a_unit_waited_for_comes_when_another_holder_gives_it_back():
    budget = ChannelBudget(1)
    assert budget.take(1) == 1
    threading.Timer(0.2, budget.release).start()
    assert budget.take(1, timeout=10) == 1
    budget.release()
    assert budget.free == 1


class _Chan:
    """A channel of the fake transport: its data is swallowed; its end is the test's word."""

    def __init__(self, fake, argv):
        self.fake, self.argv = fake, argv
        self.closed = self.eof_received = False
        fake.opened.append(self)

    def sendall(self, data):
        if self.fake.send_fails:
            raise BrokenPipeError("the ssh of the stream was killed")

    def shutdown_write(self):
        pass

    def recv_exit_status(self):
        if self.fake.end_fails is not None:
            raise self.fake.end_fails
        return 0

    def close(self):
        self.closed = True
        self.fake.opened.remove(self)


class _Fake(ChannelTransport):
    """A transport with its own fake channels (it is its own `channels`: what the upload's
    channel code uses of them), which open (or fail to) and end (or raise) at the test's
    word."""

    def __init__(self, size: int, fail_open=lambda i: False):
        cfg = SimpleNamespace(name="fake", root="/fake", max_channels=size, command_timeout=5.0)
        super().__init__(cfg, self, sleep=lambda s: None)
        self.opened: list[_Chan] = []
        self.calls = 0
        self.fail_open = fail_open
        self.send_fails = False
        self.end_fails: Exception | None = None

    def guard(self, fn, what):
        return fn()

    def open(self, command):
        i, self.calls = self.calls, self.calls + 1
        if self.fail_open(i):
            raise TransientError(f"channel {i} refused")
        return _Chan(self, command)

    def bulk(self, command, several):
        return self.open(command)

    def drain(self, chan, timeout=None):
        return b"", b""


def _argv(i, n):
    return ["x", str(i)]


def test_units_of_channels_that_fail_to_open_come_back_at_once():
    fake = _Fake(4, fail_open=lambda i: i % 2 == 1)
    opening = Opening(fake, 4, _argv)
    with pytest.raises(TransientError, match="refused"):
        opening.channels()
    assert fake.opened == [] and fake.channel_budget().free == 4


@pytest.mark.parametrize("fault", ["the end raises NeedsLogin", "the end raises a timeout",
                                   "the send breaks", "the progress callback raises"])
def test_units_taken_by_byte_ranges_whose_holder_raises_come_back(tmp_path, fault):
    """The byte ranges of a large file on 4 channels; what ends them raises (as the openssh
    transport's channels do when their master was killed): the error is the upload's, and
    every channel is closed and its unit back, for the next upload to take at once."""
    big = tmp_path / "big.raw"
    with open(big, "wb") as f:
        f.truncate(8 << 20)
    fake = _Fake(4)
    budget = fake.channel_budget()

    def progress(sent, total):
        if fault == "the progress callback raises":
            raise sqlite3.OperationalError("database is locked")

    expected: type[BaseException] = {
        "the end raises NeedsLogin": NeedsLogin,
        "the end raises a timeout": TransientError,
        "the send breaks": TransientError,
        "the progress callback raises": sqlite3.OperationalError,
    }[fault]
    if fault == "the end raises NeedsLogin":
        fake.end_fails = NeedsLogin("fake", 30.0)
    elif fault == "the end raises a timeout":
        fake.end_fails = TransientError("nothing arrived for 600 s")
    fake.send_fails = fault == "the send breaks"
    pieces = upload_ranges.split(str(tmp_path), "/remote/.staging-x", [("big.raw", 0, 8 << 20)],
                                 4)
    with pytest.raises(expected):
        upload_ranges.send_all(fake, pieces, 4, Counter(progress, 8 << 20))
    assert fake.opened == [] and budget.free == 4
    fake.end_fails, fake.send_fails = None, False  # the next upload: all 4 at once
    upload_ranges.send_all(fake, pieces, 4, Counter(None, 8 << 20))
    assert fake.calls == 8 and fake.opened == [] and budget.free == 4


def test_units_of_tar_streams_whose_end_raises_come_back(tmp_path):
    """Tar streams on 3 channels, one more joining later (grow): the master is gone when
    they end; NeedsLogin is the upload's error, and no unit is kept."""
    case = tmp_path / "case"
    case.mkdir()
    for i in range(20):
        (case / f"f{i}").write_bytes(os.urandom(4096))
    m = casefolder.scan(case)
    fake = _Fake(4)
    fake.end_fails = NeedsLogin("fake", 30.0)
    streams = Streams(fake, 3, "/r/.staging-c", "/r/c", "-", "tok", m.as_set())
    streams.grow(4)
    with pytest.raises(NeedsLogin):
        streams.send(case, list(m.entries), Counter(None, m.size_bytes), None)
    assert fake.calls == 4 and fake.opened == [] and fake.channel_budget().free == 4
    streams.abort()  # (after a send: nothing more to end)
    assert fake.channel_budget().free == 4


def test_a_thread_that_cannot_start_gives_the_units_back(monkeypatch):
    fake = _Fake(4)
    started = []
    real = threading.Thread.start

    def start(self):
        if self.name == "caseflow-open" and len(started) == 2:
            raise RuntimeError("can't start new thread")
        started.append(self)
        real(self)
    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        Opening(fake, 4, _argv)
    monkeypatch.undo()
    assert fake.opened == [] and fake.channel_budget().free == 4
