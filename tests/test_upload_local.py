"""Case folder checks and the local transport's staged, verified upload."""

import os

import pytest

from caseflow import casefolder
from caseflow.errors import PermanentError
from caseflow.transports.local import LocalTransport, local_manifest


@pytest.fixture
def case(tmp_path):
    d = tmp_path / "case"
    (d / "a" / "b").mkdir(parents=True)
    (d / "top.txt").write_text("top")
    (d / "a" / "b" / "deep.bin").write_bytes(os.urandom(5000))
    (d / "a" / "empty").mkdir()
    os.symlink("top.txt", d / "link")
    return d


def test_manifest_lists_files_folders_and_inner_links(case):
    m = casefolder.scan(case)
    assert m.as_set() == {("a", "d", 0), ("a/b", "d", 0), ("a/b/deep.bin", "f", 5000),
                          ("a/empty", "d", 0), ("link", "l", 0), ("top.txt", "f", 3)}
    assert (m.file_count, m.size_bytes) == (2, 5003)


@pytest.mark.parametrize("make, words", [
    (lambda d: os.symlink("/etc/passwd", d / "escape"), "outside the case folder"),
    (lambda d: os.symlink("../../x", d / "a" / "up"), "outside the case folder"),
    (lambda d: os.symlink("nothing-here", d / "dangling"), "broken symlink"),
    (lambda d: os.mkfifo(d / "pipe"), "a fifo"),
    (lambda d: (d / ".caseflow").mkdir(), "reserved"),
])
def test_what_cannot_be_sent_is_named(case, make, words):
    make(case)
    with pytest.raises(PermanentError, match=words):
        casefolder.scan(case)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(PermanentError, match="no files"):
        casefolder.scan(tmp_path / "empty")
    with pytest.raises(PermanentError, match="no longer exists"):
        casefolder.scan(tmp_path / "gone")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PermanentError, match="not a folder"):
        casefolder.scan(tmp_path / "file")


@pytest.mark.parametrize("text, words", [
    ("group: gpu_z\n", "unknown group 'gpu_z'"),
    ("group: [1]\n", "expected a group name"),
    ("colour: red\n", "unknown key 'colour'"),
    ("- a list\n", "expected a mapping"),
    ("priority: high\n", "priority: expected a whole number"),
    ("priority: 5000\n", "priority: expected a whole number"),
    ("group: [unclosed\n", "not valid YAML"),
])
def test_case_file_mistakes(tmp_path, text, words):
    (tmp_path / "case.yaml").write_text(text)
    with pytest.raises(PermanentError, match=words):
        casefolder.read_case_file(tmp_path, ["gpu_a", "gpu_b"], "gpu_a")


def test_case_file_group(tmp_path):
    assert casefolder.read_case_file(tmp_path, ["gpu_a"], "gpu_a") == {"group": "gpu_a",
                                                                       "priority": 0}
    (tmp_path / "case.yaml").write_text("group: gpu_b\npriority: 7\n")
    assert casefolder.read_case_file(tmp_path, ["gpu_a", "gpu_b"], "gpu_a") == {
        "group": "gpu_b", "priority": 7}


def test_upload_is_staged_verified_and_idempotent(case, tmp_path):
    t = LocalTransport("local", str(tmp_path / "remote"))
    m = casefolder.scan(case)
    target = t.path("1-case")
    assert t.upload_dir(case, target, m) is True
    assert local_manifest(target) == m.as_set()
    assert not (tmp_path / "remote" / ".staging-1-case").exists()
    assert os.readlink(os.path.join(target, "link")) == "top.txt"
    # a re-run finds the verified copy and skips
    before = os.stat(os.path.join(target, "top.txt")).st_ino
    assert t.upload_dir(case, target, m) is False
    assert os.stat(os.path.join(target, "top.txt")).st_ino == before


def test_leftovers_of_a_crashed_upload_are_replaced(case, tmp_path):
    t = LocalTransport("local", str(tmp_path / "remote"))
    m = casefolder.scan(case)
    staging = tmp_path / "remote" / ".staging-1-case"
    staging.mkdir(parents=True)
    (staging / "half.bin").write_text("half")
    target = tmp_path / "remote" / "1-case"
    target.mkdir()
    (target / "output.txt").write_text("from an earlier run")  # a retry: start clean
    assert t.upload_dir(case, str(target), m) is True
    assert local_manifest(target) == m.as_set()
    assert not staging.exists()


def test_remove_tree(tmp_path):
    t = LocalTransport("local", str(tmp_path / "remote"))
    d = tmp_path / "remote" / "x"
    (d / "y").mkdir(parents=True)
    t.remove_tree(str(d))
    assert not d.exists()
    t.remove_tree(str(d))  # absent: no error


def test_download_file_and_folder_atomically(case, tmp_path):
    t = LocalTransport("local", str(case.parent))
    dest = tmp_path / "results"
    dest.mkdir()
    t.download(str(case / "top.txt"), dest / "top.txt")
    assert (dest / "top.txt").read_text() == "top"
    t.download(str(case / "a"), dest / "a")
    assert (dest / "a" / "b" / "deep.bin").stat().st_size == 5000
    (case / "a" / "new.txt").write_text("new")
    t.download(str(case / "a"), dest / "a")  # replaces the earlier copy
    assert (dest / "a" / "new.txt").exists()
    assert sorted(p.name for p in dest.iterdir()) == ["a", "top.txt"]  # no staging left
    with pytest.raises(PermanentError, match="does not exist"):
        t.download(str(case / "absent"), dest / "absent")
