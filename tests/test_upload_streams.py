"""Uploads over several channels at once: tar streams and byte ranges, as many as the round
trip needs, within the channel budget; the last stream to end verifies and renames."""

import io
import os
import subprocess
import tarfile
import threading

import pytest

from caseflow import casefolder
from caseflow.config import TransportConfig
from caseflow.errors import TransientError
from caseflow.transports.local import local_manifest
from caseflow.transports.ssh import SSHTransport
from caseflow.transports.ssh_channels import ParamikoChannels
from caseflow.transports.ssh_upload import ONE_COMMAND_BYTES, listing_digest
from caseflow.transports.tarstream import TarWriter
from caseflow.transports.upload_ranges import RANGE, channels_for
from caseflow.transports.upload_streams import UNPACK, stream_count
from sshd import transport_settings


def intercept(t, wrapper) -> None:
    """Every channel the upload opens (commands and data alike) goes through
    wrapper(argv, open), `open` opening it as the transport would."""
    channel, bulk = t.channel, t.bulk_channel
    t.channel = lambda argv: wrapper(argv, channel)
    t.bulk_channel = lambda argv, several: wrapper(argv, lambda a: bulk(a, several))


def make(sshd, root, **extra) -> SSHTransport:
    return SSHTransport(TransportConfig(**transport_settings(sshd, root, **extra)))


@pytest.fixture
def case(tmp_path):
    d = tmp_path / "case"
    for i in range(300):
        sub = d / f"d{i % 7}" / "deeper"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:03d}.bin").write_bytes(os.urandom(1000 + i * 37))
    (d / "big.raw").write_bytes(os.urandom(5_000_000))
    (d / "empty").mkdir()
    return d


def test_channels_follow_the_round_trip_within_the_limit():
    assert channels_for(0.0, 8) == 4            # loopback: several overlap writers and sshd
    assert channels_for(0.010, 8) == 6          # 1 GiB/s x 10 ms over 2 MiB windows
    assert channels_for(0.050, 8) == 8          # capped
    assert channels_for(0.050, 1) == 1


def test_stream_count(case):
    entries = casefolder.scan(case).entries
    assert stream_count(0.0, case, entries, 8) == 1
    assert stream_count(0.050, case, entries, 8) == 1  # ~6 MB: one stream per 4 MiB at most
    many = [e for e in entries if e.kind == "f"] * 2000  # as if there were much more data
    assert stream_count(0.0, case, many, 8) == 4  # loopback: several tars overlap
    assert stream_count(0.0, case, many, 3) == 3  # within the channel budget
    assert stream_count(0.050, case, many, 8) == 8


def test_a_folder_its_owner_cannot_write_keeps_one_stream(case):
    entries = casefolder.scan(case).entries
    many = [e for e in entries if e.kind == "f"] * 2000  # as if there were much more data
    assert stream_count(0.050, case, many + list(entries), 8) > 1
    os.chmod(case / "d3", 0o555)
    try:
        assert stream_count(0.050, case, many + list(entries), 8) == 1
    finally:
        os.chmod(case / "d3", 0o755)


@pytest.mark.parametrize("streams, large", [(4, 10**9), (3, 1_000_000)])
def test_several_streams_and_ranges_make_one_verified_copy(sshd, tmp_path, case, monkeypatch,
                                                           streams, large):
    monkeypatch.setattr("caseflow.transports.ssh_upload.stream_count",
                        lambda *a: streams)
    t = make(sshd, tmp_path / "remote", large_file_bytes=large, max_channels=3)
    (tmp_path / "remote").mkdir()
    opened, most = [0], [0]
    lock = threading.Lock()

    def counting(argv, channel):
        chan = channel(argv)
        if argv[2] not in (UNPACK, RANGE):  # a command, not data: outside the budget
            return chan
        with lock:
            opened[0] += 1
            most[0] = max(most[0], opened[0])
        close = chan.close

        def closing():
            with lock:
                opened[0] -= 1
            close()
        chan.close = closing
        return chan
    intercept(t, counting)
    m = casefolder.scan(case)
    target = tmp_path / "remote" / "5-case"
    assert t.upload_dir(case, str(target), m) is True
    assert local_manifest(target) == m.as_set()
    assert (target / "big.raw").read_bytes() == (case / "big.raw").read_bytes()
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == ["5-case"]
    assert 2 <= most[0] <= 3  # the channel budget held, streams and ranges together
    assert t.upload_dir(case, str(target), m) is False
    t.close()


