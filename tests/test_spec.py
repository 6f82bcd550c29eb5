"""The machine is data: the spec loads, every callback it names exists, the diagram follows it."""

import re
from pathlib import Path

import pytest

from caseflow.core.case_model import Case
from caseflow.diagram import render
from caseflow.errors import SpecError
from caseflow.core.machine import CaseMachine
from caseflow.spec import POLL, load_spec
from harness import is_valid_path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "case_machine.yaml"


@pytest.fixture(scope="module")
def spec():
    return load_spec(SPEC)


def test_states_are_the_designs(spec):
    assert spec.state_names == ["detected", "stable", "queued", "gpu_locked", "uploaded",
                                "running", "success", "failure", "not_found"]
    assert spec.initial == "detected"
    assert spec.terminal_states == ["success", "failure", "not_found"]
    assert spec.slot_states == ["gpu_locked", "uploaded", "running"]


def test_every_named_callback_is_a_method_of_the_case_model(spec):
    named = {"persist"}
    for s in spec.states:
        named.update(s.on_enter, s.on_exit)
    for t in spec.transitions:
        for callbacks in t.callbacks.values():
            named.update(callbacks)
    assert {"release_slot", "upload_case", "kill_job"} <= named  # the control: names were found
    missing = [n for n in named if not callable(getattr(Case, n, None))]
    assert missing == []


def test_no_case_attribute_shadows_a_trigger(spec):
    # transitions silently refuses to add a trigger whose name the model already has
    clashes = [t for t in spec.triggers if hasattr(Case, t)]
    assert clashes == []


def test_every_active_state_has_a_step_and_terminal_states_have_none(spec):
    for s in spec.states:
        if s.terminal:
            assert s.step is None
        else:
            assert s.step == POLL or s.name in spec.sources_of(s.step), s.name


def test_every_terminal_state_releases_the_slot(spec):
    for name in spec.terminal_states:
        assert "release_slot" in spec.state(name).on_enter


def test_legal_moves_come_from_the_spec(spec):
    m = CaseMachine(spec)
    assert m.allowed("retry", "failure") and m.allowed("retry", "not_found")
    assert not m.allowed("retry", "success")
    assert not m.allowed("complete", "queued")
    for s in spec.active_states:
        assert m.allowed("fail", s) and m.allowed("cancel", s)
    for s in spec.terminal_states:
        assert not m.allowed("cancel", s)


def test_history_path_check(spec):
    ok = [(None, "detected", "detect"), ("detected", "stable", "stabilize"),
          ("stable", "queued", "enqueue"), ("queued", "failure", "fail"),
          ("failure", "stable", "retry")]
    assert is_valid_path(spec, ok)
    assert not is_valid_path(spec, [(None, "detected", "detect"), ("detected", "running", "submit")])
    assert not is_valid_path(spec, [(None, "stable", "detect")])


def _write(tmp_path, text):
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return p


def test_an_unknown_state_in_a_transition_is_refused(tmp_path):
    text = SPEC.read_text().replace("dest: not_found", "dest: lost_forever")
    with pytest.raises(SpecError, match="lost_forever"):
        load_spec(_write(tmp_path, text))


def test_a_new_state_needs_a_reason(tmp_path):
    text = SPEC.read_text().replace("transitions:", "  - name: paused\n    description: x\n"
                                                   "transitions:", 1)
    with pytest.raises(SpecError, match="why"):
        load_spec(_write(tmp_path, text))
    text = text.replace("description: x", "description: x\n    why: the remote queue pauses")
    with pytest.raises(SpecError, match="'paused' is not terminal but no transition with the "
                                        "role 'fail' leaves it"):
        load_spec(_write(tmp_path, text))
    # the permanent error's and the cancel's transitions (both list every active state)
    active = "source: [detected, stable, queued, gpu_locked, uploaded, running"
    assert text.count(active + "]") == 2
    text = text.replace(active + "]", active + ", paused]")
    assert "paused" in load_spec(_write(tmp_path, text)).state_names


def test_every_active_state_can_be_failed_and_cancelled(tmp_path):
    """A state nothing ends would be stepped every tick for ever, out of an operator's reach."""
    text = SPEC.read_text()
    without_cancel = text.replace(
        "source: [detected, stable, queued, gpu_locked, uploaded, running]\n    dest: failure\n"
        "    before: [kill_job",
        "source: [detected, stable, queued, gpu_locked, uploaded]\n    dest: failure\n"
        "    before: [kill_job")
    assert without_cancel != text
    with pytest.raises(SpecError, match="'running' is not terminal but no transition with the "
                                        "role 'request' leaves it: an operator's cancel"):
        load_spec(_write(tmp_path, without_cancel))


