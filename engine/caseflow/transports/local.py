"""The `local` transport: the "remote root" is a folder on this machine.

It is the embedded default (no remote host needed) and the reference adapter
the contract tests hold the others to.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..casefolder import Manifest
from ..config.reader import Section, can_make
from ..errors import PermanentError, TransientError
from . import (
    BOOKKEEPING,
    UPLOADED_MARKER,
    RunResult,
    Transport,
    TransportAdapter,
    TransportConfig,
    check_room,
    mark_uploaded,
    remove_local,
)

_PERMANENT_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.ENAMETOOLONG,
    errno.EROFS,
}


def _os_error(action: str, exc: OSError) -> Exception:
    if isinstance(exc, shutil.Error):  # copytree collects the errors of single files
        reasons = (
            [str(e[2]) for e in exc.args[0]]
            if exc.args and isinstance(exc.args[0], list)
            else [str(exc)]
        )
        if any("No space left" in r or "Disk quota" in r for r in reasons):
            return PermanentError(f"{action}: no space left on the remote side")
        if any("Permission denied" in r or "Read-only" in r for r in reasons):
            return PermanentError(f"{action}: {reasons[0][:300]}")
        return TransientError(f"{action}: {reasons[0][:300]}")
    message = f"{action}: {exc.strerror or exc} ({exc.filename or ''})".replace(" ()", "")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return PermanentError(f"{action}: no space left on the remote side")
    if exc.errno in _PERMANENT_ERRNOS:
        return PermanentError(message)
    return TransientError(message)


def local_manifest(path: Path) -> set[tuple[str, str, int]]:
    """What is at `path`, in the manifest's terms (for verifying an upload)."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(path):
        rel_dir = os.path.relpath(dirpath, path)
        if rel_dir == "." and BOOKKEEPING in dirnames:
            dirnames.remove(BOOKKEEPING)  # caseflow's own files, not the case's
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(full)
            if os.path.islink(full):
                out.add((rel, "l", 0))
            elif os.path.isdir(full):
                out.add((rel, "d", 0))
            else:
                out.add((rel, "f", st.st_size))
    return out


def _copy_matching(src: Path, dest: Path, patterns: Sequence[str]) -> None:
    if not src.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder", str(src))
    dest.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(src):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, src)
            if any(fnmatch.fnmatchcase(f"./{rel}", f"./{p}") for p in patterns):
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(full, target, follow_symlinks=False)


_CHUNK = 8 << 20  # bytes copied between two progress reports


