"""Adapters are found by name through entry points: caseflow's own, and a third party's
shipped as a package of its own, which is configured and reports its mistakes like the core.

The third-party package is a real wheel, written here and installed by pip into a folder of
its own (no network: --no-index); the daemon, the CLI and the config reader find it on the
path, as they would in an environment where it was installed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from caseflow import plugins
from caseflow.backends import BackendAdapter, BackendConfig, make_backend
from caseflow.config import load_config
from caseflow.errors import ConfigError
from caseflow.transports import TransportAdapter, TransportConfig, make_transport

ROOT = Path(__file__).resolve().parents[1]

# A transport that is the local one plus a log of every command it runs (`log:`, a path
# relative to the config file, required), and a backend that is the direct runner plus one
# variable in each job's environment (`tag:`, default "untagged"). Both read their options
# with caseflow's reader, as caseflow's own adapters do.
PLUGIN = '''
from dataclasses import dataclass

from caseflow.backends import BackendAdapter, BackendConfig
from caseflow.backends.direct import DirectBackend
from caseflow.config.reader import NUMBER, can_make, not_negative
from caseflow.transports import TransportAdapter, TransportConfig
from caseflow.transports.local import LocalTransport


@dataclass(frozen=True, kw_only=True)
class MirrorConfig(TransportConfig):
    log: str
    delay: float = 0.0

    def local_folders(self):
        from pathlib import Path
        return [("transport.root", Path(self.root))]


class MirrorTransport(LocalTransport):
    def __init__(self, cfg):
        super().__init__(cfg.name, cfg.root, verify=cfg.verify)
        self.log = cfg.log

    def run(self, argv, timeout=60.0):
        with open(self.log, "a") as f:
            f.write(argv[0] + "\\n")
        return super().run(argv, timeout)


def read_mirror(section):
    tr = section.reader
    name = section.name("mirror")
    log = str(section.path(tr.get("log", str)))
    delay = float(tr.get("delay", NUMBER, MirrorConfig.delay, not_negative))
    tr.finish()
    root = section.path(section.core["root"])
    can_make(tr, "root", root)
    return MirrorConfig(**{**section.core, "root": str(root)}, name=name, log=log, delay=delay)


MIRROR = TransportAdapter(config=MirrorConfig, read=read_mirror, open=MirrorTransport,
                          tools=("sh", "caseflow-no-such-tool"))


@dataclass(frozen=True)
class TaggedConfig(BackendConfig):
    tag: str = "untagged"


class TaggedBackend(DirectBackend):
    def __init__(self, transport, tag):
        super().__init__(transport)
        self.tag = tag

    def submit(self, job):
        return super().submit(type(job)(**{**job.__dict__,
                                           "env": {**job.env, "CASEFLOW_TAG": self.tag}}))


def read_tagged(section):
    word = lambda v: None if v.isalnum() else "must be letters and digits"
    return TaggedConfig(**section.core, tag=section.reader.get("tag", str, "untagged", word))


TAGGED = BackendAdapter(config=TaggedConfig, read=read_tagged,
                        open=lambda host, t: TaggedBackend(t, host.backend.tag),
                        tools=("setsid", "sh"))
NOT_AN_ADAPTER = object()
'''

ENTRY_POINTS = """\
[caseflow.transports]
mirror = caseflow_mirror:MIRROR
broken = caseflow_mirror.missing:MIRROR
wrong = caseflow_mirror:NOT_AN_ADAPTER

[caseflow.backends]
tagged = caseflow_mirror:TAGGED
"""


def _wheel(folder: Path, name: str, files: dict[str, str]) -> Path:
    """A pure-Python wheel of `files` (path: text), with a valid RECORD."""
    dist = name.replace("-", "_")
    info = f"{dist}-1.0.dist-info"
    files = {**files,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: caseflow-tests\n"
                              "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    wheel = folder / f"{dist}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return wheel


def _install(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    """pip installs the wheel into a folder of its own; returns the folder."""
    target = tmp_path / f"site-{name}"
    wheel = _wheel(tmp_path, name, files)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", "--target", str(target), str(wheel)], check=True,
                   capture_output=True, text=True)
    return target


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("plugin")
    info = "caseflow_mirror-1.0.dist-info"
    return _install(tmp, "caseflow-mirror", {"caseflow_mirror/__init__.py": PLUGIN,
                                             f"{info}/entry_points.txt": ENTRY_POINTS})


@pytest.fixture
def installed(plugin_site, monkeypatch) -> Path:
    """The plugin on this process's path, as if installed here."""
    monkeypatch.syspath_prepend(str(plugin_site))
    return plugin_site


