"""The reader every part of the configuration is read with, caseflow's and its adapters'.

A `Reader` takes the values out of one mapping and names the file and the key in every
error (`config.yaml: transport.port: not a port number`); a key it was not asked for is an
unknown key, with the known key it most looks like (`did you mean 'port'?`). A transport or
backend reads its own section of a host (`transport:`, `backend:`) with the `Section` it is
handed, so its mistakes read like the core's.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..settings import Check, declared, setting_names

# the checks of caseflow.settings, taken from here by the adapters' readers too
from ..settings import not_negative as not_negative
from ..settings import positive as positive

NUMBER = (int, float)  # a setting in seconds, say: 5 and 2.5 alike (read with float())


class Reader:
    """Takes values out of one mapping, naming file and key in every error."""

    def __init__(self, file: Path, data: dict, prefix: str = "", planned: set[Path] | None = None):
        self.file = file
        self.data = data
        self.prefix = prefix
        self.used: set[str] = set()
        # folders that do not exist yet and that `caseflow run` will make (shared by the
        # readers of one file: a folder may be missing if its parent exists or is one)
        self.planned: set[Path] = set() if planned is None else planned

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def error(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.key(name)}: {message}")

    def get(
        self,
        name: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        check: Check | None = None,
        what: str | None = None,
    ) -> Any:
        """The value of `name`, of type `kind` (a type or a tuple of types); `default` when
        it is absent (required when no default is given); `check(value)` says what is wrong
        with it; `what` names the expected kind in the error."""
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            if default is ...:
                self._misspelt(name)
                raise self.error(name, "is required")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            raise self.error(name, f"expected {what or _kind_name(kinds)}, got {show(value)}")
        if check is not None:
            message = check(value)
            if message:  # the value refused, echoed: a typo is seen at once
                raise self.error(name, f"{message} (got {value!r})")
        return value

    def setting(self, cls: type, name: str) -> Any:
        """The setting `name` of the dataclass `cls` (declared with caseflow.settings.setting),
        read from its key with the default, the check and the type declared there."""
        f = declared(cls, name)
        number = type(f.default) is float
        value = self.get(
            f.metadata["key"] or name,
            NUMBER if number else type(f.default),
            f.default,
            f.metadata["check"],
        )
        return float(value) if number else value

    def settings(self, cls: type, *names: str) -> dict[str, Any]:
        """The settings `names` of `cls` (`Reader.setting`), read in that order, by name;
        without names, every setting `cls` declares, in the order of its fields."""
        return {name: self.setting(cls, name) for name in names or setting_names(cls)}

    def sub(self, name: str, required: bool = False) -> Reader:
        value = self.get(name, dict, default=... if required else {}, what="a mapping")
        return Reader(self.file, value, prefix=f"{self.key(name)}.", planned=self.planned)

    def _misspelt(self, name: str) -> None:
        """A required key is missing: a key not read yet that looks like it (`kidn` for
        `kind`) is the mistake to name, not the missing key."""
        others = [str(k) for k in self.data if k not in self.used]
        close = difflib.get_close_matches(name, others, n=1, cutoff=0.7)
        if close:
            raise self.error(
                close[0], f"unknown key (did you mean {name!r}? {self.key(name)} is required)"
            )

    def finish(self) -> None:
        """Every key of the mapping has been read: any other is an unknown key."""
        unknown = [k for k in self.data if k not in self.used]
        if unknown:
            k = unknown[0]
            known = sorted(self.used)
            close = [c for c in known if str(k) in c or c in str(k)] or difflib.get_close_matches(
                str(k), known, n=1, cutoff=0.5
            )
            hint = (
                f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
            )
            raise self.error(str(k), f"unknown key{hint}")


@dataclass(frozen=True)
class Section:
    """A host's `transport:` or `backend:` mapping, handed to the adapter its `kind` names.

    The core has read its own keys of the mapping already (they are in `core`, ready to be
    passed on to the adapter's config class); the adapter reads the rest with `reader` and
    may call `reader.finish()` itself to order its errors (the core calls it after it)."""

    reader: Reader
    core: dict[str, Any]  # transport: kind, root, verify; backend: kind, command
    base: Path  # the config file's folder: relative paths start there
    state: Path  # the database's folder, where caseflow keeps its own files
    host: str | None = None  # the host's name, when its key in `hosts:` gives it
    groups: tuple[Any, ...] = ()  # the names of the host's groups, as given (not yet checked)

    def name(self, default: str) -> str:
        """The host's name: its key in `hosts:`, else the section's `name:`, else `default`
        (the core has refused a `name:` that differs from the key)."""
        return self.reader.get("name", str, self.host or default)

    def path(self, value: str) -> Path:
        """A local path setting, resolved against the config file's folder."""
        return resolve(self.base, value)


def _kind_name(kinds: tuple[type, ...]) -> str:
    if set(kinds) == {int, float}:
        return "a number"
    names = {
        int: "a whole number",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "a list",
        dict: "a mapping",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def show(value: Any) -> str:
    """A value as an error names it: its YAML type and its text."""
    return f"{type(value).__name__} {value!r}"


def port_number(value: int) -> str | None:
    return None if 0 < value < 65536 else "not a port number"


def resolve(base: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p).resolve()


def existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def can_make(reader: Reader, key: str, folder: Path) -> None:
    """`folder` is a folder, or `caseflow run` can make it: its parent exists (a typo in a
    path is not taken for a folder to make) or is another folder run makes first (the
    database's `var/` for a local root `var/remote`)."""
    if folder.is_dir():
        return
    if folder.exists():
        raise reader.error(key, f"{folder} is a file, not a folder")
    parent = existing_ancestor(folder)
    if not parent.is_dir():
        raise reader.error(key, f"cannot make {folder}: {parent} is a file, not a folder")
    if folder.parent != parent and folder.parent not in reader.planned:
        raise reader.error(key, f"folder {folder.parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise reader.error(key, f"cannot make {folder}: {parent} is not writable")
    reader.planned.add(folder)