def test_of_streams_ending_at_once_exactly_one_renames(tmp_path):
    """The unpack script as sent, four at once on the same staging folder, again and again:
    one stream renames, the others say they streamed, none fails."""
    for attempt in range(15):
        staging, target = tmp_path / f".staging-{attempt}", tmp_path / f"{attempt}"
        (staging / "sub").mkdir(parents=True)
        (staging / "sub" / "f").write_text("x")
        digest = listing_digest({("sub", "d", 0), ("sub/f", "f", 1)})
        procs = [subprocess.Popen(["sh", "-c", UNPACK, "caseflow", str(staging), str(target),
                                   digest, f"t{attempt}", str(i)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for i in range(4)]
        for p in procs:
            p.stdin.write(b"4\n" + bytes(1024))  # 4 streams; an empty tar stream: its end
            p.stdin.close()
        results = [(p.wait(), p.stdout.read().decode(), p.stderr.read().decode())
                   for p in procs]
        assert [r[0] for r in results] == [0, 0, 0, 0], results
        assert sorted(r[1] for r in results) == ["committed\n"] + ["streamed\n"] * 3, results
        assert (target / "sub" / "f").read_text() == "x" and not staging.exists()
        assert not list((target / ".caseflow").glob("done-*"))
        assert not list((target / ".caseflow").glob("commit-*"))


def test_streams_opened_before_the_prepare_answer_are_ended_when_the_copy_is_there(
        sshd, tmp_path, case, monkeypatch):
    """A complete copy is already in place: the streams opened meanwhile end unsent and
    leave no staging folder."""
    monkeypatch.setattr("caseflow.transports.ssh_upload.stream_count", lambda *a: 3)
    t = make(sshd, tmp_path / "remote")
    (tmp_path / "remote").mkdir()
    m = casefolder.scan(case)
    target = tmp_path / "remote" / "6-case"
    assert t.upload_dir(case, str(target), m) is True
    assert t.upload_dir(case, str(target), m) is False
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == ["6-case"]
    t.close()



def test_a_stream_that_finds_the_rename_taken_leaves_it_to_the_other(tmp_path):
    """Two streams end at once and both see every stream done: the one that finds the other's
    lock says it streamed and ends well, renaming nothing."""
    staging, target = tmp_path / ".staging-x", tmp_path / "x"
    (staging / ".caseflow").mkdir(parents=True)
    for i in (0, 1, 2):
        (staging / ".caseflow" / f"done-tok-{i}").touch()
    (staging / ".caseflow" / "commit-tok").touch()  # the other stream took it
    res = subprocess.run(["sh", "-c", UNPACK, "caseflow", str(staging), str(target),
                          listing_digest(set()), "tok", "3"], input=b"4\n" + bytes(1024),
                         capture_output=True)
    assert (res.returncode, res.stdout, res.stderr) == (0, b"streamed\n", b"")
    assert staging.is_dir() and not target.exists()


def test_uploads_at_once_share_the_channels_without_waiting_for_each_other(
        sshd, tmp_path, case, monkeypatch):
    """Two uploads want 4 streams each of a budget of 2: each takes what is free and goes on
    (waiting for the rest of a share while holding some would wait forever)."""
    monkeypatch.setattr("caseflow.transports.ssh_upload.stream_count", lambda *a: 4)
    t = make(sshd, tmp_path / "remote", max_channels=2, large_file_bytes=1_000_000)
    (tmp_path / "remote").mkdir()
    m = casefolder.scan(case)
    done = []

    def upload(i):
        done.append(t.upload_dir(case, str(tmp_path / "remote" / f"{i}-case"), m))
    threads = [threading.Thread(target=upload, args=(i,), daemon=True) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert done == [True, True, True]
    for i in range(3):
        assert local_manifest(tmp_path / "remote" / f"{i}-case") == m.as_set()
    assert t.channel_budget().free == 2
    t.close()


@pytest.fixture
def tiny(tmp_path):
    """A case well below ONE_COMMAND_BYTES."""
    d = tmp_path / "tiny"
    (d / "scans").mkdir(parents=True)
    (d / "metadata.txt").write_text("case 1\n")
    (d / "scans" / "slice_001.raw").write_bytes(os.urandom(2048))
    return d


def test_a_small_case_is_one_command(sshd, tmp_path, tiny):
    """Its one stream prepares the staging folder, unpacks, verifies and renames; a copy
    already in place is found by the same command and kept."""
    t = make(sshd, tmp_path / "remote")
    m = casefolder.scan(tiny)
    assert m.size_bytes <= ONE_COMMAND_BYTES
    target = tmp_path / "remote" / "7-tiny"
    before = t.commands
    assert t.upload_dir(tiny, str(target), m) is True
    assert t.commands - before == 1
    assert local_manifest(target) == m.as_set()
    assert (target / "scans" / "slice_001.raw").read_bytes() == \
        (tiny / "scans" / "slice_001.raw").read_bytes()
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == ["7-tiny"]
    marks = sorted(p.name for p in (target / ".caseflow").iterdir())
    assert "uploaded" in marks and not [n for n in marks if n.startswith(("done-", "commit-"))]
    marked = (target / ".caseflow" / "uploaded").stat().st_mtime_ns
    before = t.commands
    assert t.upload_dir(tiny, str(target), m) is False
    assert t.commands - before == 1
    assert (target / ".caseflow" / "uploaded").stat().st_mtime_ns == marked  # not sent again
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == ["7-tiny"]
    t.close()


def test_a_small_case_starts_from_an_empty_staging_folder(sshd, tmp_path, tiny):
    """What an earlier attempt left (a file cut short, one the case no longer has) is not
    kept: the copy verifies against the case as it is now."""
    remote = tmp_path / "remote"
    staging = remote / ".staging-8-tiny"
    (staging / "scans").mkdir(parents=True)
    (staging / "scans" / "slice_001.raw").write_bytes(b"cut")
    (staging / "gone.txt").write_text("removed from the case since")
    t = make(sshd, remote)
    m = casefolder.scan(tiny)
    assert t.upload_dir(tiny, str(remote / "8-tiny"), m) is True
    assert local_manifest(remote / "8-tiny") == m.as_set()
    assert not staging.exists()
    t.close()


def test_a_small_case_on_a_target_that_differs_replaces_it(sshd, tmp_path, tiny):
    """A folder of that name that is not this copy (another run's, or damaged) is replaced,
    as a two-command upload would replace it."""
    remote = tmp_path / "remote"
    (remote / "9-tiny").mkdir(parents=True)
    (remote / "9-tiny" / "metadata.txt").write_text("something else\n")
    t = make(sshd, remote)
    m = casefolder.scan(tiny)
    assert t.upload_dir(tiny, str(remote / "9-tiny"), m) is True
    assert local_manifest(remote / "9-tiny") == m.as_set()
    assert (remote / "9-tiny" / "metadata.txt").read_text() == "case 1\n"
    t.close()


def test_the_round_trip_is_measured_only_where_the_channels_depend_on_it(sshd, tmp_path, case,
                                                                          monkeypatch):
    """A case whose streams are as many whatever the round trip (here ~6 MB: one per 4 MiB at
    most) goes without measuring it: a round trip less before its data. A large file's
    channels follow the round trip, so with one it is measured, after the prepare command's
    channel has opened (one request: the opening has waited out the login's late answers)."""
    requests = []

    def measured(self):
        requests.append(self._warm is not None)
        return real(self)

    real = ParamikoChannels.round_trip
    monkeypatch.setattr(ParamikoChannels, "round_trip", measured)
    t = make(sshd, tmp_path / "remote")
    m = casefolder.scan(case)
    assert t.upload_dir(case, str(tmp_path / "remote" / "a"), m) is True
    assert requests == []
    t.close()
    t = make(sshd, tmp_path / "remote", large_file_bytes=1_000_000)
    assert t.upload_dir(case, str(tmp_path / "remote" / "b"), m) is True
    assert requests == [True]  # a session was already open on the connection
    assert local_manifest(tmp_path / "remote" / "b") == m.as_set()
    t.close()


@pytest.mark.parametrize("max_channels", [8, 2])
def test_streams_opened_once_the_round_trip_is_known_join_the_first(sshd, tmp_path, case,
                                                                    monkeypatch, max_channels):
    """The first streams open with the prepare command; more, opened once the round trip is
    measured (as many as the budget has free), join them as they open and take what is left
    of the files: one verified copy, renamed once, whatever the number that joined."""
    monkeypatch.setattr("caseflow.transports.ssh_upload.needs_round_trip", lambda *a: True)
    monkeypatch.setattr("caseflow.transports.ssh_upload.stream_count",
                        lambda rtt, *a: 4 if rtt else 1)
    t = make(sshd, tmp_path / "remote", max_channels=max_channels)
    (tmp_path / "remote").mkdir()
    streams = []

    def counting(argv, channel):
        if argv[2] == UNPACK:
            streams.append(argv[8])  # the stream's index
        return channel(argv)
    intercept(t, counting)
    m = casefolder.scan(case)
    target = tmp_path / "remote" / "6-case"
    assert t.upload_dir(case, str(target), m) is True
    assert local_manifest(target) == m.as_set()
    for p in case.rglob("*.bin"):
        assert (target / p.relative_to(case)).read_bytes() == p.read_bytes()
    assert sorted(streams) == [str(i) for i in range(min(4, max_channels))]
    assert sorted(p.name for p in (tmp_path / "remote").iterdir()) == ["6-case"]
    assert not [p for p in (target / ".caseflow").iterdir()
                if p.name.startswith(("done-", "commit-"))]
    t.close()


def test_a_stream_that_fails_to_join_fails_the_attempt_and_the_next_one_completes(
        sshd, tmp_path, case, monkeypatch):
    """The streams' count included it, so no stream can verify without it: the attempt fails
    (transient), nothing is renamed, and the next attempt makes the copy."""
    monkeypatch.setattr("caseflow.transports.ssh_upload.needs_round_trip", lambda *a: True)
    monkeypatch.setattr("caseflow.transports.ssh_upload.stream_count",
                        lambda rtt, *a: 4 if rtt else 1)
    t = make(sshd, tmp_path / "remote")
    (tmp_path / "remote").mkdir()
    refuse = [True]

    def refusing(argv, channel):
        if refuse[0] and argv[2] == UNPACK and argv[8] == "2":
            raise TransientError("refused for the test")
        return channel(argv)
    intercept(t, refusing)
    m = casefolder.scan(case)
    target = tmp_path / "remote" / "7-case"
    with pytest.raises(TransientError, match="refused for the test"):
        t.upload_dir(case, str(target), m)
    assert not target.exists()
    refuse[0] = False
    assert t.upload_dir(case, str(target), m) is True
    assert local_manifest(target) == m.as_set()
    t.close()


def test_a_stream_makes_the_folders_of_its_files_itself(tmp_path):
    """Streams take the files as they come, so a file's folder may be in another stream: each
    stream sends the folders above its files first (GNU tar fails a file whose folder another
    tar makes at that moment), once per stream, with their own mode."""
    d = tmp_path / "case"
    (d / "a" / "b").mkdir(parents=True)
    (d / "a" / "b" / "f1").write_bytes(b"one")
    (d / "a" / "b" / "f2").write_bytes(b"two")
    os.chmod(d / "a", 0o750)
    entries = [e for e in casefolder.scan(d).entries if e.kind == "f"]  # no folder entries
    data = b"".join(bytes(view) for view, _ in TarWriter().chunks(str(d), entries, None))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [(m.name, m.type, m.mode) for m in tar.getmembers()]
    assert members == [("a", tarfile.DIRTYPE, 0o750), ("a/b", tarfile.DIRTYPE, 0o755),
                       ("a/b/f1", tarfile.REGTYPE, 0o644), ("a/b/f2", tarfile.REGTYPE, 0o644)]
