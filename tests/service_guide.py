"""docs/service.md as tests/test_service.py follows it: the command lines of its shell blocks,
in page order, the ones it cannot run here (each with why), and how a command is moved into a
test's own folder and names.

A command is run as written, with two kinds of change: the machine's places (/opt/caseflow,
/etc/caseflow, /data/caseflow, ...) are folders under the test's own, and the names of the
service user (`caseflow`), the group (`caseflow-users`) and the person (`alice`) are unique
names of the test (useradd makes real users; two runs on one machine must not meet).
"""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "service.md"

# the guide's commands tests/test_service.py does not run, and why
NOT_RUN = {
    "pipx install /path/to/caseflow":
        "test_service.py's `installed` fixture runs it, with PIPX_HOME in a temp folder",
    "caseflow --help": "test_service.py, with the pipx-installed caseflow",
    "caseflow help service": "test_service.py, with the pipx-installed caseflow",
    "systemctl daemon-reload && systemctl enable --now caseflow":
        "needs systemd as PID 1: the test starts the unit's ExecStart as its User= instead",
    "journalctl -u caseflow -f": "read-only, and needs systemd's journal",
    "loginctl enable-linger caseflow": "the GPU host's side: needs systemd-logind",
    "systemctl --user daemon-reload": "the GPU host's side: needs a user manager",
    "systemctl --user enable --now pueued": "the GPU host's side: needs a user manager",
    "pueue status": "the GPU host's side; tests/test_pueue_backend.py talks to real pueued",
}
# the command a person of the group runs to drop a case (run as that person, after the start)
DROP = "cp -r my-case /data/caseflow/inbox/ && chmod g+w /data/caseflow/inbox/my-case"

PLACES = ("/opt/caseflow", "/etc/caseflow", "/data/caseflow", "/var/lib/caseflow",
          "/etc/systemd/system", "/etc/logrotate.d")
USER, GROUP, PERSON = "caseflow", "caseflow-users", "alice"


def commands() -> list[str]:
    """Every command line of the guide's `sh` blocks, in page order (comments dropped, as
    tests/test_docs.py reads them)."""
    out = []
    for token in MarkdownIt("commonmark").parse(GUIDE.read_text(encoding="utf-8")):
        if token.type == "fence" and token.info.strip() == "sh":
            for line in token.content.splitlines():
                command = line.split(" #", 1)[0].strip()
                if command and not command.startswith("#"):
                    out.append(command)
    return out


def run_by_the_test() -> list[str]:
    return [c for c in commands() if c not in NOT_RUN]


def moved(command: str, base: Path, names: dict[str, str], source: Path) -> str:
    """`command` with the places under `base`, the clone at `source`, and the user, group and
    person renamed (`names`: their names in the guide -> the test's). A name is renamed where it
    stands as a word of its own or in `-o NAME`-like places, never inside a path or another
    word (/opt/caseflow/bin/caseflow, caseflow.service, caseflow-users stay as they are)."""
    for place in PLACES:
        command = command.replace(place, f"{base}{place}")
    command = command.replace("/path/to/caseflow", str(source))
    for old, new in sorted(names.items(), key=lambda kv: -len(kv[0])):
        command = re.sub(rf"(?<![\w/.-]){re.escape(old)}(?![\w/.-])", new, command)
    return command
