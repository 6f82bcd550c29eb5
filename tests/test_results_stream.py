"""Results from a host that lies: crafted tar streams through the real sshd (issue 13, item 10).

The host's `tar` is replaced (first on the remote sessions' PATH) by one that answers with a
crafted stream. Whatever it sends, nothing outside results/<case>/ is created or changed: a hard
link, symbolic links (out, or chained so that a file goes through them), `..`, an absolute
path, another case's folder, devices and fifos are refused, and the case's fetch fails with a
reason naming the member.
"""

import hashlib
import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from caseflow.config import TransportConfig
from caseflow.errors import PermanentError
from caseflow.transports.ssh import SSHTransport
from sshd import transport_settings

CASE = "7-case"
PWNED = b"PWNED by the host\n"


def _member(name, kind=tarfile.REGTYPE, data=b"", link="", device=(0, 0)):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    info.devmajor, info.devminor = device
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def _file(name, data=PWNED):
    return _member(name, data=data)


def _link(name, target):
    return _member(name, tarfile.SYMTYPE, link=target)


# name -> members, in stream order; the names as GNU tar writes them from `find ./7-case`
STREAMS = {
    # passes a check that treats it as a symlink: from its own folder ../../ stays inside the
    # case; tar resolves a hard link from the top, where it is the folder above results/
    "hard link, then a file written through it": [
        _member(f"./{CASE}/a/b/c", tarfile.LNKTYPE, link="../../victim.txt"),
        _file(f"./{CASE}/a/b/c")],
    "hard link alone": [_member(f"./{CASE}/a/b/c", tarfile.LNKTYPE, link="../../victim.txt")],
    # t -> the case folder, s -> t/.. (its parent), u -> s/.. (results/): each looks inside
    "symlinked parent folders, then a file through them": [
        _link(f"./{CASE}/t", "."), _link(f"./{CASE}/s", "t/.."), _link(f"./{CASE}/u", "s/.."),
        _file(f"./{CASE}/u/other-case/result.txt")],
    "symlink out": [_link(f"./{CASE}/etc", "/etc"), _file(f"./{CASE}/etc/caseflow-canary")],
    "symlink up": [_link(f"./{CASE}/up", "../.."), _file(f"./{CASE}/up/victim.txt")],
    "symlink inside": [_file(f"./{CASE}/sub/x", b"x"), _link(f"./{CASE}/d", "sub")],
    "dot-dot in a name": [_file(f"./{CASE}/../victim.txt")],
    "absolute name": [_file("/victim-absolute.txt")],
    "another case's folder": [_file("./other-case/result.txt")],
    "character device": [_member(f"./{CASE}/null", tarfile.CHRTYPE, device=(1, 3))],
    "block device": [_member(f"./{CASE}/disk", tarfile.BLKTYPE, device=(7, 0))],
    "fifo": [_member(f"./{CASE}/pipe", tarfile.FIFOTYPE)],
    "a file in place of the case folder": [_file(f"./{CASE}")],
}


def _stream(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _snapshot(root: Path, skip: Path) -> dict:
    """Every path under `root` but `skip`: its type, mode, links, content or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = os.lstat(path)
            what = os.readlink(path) if stat.S_ISLNK(st.st_mode) else \
                hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
            out[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777,
                                                st.st_nlink, what)
    return out


@pytest.fixture
def lying_host(sshd, tmp_path):
    """The host's tar answers with the file `answer` when it exists; a real sshd session."""
    answer = tmp_path / "answer.tar"
    wrapper = Path(sshd.bin) / "tar"
    wrapper.write_text(f"#!/bin/sh\nif [ -f {answer} ]; then cat {answer}; exit 0; fi\n"
                       f"exec {shutil.which('tar')} \"$@\"\n")
    wrapper.chmod(0o755)
    remote = tmp_path / "remote"
    (remote / CASE / ".caseflow").mkdir(parents=True)
    (remote / CASE / ".caseflow" / "uploaded").touch()
    t = SSHTransport(TransportConfig(**transport_settings(sshd, remote)))
    try:
        yield t, answer
    finally:
        t.close()
        wrapper.unlink()


@pytest.mark.parametrize("case", list(STREAMS))
def test_nothing_the_host_sends_lands_outside_the_cases_results(lying_host, tmp_path, case):
    transport, answer = lying_host
    results = tmp_path / "results"
    (results / "other-case").mkdir(parents=True)
    (results / "other-case" / "result.txt").write_text("another case's result\n")
    (tmp_path / "victim.txt").write_text("a file outside the results folder\n")
    answer.write_bytes(_stream(STREAMS[case]))
    before = _snapshot(tmp_path, tmp_path / "remote")
    with pytest.raises(PermanentError, match="refusing") as err:
        transport.fetch_results(str(tmp_path / "remote" / CASE), results / CASE)
    assert _snapshot(tmp_path, tmp_path / "remote") == before, str(err.value)
    assert not Path("/victim-absolute.txt").exists()
    assert not Path("/etc/caseflow-canary").exists()


def test_the_reason_names_the_member_and_what_it_is(lying_host, tmp_path):
    transport, answer = lying_host
    (tmp_path / "results").mkdir()
    answer.write_bytes(_stream(STREAMS["hard link alone"]))
    with pytest.raises(PermanentError, match=r"refusing '7-case/a/b/c': it is a hard link"):
        transport.fetch_results(str(tmp_path / "remote" / CASE), tmp_path / "results" / CASE)
    answer.write_bytes(_stream(STREAMS["fifo"]))
    with pytest.raises(PermanentError, match=r"refusing '7-case/pipe': it is a fifo"):
        transport.fetch_results(str(tmp_path / "remote" / CASE), tmp_path / "results" / CASE)


@pytest.mark.parametrize("case", ["symlinked parent folders, then a file through them",
                                  "symlink up", "hard link, then a file written through it"])
def test_download_keeps_links_only_when_they_stay_inside(lying_host, tmp_path, case):
    transport, answer = lying_host
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "other-case").mkdir()
    (tmp_path / "results" / "other-case" / "result.txt").write_text("another case's\n")
    (tmp_path / "victim.txt").write_text("outside\n")
    answer.write_bytes(_stream(STREAMS[case]))
    before = _snapshot(tmp_path, tmp_path / "remote")
    with pytest.raises(PermanentError, match="refusing"):
        transport.download(str(tmp_path / "remote" / CASE), tmp_path / "results" / CASE)
    assert _snapshot(tmp_path, tmp_path / "remote") == before
    # a link that stays inside, next to the file it names, is kept by download
    answer.write_bytes(_stream(STREAMS["symlink inside"]))
    transport.download(str(tmp_path / "remote" / CASE), tmp_path / "results" / CASE)
    assert os.readlink(tmp_path / "results" / CASE / "d") == "sub"
    assert (tmp_path / "results" / CASE / "d" / "x").read_bytes() == b"x"
