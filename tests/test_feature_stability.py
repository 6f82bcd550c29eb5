"""Steps of features/stability.feature: the quiet period, and what is not a case."""

import shutil

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

# the shared steps assert with plain `assert`; let pytest explain their failures
pytest.register_assert_rewrite("bdd_steps")

from bdd_steps import *  # noqa: E402,F401,F403  (shared steps become fixtures here)
from bdd_steps import Writer  # noqa: E402
from harness import wait_for  # noqa: E402

scenarios("stability.feature")

# File times come from the kernel's coarse clock, which may lag the wall clock by up to
# one clock tick (10 ms at most); allow twice that when comparing with time.time().
CLOCK_TICK = 0.02


@given(parsers.parse("the quiet period is {seconds:g} seconds"))
def quiet_period(ws, seconds):
    ws.write_config(stability={**ws.settings["stability"], "quiet_seconds": seconds})


@given(parsers.parse('a copy into the inbox folder "{name}" adds a file every {interval:g} '
                     'seconds for {duration:g} seconds'))
@when(parsers.parse('a copy into the inbox folder "{name}" adds a file every {interval:g} '
                    'seconds for {duration:g} seconds'))
def copy_adds_files(ws, context, name, interval, duration):
    context.writers[name] = Writer(ws.inbox / name, interval, duration, mode="files").start()


@when(parsers.parse('the case folder "{name}" is dropped into the inbox while its file '
                    '"{path}" still grows every {interval:g} seconds for {duration:g} seconds'))
def drop_with_growing_file(ws, context, name, path, interval, duration):
    parent, _, filename = path.rpartition("/")
    ws.make_case(name, files={"case.yaml": "", f"{parent}/{filename}": b"s" * 512,
                              "header.txt": "header"})
    (ws.root / "staging" / name).rename(ws.inbox / name)
    context.writers[name] = Writer(ws.inbox / name / parent, interval, duration,
                                   mode="append", filename=filename).start()


@then(parsers.parse('the case "{name}" stays detected as long as the copy goes on'))
def stays_detected(ws, context, name):
    writer = context.writers[name]
    seen = []

    def copy_over():
        row = ws.case(name)
        if row is not None:
            seen.append(row.state)
            assert row.state == "detected", (
                f"case {name!r} became {row.state} while the copy was still writing")
        return not writer.running

    wait_for(copy_over, what=f"the copy into {name!r} to end")
    assert writer.error is None, f"the copy failed: {writer.error!r}"
    assert "detected" in seen, f"case {name!r} was never seen while the copy went on"


@then(parsers.parse('the case "{name}" became stable no sooner than {seconds:g} seconds after '
                    'the last write of the copy'))
def stable_not_too_soon(ws, context, name, seconds):
    writer = context.writers[name]
    stabilized = [h.at for h in ws.store.history(ws.case(name).id) if h.trigger == "stabilize"]
    assert len(stabilized) == 1, ws.history(name)
    stable_at = stabilized[0]
    quiet_for = stable_at - writer.last_write
    assert quiet_for >= seconds - CLOCK_TICK, (
        f"case {name!r} became stable {quiet_for:.3f} s after the last write")


@given(parsers.parse('the file "{file}" and the hidden folder "{hidden}" are in the inbox'))
@when(parsers.parse('the file "{file}" and the hidden folder "{hidden}" appear in the inbox'))
def not_cases(ws, file, hidden):
    (ws.inbox / file).write_text("not a case\n")
    ws.make_case(hidden, where=ws.inbox)


@when(parsers.parse('the copy is given up and the folder "{name}" is deleted'))
def copy_given_up(ws, context, name):
    writer = context.writers[name]
    writer.stop()
    assert writer.error is None, f"the copy failed: {writer.error!r}"
    row = ws.case(name)
    assert row.state == "detected", f"case {name!r} was already {row.state} before the deletion"
    shutil.rmtree(ws.inbox / name)
