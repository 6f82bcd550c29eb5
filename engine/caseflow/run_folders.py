"""The local folders `caseflow run` works in: which they are, and making them.

Reading the configuration only checks that each exists or can be made (config.py);
they are made here, by the daemon, once every check has passed and it holds the
database's lock, so that a refused run and every other command leave the disk alone.
"""

from __future__ import annotations

from pathlib import Path

from .config import Config
from .errors import ConfigError


def run_folders(config: Config) -> list[tuple[str, Path]]:
    """(key, folder) of every local folder `caseflow run` works in, the database's first."""
    out = [("database", config.database.parent)]
    if config.results.folder is not None:
        out.append(("results.folder", config.results.folder))
    for key, folder in (
        ("archive.done", config.finish.archive_done),
        ("archive.failed", config.finish.archive_failed),
    ):
        if folder is not None:
            out.append((key, folder))
    for h in config.hosts:
        prefix = f"hosts.{h.name}." if len(config.hosts) > 1 else ""
        out += [(prefix + key, folder) for key, folder in h.transport.local_folders()]
    return out


def make_run_folders(config: Config, only: tuple[str, ...] | None = None) -> list[str]:
    """Make the missing folders of `run_folders` (of the keys in `only`, when given);
    returns a line per folder made, for the log. Raises ConfigError naming the key
    when one cannot be made (the file system changed since the config was read)."""
    made = []
    for key, folder in run_folders(config):
        if (only is not None and key not in only) or folder.is_dir():
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{config.path}: {key}: cannot make {folder}: {exc.strerror or exc}"
            ) from exc
        made.append(f"made the folder {folder} ({key})")
    return made
