"""The remote shell scripts (engine/caseflow/*/scripts/*.sh) pass shellcheck, as files and as
they are sent (with the functions they use, without comments)."""

import importlib
import re
import shutil
import subprocess
from importlib import resources

import pytest

from caseflow.transports import shell

PACKAGES = ["caseflow.transports", "caseflow.backends"]
# every module that loads scripts, so that shell.LOADED holds what each of them sends
MODULES = ["caseflow.transports.ssh", "caseflow.transports.ssh_upload",
           "caseflow.backends.direct", "caseflow.backends.slurm", "caseflow.backends.pueue",
           "caseflow.backends.gridengine", "caseflow.job_output"]
SHELLCHECK = shutil.which("shellcheck")


def packaged_scripts() -> list[tuple[str, str]]:
    return sorted((package, entry.name) for package in PACKAGES
                  for entry in (resources.files(package) / "scripts").iterdir()
                  if entry.name.endswith(".sh"))


def shellcheck(text: str, name: str, exclude=()) -> subprocess.CompletedProcess:
    assert SHELLCHECK, "shellcheck is missing: bash .ci/system-deps installs it"
    return subprocess.run([SHELLCHECK, "--shell=sh", "--severity=style", "--format=gcc",
                           *(f"--exclude={code}" for code in exclude), "-"],
                          input=text, capture_output=True, text=True)


def test_every_module_script_is_a_packaged_file():
    names = {name for _, name in packaged_scripts()}
    assert {"unpack.sh", "fetch.sh", "direct-status.sh", "slurm-poll.sh",
            "slurm-job.sh", "pueue-poll.sh", "pueue-submit.sh"} <= names
    for module in MODULES:
        importlib.import_module(module)
    used = {part for key in shell.LOADED for part in key.split("/", 1)[1].split("+")}
    assert used <= names


@pytest.mark.parametrize("package, name", packaged_scripts())
def test_a_packaged_script_passes_shellcheck(package, name):
    res = shellcheck(shell.source(package, name), name)
    assert res.returncode == 0, f"{package}/scripts/{name}:\n{res.stdout}{res.stderr}"


def test_the_scripts_as_sent_pass_shellcheck():
    for module in MODULES:
        importlib.import_module(module)
    assert len(shell.LOADED) >= 12
    for key, text in shell.LOADED.items():
        package, parts = key.split("/", 1)
        # what the files' own directives disable (the directives are comments: not sent)
        disabled = set(re.findall(r"# shellcheck disable=(SC\d+)", "".join(
            shell.source(package, part) for part in parts.split("+"))))
        res = shellcheck("#!/bin/sh\n" + text, key, disabled)
        assert res.returncode == 0, f"{key} as sent:\n{res.stdout}{res.stderr}"
        assert "\n#" not in "\n" + text and "\n\n" not in text


def test_shellcheck_finds_what_it_should():
    """The check above could not pass by accident: a script with an unquoted expansion fails."""
    res = shellcheck('#!/bin/sh\nrm -rf $1/x\n', "bad.sh")
    assert res.returncode != 0 and "SC2086" in res.stdout
