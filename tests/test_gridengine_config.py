"""The `gridengine` backend's settings: the shipped example, what qsub is told per group, and
mistakes named with their file and key. No Grid Engine needed."""

from pathlib import Path

import pytest
import yaml

from caseflow.backends import JobSpec
from caseflow.backends.gridengine import GridEngineBackend
from caseflow.backends.gridengine_options import GridEngineOptions
from caseflow.config import load_config
from caseflow.errors import ConfigError, PermanentError

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_gridengine_example_is_valid(tmp_path):
    """config/gridengine.yaml, with its host-specific paths pointed at a temp folder, loads."""
    data = yaml.safe_load((ROOT / "config" / "gridengine.yaml").read_text())
    (tmp_path / "inbox").mkdir()
    data["inbox"] = str(tmp_path / "inbox")
    data["database"] = str(tmp_path / "caseflow.db")
    data["log"]["file"] = str(tmp_path / "caseflow.log")
    data["results"]["folder"] = str(tmp_path / "results")
    data["archive"] = {k: str(tmp_path / k) for k in data["archive"]}
    path = tmp_path / "gridengine.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    assert config.backend.kind == "gridengine" and config.transport.kind == "ssh"
    assert config.backend.gridengine_options("gpu_a").qsub_args() == [
        "-q", "gpu.q", "-l", "gpu=1", "-l", "h_rt=4:00:00", "-l", "h_vmem=32G", "-P", "imaging"]
    assert config.backend.gridengine_options("gpu_big").qsub_args() == [
        "-q", "gpu.q", "-pe", "smp", "16", "-l", "gpu=4", "-l", "h_rt=24:00:00", "-l",
        "h_vmem=8G", "-P", "imaging"]


def test_what_qsub_is_told_and_the_job_script_gets():
    job = JobSpec(case_id=3, label="caseflow-x-3-1", remote_path="/scratch/3-a", group="gpu_a",
                  command="echo hi", env={"CASEFLOW_CASE_NAME": "a\nb\\c"}, device="1")
    assert GridEngineBackend(None).qsub_args(job) == [
        "-N", "caseflow-x-3-1", "-wd", "/scratch/3-a", "-o", "/dev/null", "-j", "y",
        "-b", "n", "-S", "/bin/sh", "-notify", "/scratch/3-a/.caseflow/gridengine-job.sh",
        "env", "CASEFLOW_CASE_NAME=a\\0012b\\0134c", "CASEFLOW_JOB=caseflow-x-3-1",
        "CUDA_VISIBLE_DEVICES=1",
        "sh", "-c", "echo hi"]
    assert GridEngineOptions().qsub_args() == []
    with pytest.raises(PermanentError, match="expand the '\\$'"):
        GridEngineBackend(None).qsub_args(JobSpec(3, "l", "/scratch/$USER/3-a", "g", "true"))
    # Grid Engine cuts -wd at a line break: the job would wait in Eqw for good
    with pytest.raises(PermanentError, match="line break.*rename the case folder"):
        GridEngineBackend(None).qsub_args(JobSpec(3, "l", "/scratch/3-a\nb", "g", "true"))


@pytest.mark.parametrize("backend, message", [
    ({"groups": {"gpu_z": {"queue": "a.q"}}},
     r"backend\.groups\.gpu_z: not a configured group \(configured: gpu_a\)"),
    ({"queue": "two words"}, r"backend\.queue: must be a non-empty word without spaces"),
    ({"slots_per_job": 4}, r"backend\.slots_per_job: more than one slot needs a "
                           r"parallel_environment"),
    ({"slots_per_job": 0}, r"backend\.slots_per_job: must be greater than 0"),
    ({"resources": ["gpu"]}, r"backend\.resources: str 'gpu': not a resource request"),
    ({"resources": "gpu=1"}, r"backend\.resources: expected a list of resource requests"),
    ({"extra_args": ["-N", "mine"]}, r"backend\.extra_args: str '-N': caseflow sets the "
                                     r"job's name"),
    ({"extra_args": ["-wd"]}, r"backend\.extra_args: str '-wd': caseflow sets"),
    ({"groups": {"gpu_a": {"queu": "x"}}},
     r"backend\.groups\.gpu_a\.queu: unknown key \(did you mean 'queue'\?\)"),
    ({"gpus_per_job": 1}, r"backend\.gpus_per_job: unknown key"),
])
def test_gridengine_settings_are_checked_naming_file_and_key(tmp_path, backend, message):
    (tmp_path / "inbox").mkdir()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "inbox": "inbox", "groups": {"gpu_a": 1},
        "transport": {"kind": "local", "root": "remote"},
        "backend": {"kind": "gridengine", "command": "true", **backend}}))
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        load_config(path)


def test_a_remote_root_with_a_dollar_is_refused(tmp_path):
    """Grid Engine expands $HOME, $USER, $JOB_ID, ... in a job's working directory."""
    (tmp_path / "inbox").mkdir()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "inbox": "inbox", "groups": {"gpu_a": 1},
        "transport": {"kind": "local", "root": "cases-of-$USER"},
        "backend": {"kind": "gridengine", "command": "true"}}))
    with pytest.raises(ConfigError, match=r"transport\.root: must not contain '\$'"):
        load_config(path)