def test_a_step_must_leave_its_state(tmp_path):
    text = SPEC.read_text().replace("step: enqueue", "step: complete")
    with pytest.raises(SpecError, match="step 'complete'"):
        load_spec(_write(tmp_path, text))


def test_committed_diagram_matches_the_spec(spec):
    committed = (ROOT / "specs" / "case_machine.mmd").read_text()
    assert committed.strip() == render(spec, "mermaid").strip(), \
        "specs/case_machine.mmd is stale: run `make diagram`"


def _fences(path: Path) -> list:
    """The fenced code blocks of a Markdown file, as a CommonMark parser reads them."""
    from markdown_it import MarkdownIt
    return [t for t in MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8"))
            if t.type == "fence"]


def test_readme_shows_the_current_diagram(spec):
    """Parsed as GitHub does (CommonMark): the Mermaid block is exactly the committed
    diagram, so it closes where the diagram ends (a fence on the diagram's last line
    would not close it and swallow the rest of the page)."""
    blocks = [t for t in _fences(ROOT / "README.md") if t.info.strip() == "mermaid"]
    assert len(blocks) == 1, "the README shows the diagram once"
    assert blocks[0].content == (ROOT / "specs" / "case_machine.mmd").read_text(), \
        "the README's mermaid diagram differs from specs/case_machine.mmd: paste it"
    assert blocks[0].content == render(spec, "mermaid").rstrip("\n") + "\n"


def test_every_fenced_block_closes_where_it_should():
    """A fence left open runs to the end of the page; a closing fence glued to a line is
    content. Each block a parser finds must end at a line that is only a fence, and no
    block's text may hold a fence of its own."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines = page.read_text(encoding="utf-8").splitlines()
        for block in _fences(page):
            start, end = block.map
            closing = lines[end - 1].strip() if end - 1 < len(lines) else ""
            assert end - 1 > start and re.fullmatch(r"(`{3,}|~{3,})", closing), \
                f"{page.name}: the block opened on line {start + 1} does not close on a line " \
                "of its own"
            assert "```" not in block.content, f"{page.name}: line {start + 1}: a fence inside " \
                "a block"


def test_the_diagram_file_ends_with_a_newline(tmp_path):
    import subprocess
    import sys
    target = tmp_path / "m.mmd"
    subprocess.run([sys.executable, "-m", "caseflow.cli", "diagram", "-o", str(target)],
                   check=True, timeout=60)
    assert target.read_text().endswith("detected\n")
    assert (ROOT / "specs" / "case_machine.mmd").read_text() == target.read_text()


def test_diagram_shows_every_transition(spec):
    text = render(spec, "mermaid")
    for t in spec.transitions:
        for src in t.sources:
            assert re.search(rf"^\s*{src} --> {t.dest}: .*\b{t.trigger}\b", text, re.M), \
                (src, t.dest, t.trigger)


def test_dot_and_svg_export(spec):
    dot = render(spec, "dot")
    assert "digraph" in dot and "gpu_locked" in dot
    svg = render(spec, "svg")
    assert svg.lstrip().startswith(b"<?xml") or b"<svg" in svg[:500]
    assert b"not_found" in svg


def test_the_engine_finds_its_triggers_by_role(spec):
    assert spec.trigger_for("fail") == "fail" and spec.trigger_for("requeue") == "requeue"
    assert spec.triggers_for("request") == ["retry", "cancel"]
    assert [spec.job_end_trigger(o) for o in ("success", "failure", "not_found")] == \
        ["complete", "fail", "lose"]
    assert spec.succeeded_states == ["success"] and spec.slot_taking_states == ["queued"]


def test_roles_are_checked(tmp_path):
    text = SPEC.read_text()
    with pytest.raises(SpecError, match="unknown role 'retire'"):
        load_spec(_write(tmp_path, text.replace("role: requeue", "role: retire")))
    with pytest.raises(SpecError, match="role 'job_lost' is given to several"):
        load_spec(_write(tmp_path, text.replace("role: job_success", "role: job_lost")))
    with pytest.raises(SpecError, match="no transition has the role 'fail'"):
        load_spec(_write(tmp_path, text.replace("role: [fail, job_failure]",
                                                "role: job_failure")))


def test_the_machine_answers_what_may_happen(spec):
    m = CaseMachine(spec)
    assert m.states_allowing("retry") == ["failure", "not_found"]
    assert m.states_allowing("cancel") == spec.active_states
