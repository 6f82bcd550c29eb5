"""Put the pueue emulator (tests/emulators/pueue) on a test's PATH and look at its state.

    state = install(sshd.bin, version="3.4.1")   # sshd.bin/pueue; state in sshd.root/pueue-state
    ...
    stop_tasks(state)                            # teardown: kill every task process

The emulator is copied, not symlinked: it finds its state folder from its own real path
(`pueue-state` beside its folder), so each copy has a private state. With `state_dir`, a small
`pueue` shell wrapper is written instead that points the emulator at that folder through
PUEUE_EMULATOR_STATE (the emulator leaves that variable out of the tasks' `envs`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

EMULATOR = Path(__file__).resolve().parent / "emulators" / "pueue"
STATE_ENV = "PUEUE_EMULATOR_STATE"


def state_path(bin_dir: Path) -> Path:
    """The state folder of an emulator installed in `bin_dir` without `state_dir`."""
    return Path(bin_dir).resolve().parent / "pueue-state"


def set_version(state_dir: Path, version: str) -> None:
    """Make the emulator behave like pueue `version` (3.x or 4.x) from its next invocation."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "emulator.json").write_text(json.dumps({"version": version}) + "\n")


def install(bin_dir: Path, state_dir: Path | None = None, version: str = "4.0.4") -> Path:
    """Install the emulator as `bin_dir/pueue` pretending to be `version`; return its state
    folder (`bin_dir/../pueue-state` unless `state_dir` is given)."""
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    target = bin_dir / "pueue"
    if target.exists() or target.is_symlink():
        target.unlink()
    if state_dir is None:
        shutil.copy2(EMULATOR, target)
        state = state_path(bin_dir)
    else:
        state = Path(state_dir).resolve()
        copy = bin_dir / ".pueue-emulator"
        shutil.copy2(EMULATOR, copy)
        target.write_text("#!/bin/sh\n"
                          f"{STATE_ENV}={shlex.quote(str(state))} exec "
                          f"{shlex.quote(str(copy.resolve()))} \"$@\"\n")
    target.chmod(0o755)
    set_version(state, version)
    return state


def run(state_dir: Path, *args: str, env: dict | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the emulator on `state_dir` directly (no PATH, no SSH): `run(state, "status", "--json")`."""
    full_env = {**os.environ, **(env or {}), STATE_ENV: str(state_dir)}
    return subprocess.run([sys.executable, str(EMULATOR), *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def read_state(state_dir: Path) -> dict:
    """The emulator's internal state (version-neutral; for debugging, not pueue's format)."""
    return json.loads((Path(state_dir) / "state.json").read_text())


def stop_tasks(state_dir: Path) -> None:
    """Kill every task process of this emulator (a simulated daemon restart)."""
    if Path(state_dir).exists():
        run(state_dir, "_emulator", "restart")
