"""The `caseflow` command line's arguments: its commands, their options and help texts (the
commands themselves are in cli.py; docs/cli.md describes them for a person)."""

from __future__ import annotations

import argparse
import sys

from .. import __version__, shipped
from ..diagram import FORMATS
from ..errors import CaseflowError
from ..service import LOG_FORMATS


class UsageError(CaseflowError):
    """A mistake in how a command was called (exit 2, as argparse's own)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"caseflow: error: {message}", file=sys.stderr)
        sys.exit(2)


CONFIG_HELP = "the configuration file (default: $CASEFLOW_CONFIG)"
JSON_STATUS = (
    "print the cases as a JSON list of objects, one per case, with the keys `caseflow help cli` "
    "lists"
)
# under every --help of the top: where the rest is, installed with caseflow (no clone needed)
DOCS = (
    "Start with `caseflow init FILE` (a commented configuration) and `caseflow -c FILE check`. "
    "The documentation is installed with caseflow: `caseflow help` lists it, `caseflow help cli` "
    "prints the command reference, `caseflow help service` how to run caseflow as a service."
)


def build_parser() -> argparse.ArgumentParser:
    # -c works before the command (`caseflow -c FILE status`) and after it; SUPPRESS keeps
    # a command's parser from overwriting the one given before it with its own default
    common = _Parser(add_help=False)
    common.add_argument(
        "-c", "--config", metavar="FILE", default=argparse.SUPPRESS, help=CONFIG_HELP
    )
    p = _Parser(
        prog="caseflow",
        description="Ferries compute cases from an inbox folder to a "
        "GPU host's queue and brings their results back.",
        epilog=DOCS,
    )
    p.add_argument("--version", action="version", version=f"caseflow {__version__}")
    p.add_argument("-c", "--config", metavar="FILE", default=None, help=CONFIG_HELP)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def command(name: str, text: str, config: bool = True, usage: str | None = None):
        return sub.add_parser(
            name,
            parents=[common] if config else [],
            help=text,
            description=text[0].upper() + text[1:] + ".",
            usage=usage,
        )

    s = command("run", "run the daemon in the foreground until SIGTERM or SIGINT")
    s.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text: one line per event for a person (default); json: one JSON "
        "object per line for a log collector",
    )
    s = command("status", "list the cases: state, group, host, slot, task, time, reason")
    s.add_argument("--json", action="store_true", help=JSON_STATUS)
    s.add_argument("--state", help="only cases in this state")
    s.add_argument(
        "--watch",
        action="store_true",
        help="redraw the table every second, counts per state on top, until Ctrl-C",
    )
    s = command(
        "show", "show one case: every field, its durations, its results, its job log, its history"
    )
    s.add_argument("case", help="case id or unique name (`--` before a name starting with -)")
    s.add_argument(
        "--json",
        action="store_true",
        help="print the case as one JSON object: the keys of `status --json`, "
        "job_log (the kept log's path), upload (bytes, total, percent, rate, "
        "seconds left, or null) and history (a list of transitions)",
    )
    s = command(
        "logs",
        "print a case's job log: an ended job's kept log, a running job's output so far "
        "(read on its host); with -f, the output as the job writes it, until the case ends",
    )
    s.add_argument("case", help="case id or unique name (`--` before a name starting with -)")
    s.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="follow the output as it is written (waiting for a job that has not started), "
        "until the case ends; then say how it ended (on stderr) and exit 0",
    )
    s = command("resources", "list the GPU slots and the case holding each")
    s.add_argument(
        "--json",
        action="store_true",
        help="print the slots as a JSON list of objects with host, group, slot, "
        "device, case_id, case_name, case_state and retired",
    )
    for name, text in (
        ("retry", "run a failed or lost case again, validated and uploaded afresh"),
        ("cancel", "stop an active case (kills its job if one runs); it ends in failure"),
    ):
        # (one line of usage: a mistake's message stays two lines, usage and error)
        s = command(name, text, usage=f"caseflow {name} [options] CASE | --state S | --host H")
        s.add_argument(
            "case",
            nargs="?",
            help="case id or unique name; or, without it, every case the filters below select",
        )
        s.add_argument("--state", help="every case in this state (with no case named)")
        s.add_argument(
            "--host", help="every case on this host (its slot's or its job's; with no case named)"
        )
        s.add_argument(
            "--since",
            metavar="TIME",
            help="only cases updated at or after TIME (ISO 8601, e.g. 2026-12-07 or "
            "2026-12-07T14:00; local time unless it says Z or an offset)",
        )
        s.add_argument("--yes", action="store_true", help="do it without asking (several cases)")
        s.add_argument(
            "--wait",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="how long to wait for a running daemon to apply it (default 60)",
        )
        s.add_argument("--no-wait", action="store_true", help="only record the request")
    s = command(
        "prune",
        "remove ended cases from the store (their results, archived folders and job logs "
        "stay), after listing them and asking",
        usage="caseflow prune --ended-before DATE [--export FILE] [--yes] [--no-vacuum]",
    )
    s.add_argument(
        "--ended-before",
        metavar="DATE",
        required=True,
        help="the cases that ended before DATE (ISO 8601, e.g. 2026-01-01 or "
        "2026-01-01T14:00; local time unless it says Z or an offset)",
    )
    s.add_argument(
        "--export",
        metavar="FILE",
        help="first write the cases to FILE, one JSON object a line (the keys of `status "
        "--json` and their history); added after the lines of an earlier export in FILE; "
        "nothing is removed if it cannot be written",
    )
    s.add_argument("--yes", action="store_true", help="do it without asking")
    s.add_argument(
        "--no-vacuum",
        action="store_true",
        help="leave the freed space inside the database file (new cases reuse it) instead "
        "of giving it back to the file system (VACUUM: writers wait while it runs)",
    )
    s = command(
        "host",
        "drain a host for maintenance (no new upload or submit there; its running jobs go "
        "on) or resume it",
    )
    host_sub = s.add_subparsers(
        dest="action", required=True, parser_class=_Parser, metavar="ACTION"
    )
    h = host_sub.add_parser(
        "pause",
        parents=[common],
        help="drain HOST: it takes no new case and starts no upload or submit; kept across "
        "restarts until `caseflow host resume`",
    )
    h.add_argument("host", help="the host's name, as in `caseflow status`")
    h.add_argument("--reason", default="", help="why, shown with the host (e.g. a ticket)")
    h = host_sub.add_parser(
        "resume", parents=[common], help="end HOST's drain: its waiting cases go on at once"
    )
    h.add_argument("host", help="the host's name")
    command(
        "check",
        "check this machine's folders and each host: connection, host key, "
        "remote root, free space, tools, an openssh host's master connection",
    )
    s = command(
        "login",
        "open a host's SSH master connection here, answering its login prompts (transport openssh)",
    )
    s.add_argument("host", nargs="?", help="the host's name (needed with several)")
    s = command("diagram", "export the case state machine as a diagram", config=False)
    s.add_argument(
        "--format",
        choices=FORMATS,
        default="mermaid",
        help="mermaid (default), dot, or svg (needs Graphviz's dot)",
    )
    s.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    s = command(
        "init",
        "write a commented starter configuration to PATH (never over an existing file; it makes "
        "nothing else)",
        config=False,
        usage="caseflow init PATH [--example " + "|".join(shipped.EXAMPLES) + "]",
    )
    s.add_argument("path", metavar="PATH", help="the file to write, e.g. caseflow.yaml")
    s.add_argument(
        "--example",
        choices=list(shipped.EXAMPLES),
        default="local",
        help="the setup to start from: "
        + "; ".join(f"{name}: {what}" for name, (_, what) in shipped.EXAMPLES.items())
        + " (default: local)",
    )
    s = command(
        "files",
        "list the files installed with caseflow (systemd unit, logrotate file, alert rules, "
        "dashboard, examples), or print one",
        config=False,
    )
    s.add_argument(
        "name", nargs="?", metavar="NAME", help="the file to print, e.g. caseflow.service"
    )
    s.add_argument("--path", action="store_true", help="print where NAME is instead")
    s = command(
        "help", "list the documentation installed with caseflow, or print one topic", config=False
    )
    s.add_argument("topic", nargs="?", metavar="TOPIC", help="e.g. cli, configuration, service")
    return p