def _counting_copy(progress, total: int):
    """A `copytree` copy function that reports bytes copied as they go, not only at the
    end (a 1.5 GB case showed nothing for its 3 s); in-kernel copy, as shutil's own."""
    sent = [0]

    def copy(src, dst, *, follow_symlinks=True):
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while True:
                try:
                    n = os.sendfile(fout.fileno(), fin.fileno(), None, _CHUNK)
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    data = fin.read(_CHUNK)  # a file system sendfile cannot write to
                    fout.write(data)
                    n = len(data)
                if not n:
                    break
                sent[0] += n
                progress(sent[0], total)
        shutil.copystat(src, dst, follow_symlinks=follow_symlinks)
        return dst

    return copy


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class LocalTransport(Transport):
    def __init__(self, name: str, root: str, verify: str = "size"):
        super().__init__(name, root)
        self.verify = verify  # the root is made by the first upload: `check` makes nothing

    def _same(self, local_dir: Path, copy: Path, expected) -> bool:
        if local_manifest(copy) != expected:
            return False
        if self.verify != "checksum":
            return True
        return all(
            _sha256(local_dir / p) == _sha256(copy / p) for p, kind, _ in expected if kind == "f"
        )

    def upload_dir(
        self, local_dir: Path, remote_path: str, manifest: Manifest, progress=None
    ) -> bool:
        final = Path(remote_path)
        staging = final.parent / f".staging-{final.name}"
        expected = manifest.as_set()
        try:
            if final.exists():
                if self._same(Path(local_dir), final, expected):
                    return False
                shutil.rmtree(final)
            if staging.exists():
                shutil.rmtree(staging)
            final.parent.mkdir(parents=True, exist_ok=True)
            check_room(manifest, shutil.disk_usage(final.parent).free, str(final.parent))
            shutil.copytree(
                local_dir,
                staging,
                symlinks=True,
                copy_function=_counting_copy(progress, manifest.size_bytes)
                if progress
                else shutil.copy2,
            )
            if not self._same(Path(local_dir), staging, expected):
                got = local_manifest(staging)
                diff = sorted((expected - got) | (got - expected))[:3]
                raise TransientError(
                    f"upload of {local_dir} did not verify (differs at "
                    f"{diff or 'checksums'}); will upload again"
                )
            mark_uploaded(staging)
            os.rename(staging, final)
            if progress:
                progress(manifest.size_bytes, manifest.size_bytes)
            return True
        except (OSError, TransientError) as exc:
            shutil.rmtree(staging, ignore_errors=True)  # never leave a half copy filling the disk
            if isinstance(exc, TransientError):
                raise
            raise _os_error(f"upload to {final}", exc) from exc

    def run(self, argv: Sequence[str], timeout: float | None = 60.0) -> RunResult:
        try:
            proc = subprocess.run(
                list(argv), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise TransientError(f"{argv[0]} did not finish within {timeout} s") from exc
        except OSError as exc:
            raise _os_error(f"running {argv[0]}", exc) from exc
        return RunResult(
            proc.returncode,
            proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"),
        )

    def download(
        self, remote_path: str, local_path: Path, patterns: Sequence[str] | None = None
    ) -> None:
        local_path = Path(local_path)
        staging = local_path.parent / f".staging-{local_path.name}"
        try:
            if os.path.lexists(staging):
                remove_local(staging)
            if patterns is not None:
                _copy_matching(Path(remote_path), staging, patterns)
            elif os.path.isdir(remote_path):
                shutil.copytree(remote_path, staging, symlinks=True)
            else:
                shutil.copy2(remote_path, staging)
            if os.path.lexists(local_path):
                remove_local(local_path)
            os.rename(staging, local_path)
        except FileNotFoundError as exc:
            raise PermanentError(f"{remote_path} does not exist on {self.name}") from exc
        except OSError as exc:
            raise _os_error(f"download of {remote_path}", exc) from exc

    def fetch_results_and_tail(
        self,
        remote_path: str,
        local_path: Path,
        patterns: Sequence[str] | None,
        tail: str,
        limit: int,
    ) -> tuple[int, str | None]:
        """The tail read here (no process), then the results."""
        try:
            with open(Path(remote_path) / tail, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
                text: str | None = f.read(limit).decode("utf-8", "surrogateescape")
        except OSError:
            text = None
        return self.fetch_results(remote_path, local_path, patterns), text

    def fetch_results(
        self, remote_path: str, local_path: Path, patterns: Sequence[str] | None = None
    ) -> int:
        src, local_path = Path(remote_path), Path(local_path)
        staging = local_path.parent / f".staging-{local_path.name}"
        try:
            if not src.is_dir():
                raise FileNotFoundError(errno.ENOENT, "no such folder", str(src))
            marker = src / UPLOADED_MARKER
            since = marker.stat().st_ctime_ns if not patterns and marker.exists() else None
            if os.path.lexists(staging):
                remove_local(staging)
            staging.mkdir(parents=True)
            count = 0
            for dirpath, dirnames, filenames in os.walk(src):
                if dirpath == str(src) and BOOKKEEPING in dirnames:
                    dirnames.remove(BOOKKEEPING)
                for name in filenames:
                    full = os.path.join(dirpath, name)
                    st = os.lstat(full)
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    rel = os.path.relpath(full, src)
                    if patterns and not any(
                        fnmatch.fnmatchcase(f"./{rel}", f"./{p}") for p in patterns
                    ):
                        continue
                    if since is not None and st.st_ctime_ns <= since:
                        continue
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(full, target)
                    count += 1
            if os.path.lexists(local_path):
                remove_local(local_path)
            os.rename(staging, local_path)
            return count
        except FileNotFoundError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise PermanentError(f"{remote_path} does not exist on {self.name}") from exc
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # room can be made: try again later
                raise TransientError(
                    f"fetching results into {local_path.parent}: no space left on the device"
                ) from exc
            raise _os_error(f"fetching results from {remote_path}", exc) from exc

    def remove_tree(self, remote_path: str) -> None:
        try:
            shutil.rmtree(remote_path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _os_error(f"removing {remote_path}", exc) from exc


@dataclass(frozen=True)
class LocalConfig(TransportConfig):
    """`kind: local`: the root is a folder here (relative to the config file's folder)."""

    def local_folders(self) -> list[tuple[str, Path]]:
        return [("transport.root", Path(self.root))]


def read_config(section: Section) -> LocalConfig:
    tr = section.reader
    name = section.name("local")
    tr.finish()
    root = section.path(section.core["root"])
    can_make(tr, "root", root)
    return LocalConfig(**{**section.core, "root": str(root)}, name=name)


ADAPTER = TransportAdapter(
    config=LocalConfig,
    read=read_config,
    open=lambda cfg: LocalTransport(cfg.name, cfg.root, verify=cfg.verify),
)

__all__ = ["ADAPTER", "LocalConfig", "LocalTransport", "local_manifest"]