def _mirror(ws, **options):
    return ws.write_config(transport={"kind": "mirror", "root": "remote", "log": "commands.log",
                                      **options})


# -- caseflow's own ------------------------------------------------------------------------
def test_caseflow_registers_its_own_adapters_as_the_fallback_says():
    """pyproject.toml registers each of caseflow's adapters; the installed metadata says the
    same, and the fallback for a source checkout (plugins.OWN) agrees with both."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    for group, kind in ((plugins.TRANSPORTS, TransportAdapter),
                        (plugins.BACKENDS, BackendAdapter)):
        assert project[group] == plugins.OWN[group]
        installed = {ep.name: ep.value for ep in metadata.entry_points(group=group)
                     if ep.dist is not None and ep.dist.name == "caseflow"}
        assert installed == plugins.OWN[group], "reinstall: pip install -e ."
        for name in plugins.OWN[group]:
            adapter = plugins.load(group, name, kind)
            base = TransportConfig if kind is TransportAdapter else BackendConfig
            assert issubclass(adapter.config, base)


def test_a_source_checkout_without_installation_finds_caseflows_adapters(tmp_path):
    """Without the installed metadata (no site-packages at all: python -S), caseflow's own
    adapters are still found, from the fallback."""
    code = ("import caseflow.plugins as p; "
            "print(sorted(p.registered(p.TRANSPORTS)), sorted(p.registered(p.BACKENDS)))")
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT / "engine")},
                          check=True)
    assert proc.stdout.strip() == ("['local', 'openssh', 'ssh'] "
                                   "['direct', 'gridengine', 'pueue', 'slurm']")


def test_settings_of_a_kind_are_built_by_its_adapter():
    """TransportConfig(kind=...) and BackendConfig(kind=...) build the adapter's settings."""
    from caseflow.backends.pueue import PueueConfig
    from caseflow.transports.ssh_settings import SSHConfig
    t = TransportConfig(kind="ssh", name="h", root="/r", host="h.example")
    assert type(t) is SSHConfig and t.connect_timeout == 15.0
    b = BackendConfig(kind="pueue", command="true")
    assert type(b) is PueueConfig and b.pueue == ("pueue",)
    with pytest.raises(ValueError, match="unknown transport kind 'nope'"):
        TransportConfig(kind="nope", name="h", root="/r")


# -- a third party's ----------------------------------------------------------------------
def test_a_third_party_adapter_is_found_configured_and_used(ws, installed):
    _mirror(ws, delay=0.5)
    ws.write_config(backend={"kind": "tagged", "command": ws.settings["backend"]["command"],
                             "tag": "blue"})
    config = load_config(ws.config_path)
    t, b = config.transport, config.backend
    assert type(t).__name__ == "MirrorConfig" and t.log == str(ws.root / "commands.log")
    assert t.delay == 0.5 and t.verify == "size" and t.name == "mirror"
    assert type(b).__name__ == "TaggedConfig" and b.tag == "blue"
    transport = make_transport(t)
    assert type(transport).__name__ == "MirrorTransport"
    assert type(make_backend(config.hosts[0], transport)).__name__ == "TaggedBackend"
    ws.start()
    ws.drop_case("plugged")
    row = ws.wait_state("plugged", "success", "failure", "not_found")
    assert row.state == "success", row.reason
    job_env = (Path(row.remote_path) / "job_env.txt").read_text()
    assert "CASEFLOW_TAG=blue" in job_env
    assert "sh" in (ws.root / "commands.log").read_text().split()


