"""One suite, every transport: `local`, `ssh` (against the real sshd) and `openssh` (the
system ssh through a master connection, against an sshd that asks for a one-time code) must
behave alike."""

import os
import shutil
import stat
from pathlib import Path

import pytest

from caseflow import casefolder
from caseflow.config import TransportConfig
from caseflow.errors import PermanentError
from caseflow.transports.local import LocalTransport, local_manifest
from caseflow.transports.openssh import OpenSSHTransport
from caseflow.transports.openssh_master import Master
from caseflow.transports.ssh import ChannelTransport, SSHTransport
from sshd import transport_settings
from sshd_mfa import open_master, openssh_settings

HOSTILE = ["with space", "quote'\"s", "$(touch CANARY)", "`touch CANARY`", "semi;touch CANARY",
           "new\nline", "-leading-dash", "ünïcödé ✓", "tab\tand|pipe&amp"]


@pytest.fixture(scope="session")
def openssh_login(mfa_sshd, tmp_path_factory):
    """The `openssh` transport's settings, with a master opened once (one code) for the
    whole suite."""
    settings = openssh_settings(mfa_sshd, "/unused", control_path=str(
        tmp_path_factory.mktemp("cm") / "cm-%C"))
    master = Master(TransportConfig(**settings))
    open_master(mfa_sshd, master)
    yield settings
    master.exit()


@pytest.fixture(params=["local", "ssh", "openssh"])
def transport(request, tmp_path):
    root = tmp_path / "remote"
    root.mkdir()
    if request.param == "local":
        t = LocalTransport("local", str(root))
    elif request.param == "ssh":
        sshd = request.getfixturevalue("sshd")
        t = SSHTransport(TransportConfig(**transport_settings(sshd, root)))
    else:
        settings = request.getfixturevalue("openssh_login")
        t = OpenSSHTransport(TransportConfig(**{**settings, "root": str(root)}))
    yield t
    t.close()


@pytest.fixture
def case(tmp_path):
    d = tmp_path / "case"
    (d / "nested" / "deeper").mkdir(parents=True)
    (d / "empty").mkdir()
    (d / "top.txt").write_text("top")
    (d / "nested" / "deeper" / "data.bin").write_bytes(os.urandom(70_000))
    for name in HOSTILE:
        (d / "nested" / name).write_text(name)
    os.symlink("top.txt", d / "link-in")
    (d / "script.sh").write_text("#!/bin/sh\n")
    os.chmod(d / "script.sh", 0o755)
    return d


