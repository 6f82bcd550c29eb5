"""A setting of the configuration, declared once: on the dataclass field its value is read
into go its default, its check and one line of doc (`setting`). The configuration's reader
takes all three from there (config.reader.Reader.setting), and tests/test_docs.py holds
docs/configuration.md to the declared defaults.

Nothing here imports the rest of caseflow: a class outside the configuration (retry.Policy)
declares its settings without importing the reader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import Field, field, fields
from typing import Any

Check = Callable[[Any], "str | None"]  # a value's problem in words, or None when it is fine


def setting(default: Any, check: Check | None = None, doc: str = "", key: str | None = None) -> Any:
    """A dataclass field that is a setting: `default` when the key is absent (its type is
    the setting's: a float is any number, read with float()), `check(value)` what is wrong
    with a given value, `doc` what it means; `key` its key in its mapping when that is not
    the field's name."""
    return field(default=default, metadata={"check": check, "doc": doc, "key": key})


def declared(cls: type, name: str) -> Field:
    """The field `name` of the dataclass `cls`, declared with `setting`."""
    for f in fields(cls):
        if f.name == name:
            if "doc" not in f.metadata:
                raise TypeError(f"{cls.__name__}.{name} is not declared with setting()")
            return f
    raise TypeError(f"{cls.__name__} has no field {name!r}")


def setting_names(cls: type) -> tuple[str, ...]:
    """The fields of the dataclass `cls` that are settings, in their order."""
    return tuple(f.name for f in fields(cls) if "doc" in f.metadata)


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def one_of(choices: tuple[str, ...]) -> Check:
    """The value is one of `choices`."""
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"
