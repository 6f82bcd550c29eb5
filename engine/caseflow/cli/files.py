"""`caseflow init`, `caseflow files` and `caseflow help`: the files caseflow ships (its example
configurations, the systemd unit, the logrotate file, the Prometheus rules and Grafana
dashboard, the docs; caseflow.shipped finds them), handed out where caseflow is installed,
with no clone of the repository."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml

from .. import __version__, shipped
from .args import UsageError


def starter(example: str) -> str:
    """The text `caseflow init --example NAME` writes: the shipped example, with the folders it
    names beside the repository's config/ (`../inbox`, the clone's inbox) named beside the new
    file instead (`./inbox`): a starter config keeps what it makes next to itself."""
    path, _ = shipped.EXAMPLES[example]
    return (shipped.root() / path).read_text(encoding="utf-8").replace("../", "./")


def cmd_init(args) -> int:
    """Write a starter configuration to PATH: refuses an existing file and makes nothing else
    (not its folder, not the folders it names: `caseflow run` makes those)."""
    target = Path(args.path)
    if target.is_dir():
        raise UsageError(
            f"{target} is a folder: give the file to write, e.g. {target / 'caseflow.yaml'}"
        )
    folder = target.parent
    if not folder.is_dir():
        raise UsageError(
            f"folder {folder} does not exist: make it first (init writes only the file)"
        )
    text = starter(args.example)
    try:
        with open(target, "x", encoding="utf-8") as out:  # never over an existing file
            out.write(text)
    except FileExistsError:
        raise UsageError(
            f"{target} exists; caseflow init never overwrites a file: remove it, or give "
            "another path"
        ) from None
    source, what = shipped.EXAMPLES[args.example]
    quoted = shlex.quote(str(target))
    print(f"wrote {target}: the example {args.example} ({what}; {source})")
    print("Next:")
    print("  edit it: the lines marked ADJUST (every setting: `caseflow help configuration`)")
    inbox = _inbox(target, text)
    if inbox is not None and not inbox.is_dir():  # the one folder run does not make
        print(f"  mkdir -p {shlex.quote(str(inbox))}   # its inbox, where you keep it")
    print(f"  caseflow -c {quoted} check   # this machine's folders; each host: connection, queue")
    print(f"  caseflow -c {quoted} run")
    others = "|".join(n for n in shipped.EXAMPLES if n != args.example)
    print(f"Other starting points: caseflow init PATH --example {others}")
    return 0


def _inbox(target: Path, text: str) -> Path | None:
    """The inbox folder the written config names (resolved as the config's loader does)."""
    from ..config.reader import resolve

    data = yaml.safe_load(text)
    value = data.get("inbox") if isinstance(data, dict) else None
    return resolve(target.resolve().parent, value) if isinstance(value, str) else None


def cmd_files(args) -> int:
    """List the shipped files; with NAME print one (or with --path where it is)."""
    if args.name is None:
        base = shipped.root()
        print(f"caseflow {__version__}'s files, in {base}:")
        listed = [n for n in shipped.listing() if not n.startswith("docs/")]
        order = list(shipped.PURPOSES)  # the unit first, the examples after the service's files
        names = sorted(listed, key=lambda n: (order.index(n) if n in order else len(order), n))
        width = max(len(n) for n in names)
        for name in names:
            print(f"  {name:{width}}  {shipped.PURPOSES.get(name, '')}".rstrip())
        print(f"  {'docs/*.md':{width}}  the documentation: `caseflow help` lists it")
        print(
            "`caseflow files NAME` prints one (e.g. `caseflow files caseflow.service`), "
            "`caseflow files --path NAME` where it is"
        )
        return 0
    path = shipped.find(args.name)
    if args.path:
        print(path)
        return 0
    sys.stdout.flush()
    sys.stdout.buffer.write(path.read_bytes())
    return 0


def _title(path: Path) -> str:
    """A doc's first heading, without its #."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def cmd_help(args) -> int:
    """List the installed docs; with TOPIC print one."""
    topics = shipped.topics()
    if args.topic is None:
        width = max(len(t) for t in topics)
        print("caseflow's documentation (`caseflow help TOPIC` prints one):")
        for topic, path in topics.items():
            print(f"  {topic:{width}}  {_title(path)}")
        print(f"They are Markdown files in {shipped.root() / 'docs'}")
        return 0
    topic = args.topic.removesuffix(".md")
    if topic not in topics:
        raise UsageError(f"no help topic {args.topic!r}; topics: {', '.join(topics)}")
    sys.stdout.flush()
    text = topics[topic].read_text(encoding="utf-8")
    print(text, end="" if text.endswith("\n") else "\n")
    return 0