@pytest.mark.parametrize("options, key, words", [
    ({"dealy": 1}, "transport.dealy", "unknown key (did you mean 'delay'?)"),
    ({"delay": "soon"}, "transport.delay", "expected a number, got str 'soon'"),
    ({"delay": -1}, "transport.delay", "must not be negative"),
    ({"log": None, "logs": "x.log"}, "transport.logs", "unknown key (did you mean 'log'? "
                                                     "transport.log is required)"),
    ({"log": None}, "transport.log", "is required"),
    ({"root": "no/such/parent"}, "transport.root", "does not exist"),
])
def test_a_third_party_adapters_mistakes_read_like_the_cores(ws, installed, options, key,
                                                             words):
    path = _mirror(ws, **options)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {key}: "), str(err.value)
    assert words in str(err.value)


def test_a_third_party_backends_mistakes_read_like_the_cores(ws, installed):
    path = ws.write_config(backend={"kind": "tagged", "command": "true", "tag": "not one"})
    with pytest.raises(ConfigError, match=r": backend.tag: must be letters and digits \(got 'not one'\)$"):
        load_config(path)
    path = ws.write_config(backend={"kind": "tagged", "command": "true", "tga": "x"})
    with pytest.raises(ConfigError, match=r": backend.tga: unknown key \(did you mean 'tag'"):
        load_config(path)


@pytest.mark.parametrize("kind, words", [
    ("broken", "transport 'broken' (registered by caseflow-mirror 1.0 as "
               "caseflow_mirror.missing:MIRROR) cannot be loaded: ModuleNotFoundError"),
    ("wrong", "transport 'wrong' (registered by caseflow-mirror 1.0 as "
              "caseflow_mirror:NOT_AN_ADAPTER) is not a caseflow TransportAdapter but object"),
])
def test_an_adapter_that_cannot_be_used_is_a_config_error_at_its_kind(ws, installed, kind,
                                                                      words):
    path = ws.write_config(transport={"kind": kind, "root": "remote"})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: transport.kind: {words}" or \
        str(err.value).startswith(f"{path}: transport.kind: {words}"), str(err.value)


def test_a_name_two_packages_register_is_refused_naming_both(ws, installed, tmp_path,
                                                             monkeypatch):
    other = _install(tmp_path, "other-mirror", {
        "other_mirror/__init__.py": "from caseflow_mirror import MIRROR\n",
        "other_mirror-1.0.dist-info/entry_points.txt":
            "[caseflow.transports]\nmirror = other_mirror:MIRROR\n"})
    monkeypatch.syspath_prepend(str(other))
    path = _mirror(ws)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: transport.kind: transport 'mirror' is registered by "
                              "more than one package"), message
    assert "caseflow-mirror 1.0 as caseflow_mirror:MIRROR" in message
    assert "other-mirror 1.0 as other_mirror:MIRROR" in message


def test_the_cli_finds_the_third_party_adapter_and_its_tools(ws, plugin_site):
    """`caseflow check` in a process of its own, with the plugin on its path: the plugin's
    tool list is checked on the host; an unknown kind lists the plugin among the choices."""
    env = {"PYTHONPATH": str(plugin_site)}
    _mirror(ws)
    proc = ws.cli("check", env=env)
    assert "host mirror (mirror)" in proc.stdout, proc.stdout + proc.stderr
    assert "missing tools: caseflow-no-such-tool" in proc.stdout, proc.stdout
    ws.write_config(transport={"kind": "mirrror", "root": "remote"})
    proc = ws.cli("check", env=env)
    assert proc.returncode == 2
    assert "transport.kind: unknown transport 'mirrror'; choose one of" in proc.stderr
    assert "mirror" in proc.stderr.split("choose one of", 1)[1]


def test_a_run_with_a_third_party_adapters_mistake_exits_2_and_makes_nothing(ws, plugin_site):
    import shutil
    shutil.rmtree(ws.var)
    _mirror(ws, root="var/remote", delay="soon")
    before = sorted(p.relative_to(ws.root) for p in ws.root.rglob("*"))
    proc = ws.cli("run", env={"PYTHONPATH": str(plugin_site)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{ws.config_path}: transport.delay: expected a number" in proc.stderr
    assert sorted(p.relative_to(ws.root) for p in ws.root.rglob("*")) == before
