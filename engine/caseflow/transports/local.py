"""The `local` transport: the "remote root" is a folder on this machine.

It is the embedded default (no remote host needed) and the reference adapter
the contract tests hold the others to.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from ..casefolder import Manifest
from ..errors import PermanentError, TransientError
from . import RunResult, Transport

_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG,
                     errno.EROFS}


def _os_error(action: str, exc: OSError) -> Exception:
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


def _remove(path: Path) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


class LocalTransport(Transport):
    def __init__(self, name: str, root: str):
        super().__init__(name, root)
        Path(root).mkdir(parents=True, exist_ok=True)

    def upload_dir(self, local_dir: Path, remote_path: str, manifest: Manifest) -> bool:
        final = Path(remote_path)
        staging = final.parent / f".staging-{final.name}"
        expected = manifest.as_set()
        try:
            if final.exists():
                if local_manifest(final) == expected:
                    return False
                shutil.rmtree(final)
            if staging.exists():
                shutil.rmtree(staging)
            shutil.copytree(local_dir, staging, symlinks=True)
            got = local_manifest(staging)
            if got != expected:
                missing = sorted(expected - got)[:3]
                raise TransientError(f"upload of {local_dir} did not verify (differs at "
                                     f"{missing or sorted(got - expected)[:3]}); "
                                     "will upload again")
            os.rename(staging, final)
            return True
        except OSError as exc:
            raise _os_error(f"upload to {final}", exc) from exc

    def run(self, argv: Sequence[str], timeout: float | None = 60.0) -> RunResult:
        try:
            proc = subprocess.run(list(argv), capture_output=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise TransientError(f"{argv[0]} did not finish within {timeout} s") from exc
        except OSError as exc:
            raise _os_error(f"running {argv[0]}", exc) from exc
        return RunResult(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                         proc.stderr.decode("utf-8", "replace"))

    def download(self, remote_path: str, local_path: Path) -> None:
        local_path = Path(local_path)
        staging = local_path.parent / f".staging-{local_path.name}"
        try:
            if os.path.lexists(staging):
                _remove(staging)
            if os.path.isdir(remote_path):
                shutil.copytree(remote_path, staging, symlinks=True)
            else:
                shutil.copy2(remote_path, staging)
            if os.path.lexists(local_path):
                _remove(local_path)
            os.rename(staging, local_path)
        except FileNotFoundError as exc:
            raise PermanentError(f"{remote_path} does not exist on {self.name}") from exc
        except OSError as exc:
            raise _os_error(f"download of {remote_path}", exc) from exc

    def remove_tree(self, remote_path: str) -> None:
        try:
            shutil.rmtree(remote_path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _os_error(f"removing {remote_path}", exc) from exc


__all__ = ["LocalTransport", "local_manifest"]
