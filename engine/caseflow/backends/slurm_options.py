"""The `slurm` backend's settings: what `sbatch` is told for the jobs of each group.

`backend:` holds the options of every group (`gpus_per_job`, `partition`, `account`, `time`,
`extra_args`) and, under `groups:`, the groups that override some of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..config.reader import Reader, Section, not_negative, show
from . import BackendConfig


@dataclass(frozen=True)
class SlurmOptions:
    """What `sbatch` is told for the jobs of one group (backend kind `slurm`)."""

    gpus_per_job: int = 1  # --gres=gpu:N (0: no GPU requested)
    partition: str | None = None  # --partition
    account: str | None = None  # --account
    time: str | None = None  # --time (Slurm's formats: "30", "4:00:00", "1-0")
    extra_args: tuple[str, ...] = ()  # more sbatch options, as given

    def sbatch_args(self) -> list[str]:
        args = [f"--gres=gpu:{self.gpus_per_job}"] if self.gpus_per_job else []
        for option, value in (
            ("partition", self.partition),
            ("account", self.account),
            ("time", self.time),
        ):
            if value is not None:
                args.append(f"--{option}={value}")
        return args + list(self.extra_args)


@dataclass(frozen=True)
class SlurmConfig(BackendConfig):
    """`kind: slurm`: the options of every group, and of the groups that override some."""

    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    slurm_groups: tuple[tuple[str, SlurmOptions], ...] = ()

    def slurm_options(self, group: str) -> SlurmOptions:
        return dict(self.slurm_groups).get(group, self.slurm)


def read_config(section: Section) -> SlurmConfig:
    br = section.reader
    every = read_options(br, SlurmOptions())
    raw = br.get("groups", dict, {}, what="a mapping of group names to sbatch settings")
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
                f"expected a mapping like {{gpus_per_job: 2}}, got {show(settings)}",
            )
        gr = Reader(br.file, settings, prefix=f"{br.prefix}groups.{name}.")
        overrides.append((name, read_options(gr, every)))
        gr.finish()
    return SlurmConfig(**section.core, slurm=every, slurm_groups=tuple(overrides))


def check_host(reader: Reader, host: Any) -> None:
    """Slurm chooses the GPUs of a job itself (and sets CUDA_VISIBLE_DEVICES)."""
    for g in host.groups:
        if g.devices:
            raise reader.error(
                f"groups.{g.name}.devices",
                "not used with the slurm backend: Slurm picks the GPUs and sets "
                "CUDA_VISIBLE_DEVICES (use backend.gpus_per_job); remove devices",
            )


# Slurm's --time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds; or no limit.
_SLURM_TIME = re.compile(r"^(\d+(:\d+){0,2}|\d+-\d+(:\d+){0,2}|UNLIMITED|INFINITE)$")
# sbatch options caseflow sets itself: the job's name, folder, output and script
_SLURM_OWN = (
    "-J",
    "--job-name",
    "-D",
    "--chdir",
    "-o",
    "--output",
    "-e",
    "--error",
    "--wrap",
    "-a",
    "--array",
    "--parsable",
)


def read_options(reader: Reader, base: SlurmOptions) -> SlurmOptions:
    """The sbatch settings in `reader` (the backend, or one group of it); unset keys from
    `base` (a group's keys replace the backend's, `extra_args` as a whole)."""

    def word(value: str) -> str | None:
        return (
            None
            if value.strip() and not re.search(r"\s", value)
            else "must be a non-empty word without spaces"
        )

    gpus = reader.get("gpus_per_job", int, base.gpus_per_job, not_negative)
    partition = reader.get("partition", str, base.partition, word)
    account = reader.get("account", str, base.account, word)
    # a string only: YAML reads an unquoted 4:00:00 as the number 14400 (base 60)
    time_limit = reader.get(
        "time",
        str,
        base.time,
        what="a quoted Slurm time limit such as "
        '"4:00:00" or "1-12:00:00" (unquoted, YAML reads 4:00:00 '
        "as a number)",
        check=lambda v: (
            None
            if _SLURM_TIME.match(v)
            else 'not a Slurm time limit ("MINUTES", "H:MM:SS", "D-HH:MM:SS", or "UNLIMITED")'
        ),
    )
    extra = reader.get(
        "extra_args",
        list,
        None,
        what='a list of sbatch options such as ["--qos=normal", "--mem=16G"]',
    )
    if extra is None:
        extra = base.extra_args
    else:
        for arg in extra:
            if not isinstance(arg, str) or not arg.startswith("-") or "\n" in arg:
                raise reader.error(
                    "extra_args",
                    f"not an sbatch option: {show(arg)} (give "
                    'each option as one entry: "--qos=normal")',
                )
            option = arg.split("=", 1)[0]
            if option in _SLURM_OWN or (
                option[:2] in ("-J", "-D", "-o", "-e", "-a") and not option.startswith("--")
            ):
                raise reader.error(
                    "extra_args",
                    f"{arg!r}: caseflow sets the job's name, folder, output and script itself",
                )
        extra = tuple(extra)
    return SlurmOptions(
        gpus_per_job=gpus, partition=partition, account=account, time=time_limit, extra_args=extra
    )
