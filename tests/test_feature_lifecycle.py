"""Steps of features/lifecycle.feature: success, a failing job, retry and cancel."""

import pytest
from pytest_bdd import parsers, scenarios, then, when

# the shared steps assert with plain `assert`; let pytest explain their failures
pytest.register_assert_rewrite("bdd_steps")

from bdd_steps import *  # noqa: E402,F401,F403  (shared steps become fixtures here)
from bdd_steps import shown  # noqa: E402

scenarios("lifecycle.feature")


@when(parsers.parse('the operator deletes the file "{file}" from the inbox folder "{name}"'))
def delete_file(ws, file, name):
    (ws.inbox / name / file).unlink()


@then(parsers.parse('the case "{name}" is on its second run'))
def second_run(ws, name):
    assert shown(ws, name)["run"] == 2


@then(parsers.parse('the result of "{name}" is in its folder on the GPU host'))
def result_on_host(ws, name):
    case = shown(ws, name)
    result = ws.remote_folder(name) / "output" / "result.txt"
    assert result.read_text().strip() == f"result of {case['id']}"
