"""A real one-host Grid Engine for the tests, reached over SSH like a real GPU host.

Debian 12's gridengine packages (Son of Grid Engine 8.1.9; .ci/system-deps installs them without
starting Debian's own daemons). Debian's cell under /var/lib/gridengine is never used: the cell
of one cluster (SGE_ROOT, cell "default"), its spools and logs all live under `root`, and the
qmaster and the execd run in the foreground (SGE_ND) as children of this process, as root
(`admin_user none`, so `root` may sit under pytest's 0700 tmp), with flat-file spooling (no
Berkeley DB to recover after a kill). Both daemons bind 0.0.0.0, so the whole cluster lives in
a loopback-only network namespace of its own, like tests/slurm_cluster.py's: the daemons, every
Grid Engine command (`run()`), and an sshd (tests/sshd.py's `SSHServer`) whose sessions have
SGE_ROOT, SGE_CELL and the ports set. The test process reaches the sshd through the same
two-piece bridge as the Slurm cluster's (a `Relay` thread here, tests/slurm_cluster.py run as
`relay` inside the namespace).

Settings for fast tests (measured in /work/sge-probe/FINDINGS.md, kept here): the scheduler
runs every second and right after a submission or a job's end (Debian: every 15 s), accounting
records are written at once (Debian: up to 15 s after the job's end), the execd reports every
2 s (Debian: 40 s; a cleared Eqw job waited 78 s for it to run again), `min_uid 0` so that root
may submit (Debian refuses uids below 1000), queues without load thresholds (a loaded test
machine would put them in alarm state), `shell_start_mode unix_behavior`.

    with GridEngineCluster(tmp, queues={"all.q": 8, "one.q": 1}) as cluster:
        cluster.run(["qstat", "-xml"])                                # inside the namespace
        TransportConfig(**cluster.transport_settings(remote_root))   # caseflow over SSH

`stop()` kills every process of the namespace (daemons, shepherds, jobs, sshd sessions) at
once (a graceful qmaster shutdown takes 5-11 s; the state is wiped at every start anyway).
Root is needed (namespaces, a qmaster that runs jobs as their owner).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import slurm_cluster
from sshd import Relay, SSHServer

GE_COMMANDS = ("qsub", "qstat", "qacct", "qdel", "qconf", "sge_qmaster", "sge_execd")
SYSTEM_COMMANDS = ("unshare", "nsenter", "ip", "umount")
SSH_PORT = 22  # the sshd's port inside the namespace
CELL = "default"
QMASTER_PORT, EXECD_PORT = 6444, 6445  # private to the namespace: clusters never clash
DEBIAN = Path("/var/lib/gridengine")  # the binaries (bin, lib, utilbin, util) we link to
SHARE = Path("/usr/share/gridengine")  # the default configuration and resources
SPOOLTOOLS = Path("/usr/lib/gridengine")  # spoolinit, spooldefaults


class GridEngineError(RuntimeError):
    pass


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def missing_commands() -> list[str]:
    return [c for c in GE_COMMANDS + SYSTEM_COMMANDS
            if not (shutil.which(c) or Path("/usr/sbin", c).exists())]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"({path}: no log)"
    return f"--- {path}:\n" + "\n".join(text)


def _edit(text: str, values: Mapping[str, str]) -> str:
    """A Grid Engine configuration ("key value" lines) with the keys in `values` set."""
    lines = []
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        lines.append(f"{key} {values[key]}" if key in values else line)
    return "\n".join(lines) + "\n"


class GridEngineCluster:
    """One Grid Engine host (qmaster and execd) with the given queues ({name: slots}) and an
    sshd, in a network namespace under `root`. `parallel_environments`: names of parallel
    environments (all slots on one host, `$pe_slots`) that every queue offers."""

    def __init__(self, root: Path, *, queues: Mapping[str, int] | None = None,
                 parallel_environments: tuple[str, ...] = (), timeout: float = 60,
                 accounting_flush_time: str = "00:00:00"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.queues = dict(queues or {"all.q": 4})
        self.parallel_environments = parallel_environments  # each in every queue
        self.timeout = timeout
        # when a job's accounting record is written after its end (Debian's default: 15 s)
        self.accounting_flush_time = accounting_flush_time
        self.sge_root = self.root / "root"       # SGE_ROOT; wiped at every start
        self.common = self.sge_root / CELL / "common"
        self.spool = self.root / "spool"
        self.log = self.root / "log"
        self.netns = self.root / "netns"
        self.relay_socket = self.root / "sshd.sock"
        self.host = ""                           # the host name as Grid Engine sees it
        self.sshd: SSHServer | None = None
        self.bridge: Relay | None = None
        self.start_seconds: float | None = None
        self.timings: dict[str, float] = {}      # seconds since start() for each step
        self._procs: dict[str, subprocess.Popen] = {}
        self._netns_id: str | None = None

    # -- public API -----------------------------------------------------------------------
    @property
    def sge_env(self) -> dict[str, str]:
        """What every Grid Engine command needs (Debian's wrappers keep these)."""
        return {"SGE_ROOT": str(self.sge_root), "SGE_CELL": CELL,
                "SGE_QMASTER_PORT": str(QMASTER_PORT), "SGE_EXECD_PORT": str(EXECD_PORT)}

    @property
    def accounting(self) -> Path:
        """The accounting file qacct reads (accounting(5): one colon-separated line a job)."""
        return self.common / "accounting"

    def nsenter(self) -> list[str]:
        return [_which("nsenter"), f"--net={self.netns}"]

    def run(self, argv, *, check: bool = False, timeout: float = 60,
            input: str | None = None, env: Mapping[str, str] | None = None
            ) -> subprocess.CompletedProcess:
        """Run `argv` inside the namespace with the cell's environment; text captured."""
        return subprocess.run([*self.nsenter(), *argv],
                              env={**os.environ, **self.sge_env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, check=check,
                              input=input)

    def transport_settings(self, root: Path | str, **extra) -> dict:
        """The `transport:` section of a caseflow config that reaches the cluster's host."""
        from sshd import transport_settings
        assert self.sshd is not None, "cluster not started"
        return transport_settings(self.sshd, Path(root), **extra)

    def pids(self) -> list[int]:
        """Every live process in the cluster's namespace."""
        if self._netns_id is None:
            return []
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/net") == self._netns_id:
                        out.append(int(entry))
                except OSError:
                    pass
        return out

    def logs(self) -> str:
        messages = [self.spool / "qmaster" / "messages",
                    *sorted((self.spool / "execd").glob("*/messages"))]
        return "\n".join(_tail(p) for p in (self.log / "qmaster.out", self.log / "execd.out",
                                            *messages, self.root / "relay.log",
                                            self.root / "ssh" / "sshd.log"))

    def purge_accounting(self, job_id: str, name: str) -> None:
        """Remove the job's records from the accounting file, in place, as a rotation of the
        file (logchecker.sh) or a person tidying it does; the qmaster appends to it."""
        with open(self.accounting, "r+") as f:
            lines = f.readlines()
            keep = [ln for ln in lines if ln.startswith("#")
                    or ln.split(":")[4:6] != [name, job_id]]
            assert len(keep) < len(lines), f"job {job_id} has no accounting record"
            f.seek(0)
            f.writelines(keep)
            f.truncate()

    def kill_qmaster(self) -> None:
        """SIGKILL to the qmaster (a crash, an outage of the controller); the execd and the
        running jobs go on, and its spool keeps the jobs for `start_qmaster`."""
        proc = self._procs.pop("qmaster")
        proc.kill()
        proc.wait(timeout=30)

    def start_qmaster(self) -> None:
        """Start the qmaster again (after `kill_qmaster`) and wait until it answers."""
        self._spawn("qmaster", "sge_qmaster")
        self._wait("the qmaster answering again",
                   lambda: self.run(["qconf", "-sss"], timeout=30).returncode == 0, ("qmaster",))

    def __enter__(self) -> GridEngineCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- start --------------------------------------------------------------------------------
    def start(self) -> GridEngineCluster:
        missing = missing_commands()
        if missing:
            raise GridEngineError(
                f"the Grid Engine tests need {', '.join(missing)}: run .ci/system-deps as root "
                "(Debian: gridengine-master gridengine-exec gridengine-client, iproute2)")
        if os.geteuid() != 0:
            raise GridEngineError("the Grid Engine tests need root (network namespace, daemons)")
        t0 = time.monotonic()

        def mark(what: str) -> None:
            self.timings[what] = round(time.monotonic() - t0, 3)
        try:
            self._remove_netns()
            self._resolve_host()
            self._make_cell()
            self._make_netns()
            mark("cell, netns")
            self._spawn("qmaster", "sge_qmaster")
            self._wait("the qmaster answering",
                       lambda: self.run(["qconf", "-sss"], timeout=30).returncode == 0,
                       ("qmaster",))
            mark("qmaster")
            self._configure()
            self._spawn("execd", "sge_execd")
            self._wait("the queues ready", self._queues_ready, ("qmaster", "execd"))
            mark("queues ready")
            self._start_sshd()
            mark("sshd")
        except BaseException as exc:
            logs = self.logs()
            self.stop()
            if isinstance(exc, GridEngineError):
                raise GridEngineError(f"{exc}\n{logs}") from None
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _resolve_host(self) -> None:
        """Grid Engine names a client by gethostbyname(gethostname()) and by the reverse
        look-up of the address it connects from; both must give one name, else every client is
        refused ("client IP resolved to host name localhost. This is not identical to clients
        host name vm"). host_aliases makes them one. Nothing outside `root` is changed."""
        name = socket.gethostname()
        try:
            canonical, _, addresses = socket.gethostbyname_ex(name)
        except OSError as exc:
            raise GridEngineError(f"the host name {name!r} does not resolve ({exc}): add it "
                                  "to /etc/hosts (e.g. 127.0.1.1 NAME)") from None
        self.host, self.address = canonical, addresses[0]
        try:
            self.reverse = socket.gethostbyaddr(self.address)[0]
        except OSError:
            self.reverse = canonical

    def _make_cell(self) -> None:
        for d in (self.sge_root, self.spool, self.log, self.root / "tmpl"):
            shutil.rmtree(d, ignore_errors=True)
        for d in (self.common, self.spool / "qmaster" / "job_scripts", self.spool / "execd",
                  self.log, self.root / "tmpl" / "hosts"):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.root, self.sge_root, self.spool):
            d.chmod(0o755)
        for x in ("bin", "lib", "utilbin", "util"):
            (self.sge_root / x).symlink_to(DEBIAN / x)
        (self.common / "act_qmaster").write_text(f"{self.host}\n")
        if self.reverse != self.host:
            (self.common / "host_aliases").write_text(f"{self.host} {self.reverse}\n")
        qspool = self.spool / "qmaster"
        (self.common / "bootstrap").write_text("\n".join([
            "admin_user              none",
            "default_domain          none",
            "ignore_fqdn             true",
            "spooling_method         classic",
            "spooling_lib            libspoolc",
            f"spooling_params         {self.common};{qspool}",
            "binary_path             /usr/sbin",
            f"qmaster_spool_dir       {qspool}",
            "security_mode           none",
            "listener_threads        2",
            "worker_threads          2",
            "scheduler_threads       1",
            ""]))
        tmpl = self.root / "tmpl"
        (tmpl / "global").write_text(_edit((SHARE / "default-configuration").read_text(), {
            "execd_spool_dir": str(self.spool / "execd"),
            "min_uid": "0",
            "min_gid": "0",
            # the execd reports every 2 s (Debian: 40 s): a job whose earlier try failed
            # (Eqw, cleared) may run only once the execd reported that try cleaned up
            "load_report_time": "00:00:02",
            "reporting_params": "accounting=true reporting=false "
                                f"accounting_flush_time={self.accounting_flush_time} "
                                "flush_time=00:00:01 joblog=false sharelog=00:00:00",
        }))
        (tmpl / "hosts" / self.host).write_text(f"hostname {self.host}\n")
        env = {**os.environ, "SGE_ROOT": str(self.sge_root), "SGE_CELL": CELL}
        defaults = str(SPOOLTOOLS / "spooldefaults")
        steps = [
            [str(SPOOLTOOLS / "spoolinit"), "classic", "libspoolc", f"{self.common};{qspool}",
             "init"],
            [defaults, "configuration", str(tmpl / "global")],
            [defaults, "complexes", str(SHARE / "util" / "resources" / "centry")],
            [defaults, "usersets", str(SHARE / "util" / "resources" / "usersets")],
            [defaults, "managers", "root"],
            [defaults, "adminhosts", str(tmpl / "hosts")],
            [defaults, "submithosts", str(tmpl / "hosts")],
        ]
        for argv in steps:
            res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
            if res.returncode != 0:
                raise GridEngineError(f"{' '.join(argv)} failed ({res.returncode}): "
                                      f"{res.stdout}{res.stderr}")

    def _make_netns(self) -> None:
        self.netns.touch()
        subprocess.run([_which("unshare"), f"--net={self.netns}", "true"], check=True,
                       timeout=30)
        self._netns_id = f"net:[{os.stat(self.netns).st_ino}]"
        ip = [*self.nsenter(), _which("ip")]
        subprocess.run([*ip, "link", "set", "lo", "up"], check=True, timeout=30)
        if not self.address.startswith("127."):  # the namespace's lo has all of 127/8
            subprocess.run([*ip, "addr", "add", f"{self.address}/32", "dev", "lo"], check=True,
                           timeout=30)

    def _spawn(self, name: str, program: str) -> None:
        with open(self.log / f"{name}.out", "ab") as out:
            self._procs[name] = subprocess.Popen(
                [*self.nsenter(), _which(program)],
                env={**os.environ, **self.sge_env, "SGE_ND": "1"},  # not a daemon: our child
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _wait(self, what: str, ready, procs: tuple[str, ...] = ()) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            for name in procs:
                if self._procs[name].poll() is not None:
                    raise GridEngineError(f"sge_{name} exited ({self._procs[name].returncode}) "
                                          f"while waiting for {what}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise GridEngineError(f"{what}: not within {self.timeout:.0f} s")
            time.sleep(0.05)

    def _qconf(self, *args: str, input_file: Path | None = None) -> str:
        res = self.run(["qconf", *args, *([str(input_file)] if input_file else [])], timeout=30)
        if res.returncode != 0:
            raise GridEngineError(f"qconf {' '.join(args)} failed ({res.returncode}): "
                                  f"{res.stdout}{res.stderr}")
        return res.stdout

    def _configure(self) -> None:
        """The scheduler every second and at once after a submission or a job's end; the
        queues, each on this host, without load thresholds, honouring #! lines."""
        tmpl = self.root / "tmpl"
        sched = {"schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1"}
        (tmpl / "sched").write_text(_edit(self._qconf("-ssconf"), sched))
        self._qconf("-Msconf", input_file=tmpl / "sched")
        for pe in self.parallel_environments:
            (tmpl / pe).write_text("\n".join([
                f"pe_name {pe}", "slots 9999", "user_lists NONE", "xuser_lists NONE",
                "start_proc_args NONE", "stop_proc_args NONE", "allocation_rule $pe_slots",
                "control_slaves FALSE", "job_is_first_task TRUE", "urgency_slots min",
                "accounting_summary FALSE", "qsort_args NONE", ""]))
            self._qconf("-Ap", input_file=tmpl / pe)
        # `qconf -aq` with EDITOR=cat prints the template (and exits non-zero: nothing added)
        template = self.run(["qconf", "-aq"], env={"EDITOR": "cat"}, timeout=30).stdout
        if "qname" not in template:
            raise GridEngineError(f"no queue template from qconf -aq: {template!r}")
        for name, slots in self.queues.items():
            values = {"qname": name, "hostlist": self.host, "slots": str(slots),
                      "load_thresholds": "NONE",
                      "pe_list": " ".join(self.parallel_environments) or "NONE", "shell": "/bin/sh",
                      "shell_start_mode": "unix_behavior"}
            (tmpl / name).write_text(_edit(template, values))
            self._qconf("-Aq", input_file=tmpl / name)

    def _queues_ready(self) -> bool:
        """Each queue instance on this host listed with no state letters (u: its execd is
        not known yet; a, E, d, ...)."""
        for name in self.queues:
            res = self.run(["qstat", "-f", "-q", f"{name}@{self.host}"], timeout=30)
            rows = [ln.split() for ln in res.stdout.splitlines()
                    if ln.startswith(f"{name}@{self.host}")]
            if res.returncode != 0 or len(rows) != 1 or len(rows[0]) != 5:
                return False
        return True

    def _start_sshd(self) -> None:
        self.relay_socket.unlink(missing_ok=True)
        with open(self.root / "relay.log", "ab") as out:
            self._procs["relay"] = subprocess.Popen(
                [*self.nsenter(), sys.executable, slurm_cluster.__file__, "relay",
                 str(self.relay_socket), str(SSH_PORT)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait("the namespace relay", self.relay_socket.exists, ("relay",))
        self.bridge = Relay(unix_socket=self.relay_socket)
        self.sshd = SSHServer(self.root / "ssh", port=self.bridge.port, listen_port=SSH_PORT,
                              launcher=self.nsenter(), env=self.sge_env, log_level="INFO")
        self.sshd.start()  # waits for the banner through the whole bridge

    # -- stop ---------------------------------------------------------------------------------
    def stop(self) -> None:
        if self.sshd is not None:
            try:
                self.sshd.stop()
            except Exception:  # noqa: BLE001 - whatever is left dies with the namespace below
                pass
            self.sshd = None
        if self.bridge is not None:
            self.bridge.close()
            self.bridge = None
        # Daemons, shepherds, jobs, sshd sessions, the relay: every process of the namespace
        # gets SIGKILL, until none is left; the daemons we started are reaped.
        deadline = time.monotonic() + 30
        while pids := self.pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for proc in self._procs.values():
                if proc.poll() is None:
                    proc.kill()
            if time.monotonic() > deadline:
                raise GridEngineError(f"processes left in the namespace: {pids}")
            time.sleep(0.02)
        for proc in self._procs.values():
            proc.kill()
            proc.wait(timeout=10)
        self._procs.clear()
        self._remove_netns()
        self._netns_id = None
        self.relay_socket.unlink(missing_ok=True)

    def _remove_netns(self) -> None:
        if self.netns.exists() and os.path.ismount(self.netns):
            subprocess.run([_which("umount"), str(self.netns)], check=True, timeout=30)
        self.netns.unlink(missing_ok=True)