def test_run_passes_every_argument_verbatim(transport, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    os.chdir(cwd)
    res = transport.run(["printf", "%s\\0", *HOSTILE])
    assert res.returncode == 0
    assert res.stdout.split("\0")[:-1] == HOSTILE
    assert list(tmp_path.rglob("CANARY")) == [] and not Path("/root/CANARY").exists()


def test_run_once_passes_every_argument_verbatim_and_reports_exit_code(transport, tmp_path):
    """run_once (a command that must not run twice: a submit) answers like run."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    os.chdir(cwd)
    res = transport.run_once(["sh", "-c", 'printf "%s\\0" "$@"; echo err >&2; exit 3', "x",
                              *HOSTILE])
    assert (res.returncode, res.stderr) == (3, "err\n")
    assert res.stdout.split("\0")[:-1] == HOSTILE
    assert list(tmp_path.rglob("CANARY")) == []


@pytest.mark.parametrize("once", [False, True])
def test_an_argument_that_is_not_utf8_reaches_the_host_byte_for_byte(transport, tmp_path, once):
    """A folder name need not be UTF-8 (Linux names are bytes; Python holds the others as
    surrogates): such an argument reaches the command as its bytes, also on the paramiko
    channel (it raised UnicodeEncodeError there, and the case failed with an internal error:
    found by a review, stop 35)."""
    out = tmp_path / "out.bin"
    name = os.fsdecode(b"case-\xff\xfe-\xc3\xa9")
    run = transport.run_once if once else transport.run
    res = run(["sh", "-c", 'printf %s "$1" > "$2"', "x", name, str(out)])
    assert res.returncode == 0, res
    assert out.read_bytes() == b"case-\xff\xfe-\xc3\xa9"


def test_run_reports_exit_code_and_stderr(transport):
    res = transport.run(["sh", "-c", "echo out; echo err >&2; exit 5"])
    assert (res.returncode, res.stdout, res.stderr) == (5, "out\n", "err\n")


def test_upload_is_verified_complete_and_idempotent(transport, case):
    m = casefolder.scan(case)
    target = transport.path("7-case")
    seen = []
    assert transport.upload_dir(case, target, m, progress=lambda s, t: seen.append((s, t))) is True
    assert local_manifest(target) == m.as_set()
    assert (Path(target) / "nested" / "deeper" / "data.bin").read_bytes() == \
        (case / "nested" / "deeper" / "data.bin").read_bytes()
    assert os.readlink(Path(target) / "link-in") == "top.txt"
    assert os.stat(Path(target) / "script.sh").st_mode & 0o111
    assert [p.name for p in Path(transport.root).iterdir()] == ["7-case"]  # no staging left
    assert seen and seen[-1] == (m.size_bytes, m.size_bytes)
    assert transport.upload_dir(case, target, m) is False


def test_a_rerun_replaces_a_changed_copy_and_half_done_staging(transport, case):
    m = casefolder.scan(case)
    target = Path(transport.path("8-case"))
    staging = target.parent / ".staging-8-case"
    staging.mkdir()
    (staging / "partial").write_text("half")
    target.mkdir()
    (target / "top.txt").write_text("different")
    assert transport.upload_dir(case, str(target), m) is True
    assert local_manifest(target) == m.as_set()
    assert not staging.exists()


def test_checksum_verification_catches_same_size_changes(transport, case):
    m = casefolder.scan(case)
    target = Path(transport.path("9-case"))
    transport.upload_dir(case, str(target), m)
    (target / "top.txt").write_text("TOP")  # same size, other bytes
    if isinstance(transport, ChannelTransport):
        transport.cfg = TransportConfig(**{**transport.cfg.__dict__, "verify": "checksum"})
    else:
        transport.verify = "checksum"
    assert transport.upload_dir(case, str(target), m) is True
    assert (target / "top.txt").read_text() == "top"
    assert transport.upload_dir(case, str(target), m) is False


def test_download_folder_and_file(transport, case, tmp_path):
    m = casefolder.scan(case)
    target = transport.path("10-case")
    transport.upload_dir(case, target, m)
    dest = tmp_path / "results"
    dest.mkdir()
    transport.download(target, dest / "case")
    assert local_manifest(dest / "case") == m.as_set()
    transport.download(target + "/top.txt", dest / "top.txt")
    assert (dest / "top.txt").read_text() == "top"
    assert sorted(p.name for p in dest.iterdir()) == ["case", "top.txt"]
    with pytest.raises(PermanentError, match="does not exist"):
        transport.download(target + "/absent", dest / "absent")


def test_remove_tree(transport, case):
    target = transport.path("11-case")
    transport.upload_dir(case, target, casefolder.scan(case))
    transport.remove_tree(target)
    assert not Path(target).exists()
    transport.remove_tree(target)


def test_a_full_remote_disk_is_a_permanent_error_naming_it(transport, case, tmp_path):
    small = Path(transport.root) / "small"
    small.mkdir()
    if os.system(f"mount -t tmpfs -o size=32k tmpfs {small}") != 0:
        pytest.fail("mounting a tmpfs failed (the tests run as root)")
    try:
        with pytest.raises(PermanentError, match="no space left"):
            transport.upload_dir(case, str(small / "12-case"), casefolder.scan(case))
    finally:
        os.system(f"umount {small}")
    shutil.rmtree(small)


def test_download_only_what_matches(transport, case, tmp_path):
    m = casefolder.scan(case)
    target = transport.path("13-case")
    transport.upload_dir(case, target, m)
    (Path(target) / "output" / "sub").mkdir(parents=True)
    (Path(target) / "output" / "sub" / "r.txt").write_text("r")
    (Path(target) / "run.log").write_text("log")
    dest = tmp_path / "results"
    dest.mkdir()
    transport.download(target, dest / "r", patterns=["output/*", "*.log", "nested/with space"])
    got = sorted(str(p.relative_to(dest / "r")) for p in (dest / "r").rglob("*") if p.is_file())
    assert got == ["nested/with space", "output/sub/r.txt", "run.log"]
    transport.download(target, dest / "none", patterns=["nothing-*"])
    assert list((dest / "none").iterdir()) == []
    assert sorted(p.name for p in dest.iterdir()) == ["none", "r"]


@pytest.mark.parametrize("size", [65_536, 500_000, 3_000_000])
@pytest.mark.parametrize("stderr", [0, 300_000])
def test_large_outputs_arrive_whole(transport, size, stderr):
    # sshd may send the exit status while output is still held back by flow control
    script = (f'import sys; sys.stderr.write("e" * {stderr}); '
              f'sys.stdout.write("".join(chr(97 + i % 26) for i in range({size})))')
    for _ in range(3):
        res = transport.run(["python3", "-c", script])
        assert res.returncode == 0
        assert len(res.stdout) == size and res.stdout[-3:] == "".join(
            chr(97 + i % 26) for i in range(size - 3, size))
        assert res.stderr == "e" * stderr


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_results_are_what_the_job_created_or_changed(transport, case, tmp_path):
    m = casefolder.scan(case)
    target = Path(transport.path("14-case"))
    transport.upload_dir(case, str(target), m)
    assert (target / ".caseflow" / "uploaded").exists()
    # the "job": new files (odd names too), one input rewritten, bookkeeping of its own
    (target / "output" / "sub").mkdir(parents=True)
    (target / "output" / "sub" / "mask.nii").write_bytes(b"m" * 5000)
    for name in HOSTILE:
        (target / "output" / name).write_text(name)
    (target / "top.txt").write_text("TOP, changed by the job")
    (target / ".caseflow" / "job.log").write_text("bookkeeping")
    os.symlink("top.txt", target / "new-link")
    dest = tmp_path / "results"
    dest.mkdir()
    count = transport.fetch_results(str(target), dest / "14-case")
    expected = sorted(["output/sub/mask.nii", "top.txt"] + [f"output/{n}" for n in HOSTILE])
    assert _files(dest / "14-case") == expected and count == len(expected)
    assert (dest / "14-case" / "top.txt").read_text() == "TOP, changed by the job"
    assert list(tmp_path.rglob("CANARY")) == []
    # again (a retried fetch): the same result, replaced whole, no staging left behind
    assert transport.fetch_results(str(target), dest / "14-case") == count
    assert _files(dest / "14-case") == expected
    assert sorted(p.name for p in dest.iterdir()) == ["14-case"]


def test_hard_linked_results_arrive_as_files_of_their_own(transport, case, tmp_path):
    """The results reader takes files and folders only; files the job hard-linked come as
    copies (the remote tar dereferences hard links), by default and by pattern alike."""
    target = Path(transport.path("18-case"))
    transport.upload_dir(case, str(target), casefolder.scan(case))
    (target / "out").mkdir()
    (target / "out" / "a.txt").write_text("linked")
    os.link(target / "out" / "a.txt", target / "out" / "b.txt")
    dest = tmp_path / "results"
    dest.mkdir()
    for name, patterns in (("changed", None), ("by-pattern", ["out/*"])):
        assert transport.fetch_results(str(target), dest / name, patterns=patterns) == 2
        for f in ("a.txt", "b.txt"):
            st = os.lstat(dest / name / "out" / f)
            assert (stat.S_ISREG(st.st_mode), st.st_nlink) == (True, 1)
            assert (dest / name / "out" / f).read_text() == "linked"


def test_results_by_pattern_and_without_an_upload_mark(transport, case, tmp_path):
    m = casefolder.scan(case)
    target = Path(transport.path("15-case"))
    transport.upload_dir(case, str(target), m)
    (target / "out").mkdir()
    (target / "out" / "a.txt").write_text("a")
    dest = tmp_path / "results"
    dest.mkdir()
    # patterns pick files whether the job changed them or not
    transport.fetch_results(str(target), dest / "p", patterns=["out/*", "nested/deeper/*"])
    assert _files(dest / "p") == ["nested/deeper/data.bin", "out/a.txt"]
    # a folder uploaded before there were marks: everything comes home
    shutil.rmtree(target / ".caseflow")
    transport.fetch_results(str(target), dest / "all")
    assert "out/a.txt" in _files(dest / "all") and "top.txt" in _files(dest / "all")
    with pytest.raises(PermanentError, match="does not exist"):
        transport.fetch_results(str(target) + "-absent", dest / "absent")
    assert sorted(p.name for p in dest.iterdir()) == ["all", "p"]


def test_results_and_the_end_of_the_job_log_come_together(transport, case, tmp_path):
    """The log a backend keeps in the case folder comes with the results (one command over
    SSH): its last `limit` bytes as text, not among the result files."""
    target = Path(transport.path("19-case"))
    transport.upload_dir(case, str(target), casefolder.scan(case))
    (target / "out").mkdir()
    (target / "out" / "a.txt").write_text("a")
    log = "".join(f"line {i} \u00e9\n" for i in range(3000))
    (target / ".caseflow" / "job.log").write_text(log)
    dest = tmp_path / "results"
    dest.mkdir()
    count, text = transport.fetch_results_and_tail(
        str(target), dest / "all", None, ".caseflow/job.log", 1_000_000)
    assert (count, _files(dest / "all"), text) == (1, ["out/a.txt"], log)
    count, text = transport.fetch_results_and_tail(
        str(target), dest / "end", ["out/*"], ".caseflow/job.log", 100)
    assert (count, _files(dest / "end")) == (1, ["out/a.txt"])
    assert text == log.encode()[-100:].decode("utf-8", "replace")
    # no log (a job that left none): None, and nothing an earlier fetch left is taken for it
    (target / ".caseflow" / "job.log").unlink()
    count, text = transport.fetch_results_and_tail(
        str(target), dest / "none", None, ".caseflow/job.log", 1000)
    assert (count, _files(dest / "none"), text) == (1, ["out/a.txt"], None)
    assert sorted(p.name for p in dest.iterdir()) == ["all", "end", "none"]
    with pytest.raises(PermanentError, match="does not exist"):
        transport.fetch_results_and_tail(str(target) + "-absent", dest / "absent", None,
                                         ".caseflow/job.log", 1000)


def test_the_upload_mark_is_not_part_of_the_case(transport, case):
    """A re-upload of an unchanged case finds it complete, mark or no mark."""
    m = casefolder.scan(case)
    target = transport.path("16-case")
    assert transport.upload_dir(case, target, m) is True
    assert transport.upload_dir(case, target, m) is False


def test_a_case_larger_than_the_free_space_fails_before_anything_is_sent(transport, tmp_path):
    root = Path(transport.path())
    small = root / "small"
    small.mkdir()
    assert os.system(f"mount -t tmpfs -o size=1m tmpfs {small}") == 0
    try:
        case = tmp_path / "big-case"
        case.mkdir()
        with open(case / "sparse.bin", "wb") as f:
            f.truncate(50 * 1024 * 1024)  # sparse here, 50 MB there
        with pytest.raises(PermanentError, match=r"needs 52\.\d MB but .* has only 1\.\d MB free"):
            transport.upload_dir(case, str(small / "17-case"), casefolder.scan(case))
        assert list(small.iterdir()) == []  # no staging folder, not a byte written
    finally:
        os.system(f"umount {small}")
