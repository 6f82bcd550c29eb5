"""The remote shell scripts: files of their own in the package (`<package>/scripts/*.sh`).

Every script runs as `sh -c SCRIPT NAME ARG...`: it takes every variable part (case folder,
job name, job id, ...) as a positional parameter, so nothing from a case name or path is ever
parsed by a shell. Keeping them as files lets them be read and linted as shell (tests run
shellcheck on each, tests/test_remote_scripts.py).

`script()` reads one, with the function files it uses put first, and leaves out comment lines
and blank lines: what is sent with every command is the code alone. A script must therefore
not hold a multi-line quoted string with a line that starts with `#` or is blank.
"""

from __future__ import annotations

import functools
from importlib import resources

# every script text handed out, by "package/name" (the tests lint these as sent, too)
LOADED: dict[str, str] = {}


def source(package: str, name: str) -> str:
    """The text of `<package>/scripts/<name>` as it is in the package."""
    return (resources.files(package) / "scripts" / name).read_text(encoding="utf-8")


@functools.cache
def script(package: str, name: str, *functions: str) -> str:
    """The script `name` of `package`, after the files of the shell functions it uses, without
    comment lines and blank lines."""
    lines = []
    for part in (*functions, name):
        lines += [
            line
            for line in source(package, part).splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    text = "\n".join(lines) + "\n"
    LOADED[f"{package}/{'+'.join((*functions, name))}"] = text
    return text
