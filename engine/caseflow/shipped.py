"""The files caseflow carries besides its code: the example configurations, the systemd unit,
the logrotate file, the Prometheus rules, the Grafana dashboard, the docs and the machine spec.

A source checkout has them where the repository keeps them (config/, docs/, specs/); pip and
pipx install them under share/caseflow/ of the environment they install into (the data-files of
pyproject.toml), in the same layout, so the docs' links to ../config/ lead there too. `root()`
finds the one in use; `caseflow files`, `caseflow init` and `caseflow help` hand them out.
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

from .errors import CaseflowError

SPEC = "specs/case_machine.yaml"  # every root has it: how a root is recognised
CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when run from a clone
# what is shipped, as pyproject.toml's data-files name it (tests/test_service.py compares an
# install's files with the repository's through this list)
PATTERNS = (
    "config/*.yaml",
    "config/caseflow.service",
    "config/caseflow.logrotate",
    "config/prometheus/*.yml",
    "config/grafana/*.json",
    "docs/*.md",
    "docs/*.png",
    SPEC,
)
# `caseflow init --example NAME`: the common setups, each a complete example of config/
EXAMPLES = {
    "local": ("config/local.yaml", "this machine only: a folder as the remote, the demo job"),
    "ssh-pueue": ("config/config.yaml", "one GPU host over SSH whose jobs go to pueue"),
    "slurm": ("config/slurm.yaml", "a Slurm cluster's login node over SSH"),
    "gridengine": ("config/gridengine.yaml", "a Grid Engine submit host over SSH"),
    "multi-host": ("config/multi_host.yaml", "several GPU hosts over SSH, sharing the cases"),
}
# what each file of config/ is, for `caseflow files` (the docs are listed by `caseflow help`)
PURPOSES = {
    "config/caseflow.service": "the systemd unit (caseflow help service)",
    "config/caseflow.logrotate": "logrotate(8) for log.file (caseflow help service)",
    "config/prometheus/caseflow-alerts.yml": "Prometheus alert rules (caseflow help status-page)",
    "config/prometheus/caseflow-alerts.test.yml": "their tests for promtool test rules",
    "config/grafana/caseflow-dashboard.json": "a Grafana dashboard of the metrics",
    SPEC: "the case state machine (caseflow diagram draws it)",
    **{path: f"example ({name}): {text}" for name, (path, text) in EXAMPLES.items()},
}


def _installed() -> list[Path]:
    """The roots the installed distribution recorded (pip, pipx: share/caseflow of wherever it
    installed, a venv, ~/.local or /usr/local)."""
    from importlib import metadata

    try:
        files = metadata.distribution("caseflow").files or []
    except metadata.PackageNotFoundError:
        return []
    tail = ("share", "caseflow", *PurePosixPath(SPEC).parts)
    return [
        Path(f.locate()).resolve().parents[1]
        for f in files
        if PurePosixPath(str(f)).parts[-len(tail) :] == tail
    ]


def roots() -> list[Path]:
    """Where the shipped files may be, in the order they are looked for."""
    return [CHECKOUT, *_installed(), Path(sys.prefix) / "share" / "caseflow"]


def root() -> Path:
    """The folder that holds the shipped files (its config/, docs/, specs/)."""
    for path in roots():
        if (path / SPEC).is_file():
            return path
    raise CaseflowError(
        "cannot find the files caseflow ships (looked in: "
        + ", ".join(map(str, roots()))
        + "); install caseflow again (pip install, pipx install)"
    )


def listing() -> list[str]:
    """Every shipped file, as a path relative to the root (config/caseflow.service, ...)."""
    base = root()
    found = {p.relative_to(base).as_posix() for pattern in PATTERNS for p in base.glob(pattern)}
    return sorted(found)


def topics() -> dict[str, Path]:
    """The docs by topic, the name `caseflow help TOPIC` takes: service for docs/service.md."""
    return {Path(name).stem: root() / name for name in listing() if name.endswith(".md")}


def find(name: str) -> Path:
    """A shipped file by its path (config/caseflow.service) or, when that is unique, its file
    name (caseflow.service)."""
    names = listing()
    wanted = name.strip().removeprefix("./")
    matches = [n for n in names if n == wanted] or [
        n for n in names if PurePosixPath(n).name == wanted
    ]
    if len(matches) == 1:
        return root() / matches[0]
    if matches:
        raise CaseflowError(f"{name!r} names {len(matches)} files: {', '.join(matches)}; give one")
    raise CaseflowError(
        f"caseflow ships no file {name!r}; it ships "
        + ", ".join(n for n in names if not n.startswith("docs/"))
        + " and the docs (`caseflow help` lists them)"
    )
