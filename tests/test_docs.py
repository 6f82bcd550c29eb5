"""The README and docs/ as a newcomer reads them: links that lead somewhere, example
commands that work as written, and reference lists that match what the program does."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

import service_guide
from harness import DEADLINE, wait_for
from repo_copy import copy_of_the_repository

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MD = MarkdownIt("commonmark")


def _tokens(page: Path):
    return MD.parse(page.read_text(encoding="utf-8"))


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to -."""
    text = unicodedata.normalize("NFC", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    tokens = _tokens(page)
    return {_slug(tokens[i + 1].content) for i, t in enumerate(tokens) if t.type == "heading_open"}


def _links(page: Path) -> list[str]:
    out = []
    for t in _tokens(page):
        for child in t.children or []:
            if child.type == "link_open":
                out.append(child.attrs["href"])
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_leads_somewhere(page):
    """Relative links name files of the repository, and #anchors headings of the page."""
    for href in _links(page):
        if re.match(r"[a-z]+:", href):
            continue  # https://..., file://... : outside the repository
        path, _, anchor = href.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: link to {href}: no such file"
        if anchor:
            assert target.suffix == ".md" and anchor in _anchors(target), \
                f"{page.name}: link to {href}: no such heading"


def test_the_front_page_is_for_a_newcomer():
    """What it is, the two commands, a walk-through, the diagram, links; the reference is in
    docs/, and every docs page is linked from the front page."""
    readme = (ROOT / "README.md").read_text()
    headings = [_tokens(ROOT / "README.md")[i + 1].content
                for i, t in enumerate(_tokens(ROOT / "README.md")) if t.type == "heading_open"]
    assert headings == ["caseflow", "The two commands", "Five minutes with caseflow",
                        "The case state machine", "Running it for real", "Performance",
                        "Reference"]
    assert len(readme.splitlines()) < 215  # 200, and the performance table issue 18 asks for
    linked = {(ROOT / h).resolve() for h in _links(ROOT / "README.md")}
    for page in PAGES[1:]:
        assert page.resolve() in linked, f"{page.name} is not linked from the README"


# -- example commands -------------------------------------------------------------------------
def _commands(page: Path) -> list[str]:
    """The command lines of the page's shell blocks (comments and continuations joined)."""
    out = []
    for t in _tokens(page):
        if t.type == "fence" and t.info.strip() == "sh":
            for line in t.content.splitlines():
                command = line.split(" #", 1)[0].strip()
                if command and not command.startswith("#"):
                    out.append(command)
    return out


# Commands not run by a test, each with why that is fine. Everything else in a shell block
# of README.md or docs/ is one of the WALK_THROUGH commands, run below as written.
NOT_RUN = {
    "make run": "the walk-through runs its recipe (the Makefile's run target, checked below)",
    "make test": "the whole suite; this test is part of it",
    "make bench": "the benchmarks, ~9 minutes; tests/test_bench_smoke.py runs their smoke form",
    "make bench BENCH=--quick": "the same, smaller",
    ".venv/bin/python bench/run.py --quiet-load 1 --only upload,pipeline": "benchmarks",
    ".venv/bin/python bench/upload_bench.py": "a benchmark",
    "caseflow -c my-config.yaml check": "read-only; tests/test_ssh.py runs check on a real host",
    "caseflow -c my-config.yaml run": "the daemon; the walk-through and test_service.py run it",
    "caseflow status --watch -c config/local.yaml":
        "read-only; tests/test_status_watch.py runs it through a real terminal",
    "caseflow status --watch --state queued -c ...": "the same, one state",
    "caseflow login hpc-login -c caseflow.yaml":
        "tests/test_openssh.py drives caseflow login through a real terminal, answering the code",
    "caseflow check -c caseflow.yaml": "read-only; tests/test_openssh.py runs check on the master",
}


def _walk_through() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Five minutes with caseflow", 1)[1].split("\n## ", 1)[0]
    tokens = MD.parse(section)
    return [line.split(" #", 1)[0].strip() for t in tokens
            if t.type == "fence" and t.info.strip() == "sh"
            for line in t.content.splitlines() if line.strip()]


def test_every_example_command_is_run_or_known_to_be_safe():
    """Every command of the README's and the docs' shell blocks: the walk-through runs it,
    tests/test_service.py follows docs/service.md with it, or NOT_RUN says why no test runs it
    (service_guide.NOT_RUN for docs/service.md)."""
    walk = set(_walk_through())
    guide = set(service_guide.run_by_the_test())
    for page in PAGES:
        for command in _commands(page):
            assert command in walk or command in NOT_RUN or command in guide or (
                page == service_guide.GUIDE and command in service_guide.NOT_RUN), \
                f"{page.name}: `{command}` is run by no test; run it in one, or add it to " \
                "NOT_RUN saying why it need not be"
    assert set(NOT_RUN) <= {c for p in PAGES for c in _commands(p)}, "NOT_RUN lists gone commands"
    assert set(service_guide.NOT_RUN) <= set(service_guide.commands()), \
        "service_guide.NOT_RUN lists gone commands"


def _make_run_recipe() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("\nrun:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    return [line.strip().replace("$(BIN)", ".venv/bin") for line in recipe
            if line.startswith("\t")]


@pytest.mark.slow
def test_the_five_minute_walk_through_works_as_written(tmp_path):
    """In a fresh copy of the repository (no var/, no results/): `make run`'s recipe, then
    every command of the README's walk-through as it stands, waiting where a person would."""
    repo = copy_of_the_repository(tmp_path / "clone")
    os.symlink(sys.prefix, repo / ".venv")  # the test's venv, as `make` would have made it
    assert not (repo / "var").exists()
    assert _make_run_recipe() == [".venv/bin/caseflow run -c config/local.yaml"]
    log = open(tmp_path / "daemon.log", "wb")
    env = {k: v for k, v in os.environ.items() if k != "CASEFLOW_CONFIG"}
    daemon = subprocess.Popen(["bash", "-c", f"exec {_make_run_recipe()[0]}"], cwd=repo,
                              stdout=log, stderr=log, start_new_session=True, env=env)
    try:
        wait_for(lambda: b"caseflow running" in (tmp_path / "daemon.log").read_bytes()
                 or daemon.poll() is not None, what="the daemon to start")
        assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
        shell = f"cd {shlex.quote(str(repo))}\n"
        outputs = {}

        def state(name):
            out = run(".venv/bin/caseflow status --json")
            return {c["name"]: c for c in json.loads(out)}.get(name, {}).get("state")

        def run(command):
            proc = subprocess.run(["bash", "-c", shell + command], capture_output=True,
                                  text=True, timeout=DEADLINE, env=env)
            assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{proc.stderr}"
            return proc.stdout

        # what a person waits for before the next command
        waits = {"cp -r examples/sample_case inbox/": ("sample_case", "success"),
                 "mkdir inbox/broken": ("broken", "failure"),
                 "rm inbox/broken/FAIL": ("broken", "success")}
        for command in _walk_through():
            if command.startswith("export "):
                shell += command + "\n"
                continue
            outputs[command] = run(command)
            for prefix, (name, wanted) in waits.items():
                if command.startswith(prefix):
                    wait_for(lambda: state(name) == wanted, what=f"{name} to be {wanted}")
        seen = "\n".join(outputs.values())
        assert "sample_case" in seen and "success" in seen
        assert "case: sample_case" in outputs["cat results/sample_case/output/summary.txt"]
        assert "job exited with code 3" in outputs[".venv/bin/caseflow status --state failure"]
        retry = next(v for k, v in outputs.items() if k.startswith("rm inbox/broken/FAIL"))
        assert "retry accepted (run 2): failure -> stable" in retry
        assert "free" in outputs[".venv/bin/caseflow resources"]
    finally:
        daemon.send_signal(signal.SIGINT)  # Ctrl-C
        assert daemon.wait(timeout=DEADLINE) == 0
        log.close()
    text = (tmp_path / "daemon.log").read_text()
    assert f"made the folder {repo / 'var'} (database)" in text


# -- reference lists that must match the program -------------------------------------------
def _documented_json_keys() -> list[str]:
    text = (ROOT / "docs" / "cli.md").read_text()
    section = text.split("## `status --json`", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, re.M)


def test_status_json_keys_are_the_documented_ones(ws):
    ws.start()
    ws.drop_case("listed")
    ws.drop_case("waiting", hold="never")
    ws.wait_state("listed", "success")
    ws.wait_state("waiting", "running")
    out = json.loads(ws.cli("status", "--json", check=True).stdout)
    documented = _documented_json_keys()
    assert len(documented) == len(set(documented))
    for case in out:
        assert list(case) == documented, "docs/cli.md lists other keys than `status --json` has"
    by_name = {c["name"]: c for c in out}
    assert by_name["listed"]["next_attempt_at"] is None  # ended: nothing is due
    assert by_name["waiting"]["next_attempt_at"] is not None
    show = json.loads(ws.cli("show", "--json", "waiting", check=True).stdout)
    assert list(show) == documented + ["job_log", "upload", "history", "runs"]


def test_the_case_yaml_example_is_accepted(tmp_path):
    from caseflow.casefolder import read_case_file
    text = (ROOT / "docs" / "configuration.md").read_text()
    block = next(t.content for t in MD.parse(text) if t.type == "fence" and t.info == "yaml")
    (tmp_path / "case.yaml").write_text(block)
    assert read_case_file(tmp_path, ["gpu_a", "gpu_b"], "gpu_b") == {"group": "gpu_a",
                                                                    "priority": 5}


# -- the settings' defaults: docs/configuration.md says what the code declares ---------------
def _documented_defaults() -> dict[str, str]:
    """The key table of docs/configuration.md: each key (one to a row) and its default."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    return dict(re.findall(r"^\| `([a-z_.]+)` \| ([^|]+) \|", text, re.M))


def _shown(default) -> str:
    """A declared default as the table writes it."""
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float):
        return f"`{default:g}`"
    return f"`{default}`"


def test_every_setting_is_documented_with_its_declared_default():
    """Each setting declared with caseflow.settings.setting (its default, check and doc in
    one place) has its row in docs/configuration.md, and the row gives that default."""
    from dataclasses import fields

    from caseflow.backends.direct import DirectConfig
    from caseflow.config import SHUTDOWN_MARGIN_SECONDS, Config, FinishConfig, GroupConfig
    from caseflow.retry import Policy
    from caseflow.transports.ssh_settings import SSHConfig

    documented = _documented_defaults()
    # each class, with the prefixes of the mappings its settings are read from
    sections = [(Config, ("", "stability.", "log.")), (Policy, ("retry.",)),
                (FinishConfig, ("",)), (GroupConfig, ("groups.",)),
                (SSHConfig, ("transport.",)),  # (and TransportConfig's, which it inherits)
                (DirectConfig, ("backend.",))]
    seen = []
    for cls, prefixes in sections:
        for f in fields(cls):
            if "doc" not in f.metadata:
                continue
            assert f.metadata["doc"], f"{cls.__name__}.{f.name}: no doc"
            name = f.metadata["key"] or f.name
            if cls is GroupConfig:  # a group's settings are in the `groups` row
                assert f.name == "slots" and f.default == 1
                assert "one slot each" in (ROOT / "docs" / "configuration.md").read_text()
                seen.append(f.name)
                continue
            keys = [p + name for p in prefixes if p + name in documented]
            assert len(keys) == 1, f"{cls.__name__}.{f.name}: documented as {keys}"
            shown = documented[keys[0]]
            if f.name == "shutdown_timeout_seconds":  # its default follows the grace
                assert shown == f"grace + `{SHUTDOWN_MARGIN_SECONDS:g}`"
            else:
                assert shown == _shown(f.default), f"{keys[0]}: documented {shown}"
            seen.append(f.name)
    assert len(seen) == 25  # the control: the settings were found
