"""The `gridengine` backend's settings: what `qsub` is told for the jobs of each group.

`backend:` holds the options of every group (`queue`, `parallel_environment`, `slots_per_job`,
`resources`, `extra_args`) and, under `groups:`, the groups that override some of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config.reader import Reader, Section, positive, show
from ..settings import not_negative, setting
from . import BackendConfig


@dataclass(frozen=True)
class GridEngineOptions:
    """What `qsub` is told for the jobs of one group (backend kind `gridengine`)."""

    queue: str | None = None  # -q (a queue, a list "a.q,b.q", or "gpu.q@node1")
    parallel_environment: str | None = None  # -pe NAME slots_per_job
    slots_per_job: int = 1
    resources: tuple[str, ...] = ()  # -l NAME=VALUE, each ("gpu=1", "h_rt=4:00:00")
    extra_args: tuple[str, ...] = ()  # more qsub arguments, word by word, as given

    def qsub_args(self) -> list[str]:
        args = ["-q", self.queue] if self.queue else []
        if self.parallel_environment:
            args += ["-pe", self.parallel_environment, str(self.slots_per_job)]
        for resource in self.resources:
            args += ["-l", resource]
        return args + list(self.extra_args)


@dataclass(frozen=True)
class GridEngineConfig(BackendConfig):
    """`kind: gridengine`: the options of every group, and of the groups that override some."""

    gridengine: GridEngineOptions = field(default_factory=GridEngineOptions)
    gridengine_groups: tuple[tuple[str, GridEngineOptions], ...] = ()
    accounting_wait_seconds: float = setting(
        60.0,
        not_negative,
        "how long a job qstat no longer lists may lack its accounting record before its exit "
        "code file (or, without one, its absence) decides how it ended",
    )

    def gridengine_options(self, group: str) -> GridEngineOptions:
        return dict(self.gridengine_groups).get(group, self.gridengine)


def read_config(section: Section) -> GridEngineConfig:
    br = section.reader
    every = read_options(br, GridEngineOptions())
    raw = br.get("groups", dict, {}, what="a mapping of group names to qsub settings")
    overrides = []
    for name, settings in raw.items():
        if name not in section.groups:
            raise br.error(
                f"groups.{name}",
                f"not a configured group (configured: "
                f"{', '.join(map(str, section.groups)) or 'none'})",
            )
        if not isinstance(settings, dict):
            raise br.error(
                f"groups.{name}",
                f"expected a mapping like {{queue: gpu.q}}, got {show(settings)}",
            )
        gr = Reader(br.file, settings, prefix=f"{br.prefix}groups.{name}.")
        overrides.append((name, read_options(gr, every)))
        gr.finish()
    return GridEngineConfig(
        **section.core,
        gridengine=every,
        gridengine_groups=tuple(overrides),
        accounting_wait_seconds=br.setting(GridEngineConfig, "accounting_wait_seconds"),
    )


def check_host(reader: Reader, host: Any) -> None:
    """Grid Engine expands `$HOME`, `$USER`, `$JOB_ID`, ... in a job's working directory
    (`qsub -wd`, the case folder): a remote root with a `$` would put jobs elsewhere."""
    if "$" in host.transport.root:
        raise reader.error(
            "transport.root",
            "must not contain '$' with the gridengine backend: Grid Engine expands $HOME, "
            "$USER, $JOB_ID, ... in a job's working directory (the case folder under it)",
        )


# qsub options caseflow sets itself: the job's name, folder, output, shell and script
_OWN = ("-N", "-wd", "-cwd", "-o", "-e", "-j", "-b", "-S", "-terse", "-t", "-sync", "-i")
_WORD = re.compile(r"^\S+$")


def read_options(reader: Reader, base: GridEngineOptions) -> GridEngineOptions:
    """The qsub settings in `reader` (the backend, or one group of it); unset keys from `base`
    (a group's keys replace the backend's, `resources` and `extra_args` each as a whole)."""

    def word(value: str) -> str | None:
        return None if _WORD.match(value) else "must be a non-empty word without spaces"

    queue = reader.get("queue", str, base.queue, word)
    pe = reader.get("parallel_environment", str, base.parallel_environment, word)
    slots = reader.get("slots_per_job", int, base.slots_per_job, positive)
    if slots > 1 and not pe:
        raise reader.error(
            "slots_per_job",
            "more than one slot needs a parallel_environment (qsub -pe NAME SLOTS)",
        )

    def words(key: str, what: str, check: Callable[[Any], str | None]) -> tuple[str, ...] | None:
        raw = reader.get(key, list, None, what=what)
        if raw is None:
            return None
        for item in raw:
            problem = check(item)
            if problem:
                raise reader.error(key, f"{show(item)}: {problem}")
        return tuple(raw)

    def resource(item: Any) -> str | None:
        ok = isinstance(item, str) and _WORD.match(item) and "=" in item.strip("=")
        return None if ok else 'not a resource request like "gpu=1" or "h_rt=4:00:00"'

    def qsub_word(item: Any) -> str | None:
        if not isinstance(item, str) or not item or "\n" in item:
            return "not a qsub argument (a non-empty string, one line)"
        if item in _OWN:
            return "caseflow sets the job's name, folder, output, shell and script itself"
        return None

    resources = words(
        "resources", 'a list of resource requests such as ["gpu=1", "h_vmem=16G"]', resource
    )
    extra = words(
        "extra_args",
        'a list of qsub arguments, word by word, such as ["-P", "lab", "-R", "y"]',
        qsub_word,
    )
    return GridEngineOptions(
        queue=queue,
        parallel_environment=pe,
        slots_per_job=slots,
        resources=base.resources if resources is None else resources,
        extra_args=base.extra_args if extra is None else extra,
    )
