"""A real one-node Slurm cluster for the tests, reached over SSH like a real GPU host.

Slurm 22.05's daemons bind 0.0.0.0 and this machine only allows loopback traffic, so the whole
cluster lives in a loopback-only network namespace of its own (`unshare --net=FILE`, entered
with `nsenter --net=FILE`): munged, slurmctld, slurmd (one node, fake GPUs), every Slurm
command (`run()`), and an sshd (tests/sshd.py's `SSHServer`) whose sessions have `SLURM_CONF`
set. The test process stays outside; it reaches the sshd through a two-piece bridge:

    client -> host 127.0.0.1:PORT (a `Relay` thread in this process)
           -> unix socket ROOT/sshd.sock (a filesystem object, visible from both sides)
           -> this file run as `relay` inside the namespace -> 127.0.0.1:22 (sshd)

Usage (see tests/slurm/conftest.py):

    with SlurmCluster(tmp, min_job_age=2) as cluster:
        cluster.run(["squeue", "--json"])                      # inside the namespace
        TransportConfig(**cluster.transport_settings(remote_root))  # caseflow over SSH

`stop()` kills every process of the namespace (daemons, job steps, jobs, sshd sessions,
relays) and removes the namespace; `start()` wipes the Slurm state first (a drained node
would otherwise stay drained). Root is needed (namespaces, mknod).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from sshd import Relay, SSHServer

SLURM_COMMANDS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol",
                  "scancel", "sacct", "sinfo")
SYSTEM_COMMANDS = ("unshare", "nsenter", "ip", "umount")
SSH_PORT = 22  # the sshd's port inside the namespace (nothing else listens there)
FAKE_ADDRESS = "10.254.254.1/32"  # without a non-127 address getaddrinfo() fails in slurmctld
# SlurmCluster(preemption=True): partitions of two priority tiers (see the class). A partition's
# PreemptMode is the mode of ITS jobs when they are preempted; the cluster's is the default.
PREEMPTION = [
    "PreemptType=preempt/partition_prio",
    "PreemptMode=CANCEL",
    "PartitionName=low Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=CANCEL",
    "PartitionName=low-requeue Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=1 "
    "PreemptMode=REQUEUE",
    "PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF",
]


class SlurmError(RuntimeError):
    pass


def missing_commands() -> list[str]:
    return [c for c in SLURM_COMMANDS + SYSTEM_COMMANDS
            if not (shutil.which(c) or Path("/usr/sbin", c).exists())]


def _which(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"({path}: no log)"
    return f"--- {path.name}:\n" + "\n".join(text)


def _hardware(out: str) -> dict[str, int]:
    """The node's real layout from the output of `slurmd -C`."""
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    try:
        return {k: int(fields[k]) for k in ("CPUs", "Boards", "SocketsPerBoard",
                                             "CoresPerSocket", "ThreadsPerCore", "RealMemory")}
    except (KeyError, ValueError):
        n = os.cpu_count() or 1
        return {"CPUs": n, "Boards": 1, "SocketsPerBoard": 1, "CoresPerSocket": n,
                "ThreadsPerCore": 1, "RealMemory": 1000}


class SlurmCluster:
    """One Slurm node (`gpus` fake GPUs, the machine's CPUs unless `cpus` says otherwise) and
    an sshd, in a network namespace under `root`. `min_job_age`: seconds a finished job stays
    in squeue/scontrol (Slurm's MinJobAge; 2 is its smallest recommended value, and records
    are purged by a periodic pass, so "forgotten" can take longer, see tests/slurm/NOTES.md).
    `slurm_conf`: extra slurm.conf lines. `preemption`: partitions whose jobs a job of a
    higher-priority partition preempts (PreemptType=preempt/partition_prio), beside the default
    partition `debug`, whose jobs are never preempted:

        low          PriorityTier=1, PreemptMode=CANCEL  (a preempted job ends PREEMPTED)
        low-requeue  PriorityTier=1, PreemptMode=REQUEUE (it goes back to the queue, the same id)
        high         PriorityTier=10, its jobs preempt the two above (never preempted)

    Slurm lets a requeued job start again only after `cred_expire` (AuthInfo, 120 s by
    default): tests make it eligible at once with `scontrol update jobid=ID starttime=now`.
    Every partition has every node, so sinfo prints a line per partition."""

    def __init__(self, root: Path, *, min_job_age: int = 300, gpus: int = 2,
                 cpus: int | None = None, slurm_conf: tuple[str, ...] | list[str] = (),
                 preemption: bool = False, timeout: float = 60):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.min_job_age = min_job_age
        self.gpus = gpus
        self.cpus = cpus
        self.node_cpus: int | None = None      # the CPUs configured, once started
        self.extra_conf = list(slurm_conf)
        self.preemption = preemption
        self.timeout = timeout
        self.node = socket.gethostname().split(".")[0]
        self.netns = self.root / "netns"
        self.state = self.root / "slurm"       # wiped at every start
        self.conf = self.state / "slurm.conf"
        self.munge_socket = self.state / "munge.socket"
        self.jobcomp = self.state / "jobcomp.txt"
        self.relay_socket = self.root / "sshd.sock"
        self.sshd: SSHServer | None = None
        self.bridge: Relay | None = None
        self.start_seconds: float | None = None
        self.timings: dict[str, float] = {}    # seconds since start() for each step
        self._procs: dict[str, subprocess.Popen] = {}
        self._netns_id: str | None = None

    # -- public API -----------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def nsenter(self) -> list[str]:
        """The argv prefix that runs a command inside the cluster's network namespace."""
        return [_which("nsenter"), f"--net={self.netns}"]

    def run(self, argv, *, check: bool = False, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run `argv` inside the namespace with SLURM_CONF set; text output captured."""
        return subprocess.run([*self.nsenter(), *argv], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=check, input=input)

    @property
    def ssh(self) -> dict:
        """Where and how a client reaches the cluster's sshd from this (host) namespace."""
        assert self.sshd is not None, "cluster not started"
        return {"host": "127.0.0.1", "port": self.sshd.port, "user": self.sshd.user,
                "identity_file": str(self.sshd.client_key),
                "known_hosts": str(self.sshd.known_hosts)}

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
        log = self.state / "log"
        return "\n".join(_tail(p) for p in (log / "munged.log", log / "slurmctld.log",
                                            log / "slurmd.log", self.root / "relay.log",
                                            self.root / "ssh" / "sshd.log"))

    def purge_completion_record(self, job_id: str, name: str) -> None:
        """Remove the job's line from the completion log (what `sacct -c` reads), in place, as
        a purge of old accounting records does; slurmctld keeps the file open and appends."""
        with open(self.jobcomp, "r+") as f:
            lines = f.readlines()
            keep = [ln for ln in lines if not (ln.startswith(f"JobId={job_id} ") and
                                               f" Name={name} " in ln)]
            assert len(keep) == len(lines) - 1, f"job {job_id} has no completion record"
            f.seek(0)
            f.writelines(keep)
            f.truncate()

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- start --------------------------------------------------------------------------------
    def start(self) -> "SlurmCluster":
        missing = missing_commands()
        if missing:
            raise SlurmError(
                f"the Slurm tests need {', '.join(missing)}: run .ci/system-deps as root "
                "(Debian: apt-get install slurm-wlm munge iproute2 util-linux)")
        if os.geteuid() != 0:
            raise SlurmError("the Slurm tests need root (network namespace, mknod, slurmd)")
        if len(str(self.munge_socket)) > 100:
            raise SlurmError(f"{self.root}: too long for unix socket paths (108 bytes)")
        t0 = time.monotonic()

        def mark(what: str) -> None:
            self.timings[what] = round(time.monotonic() - t0, 3)
        try:
            self._remove_netns()
            shutil.rmtree(self.state, ignore_errors=True)
            self._make_netns()
            mark("netns")
            self._start_munge()
            mark("munged")
            self._write_config()
            self._start_slurm()
            mark("node idle")
            self._start_sshd()
            mark("sshd")
        except BaseException as exc:
            logs = self.logs()
            self.stop()
            if isinstance(exc, SlurmError):
                raise SlurmError(f"{exc}\n{logs}") from None
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _make_netns(self) -> None:
        self.netns.touch()
        subprocess.run([_which("unshare"), f"--net={self.netns}", "true"], check=True,
                       timeout=30)
        self._netns_id = f"net:[{os.stat(self.netns).st_ino}]"
        ip = [*self.nsenter(), _which("ip")]
        subprocess.run([*ip, "link", "set", "lo", "up"], check=True, timeout=30)
        subprocess.run([*ip, "addr", "add", FAKE_ADDRESS, "dev", "lo"], check=True, timeout=30)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = self.state / "log" / f"{name}.out"
        with open(log, "ab") as out:
            proc = subprocess.Popen([*self.nsenter(), *argv], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._procs[name] = proc
        return proc

    def _wait(self, what: str, ready, procs: tuple[str, ...] = ()) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            for name in procs:
                if self._procs[name].poll() is not None:
                    raise SlurmError(f"{name} exited ({self._procs[name].returncode}) "
                                     f"while waiting for {what}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise SlurmError(f"{what}: not within {self.timeout:.0f} s")
            time.sleep(0.02)

    def _start_munge(self) -> None:
        s = self.state
        for d in ("log", "run", "spool/ctld", "spool/d", "fakedev"):
            (s / d).mkdir(parents=True, exist_ok=True)
        key = s / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        self._spawn("munged", [_which("munged"), "-F", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={key}", f"--pid-file={s / 'run/munged.pid'}",
                               f"--log-file={s / 'log/munged.log'}",
                               f"--seed-file={s / 'munged.seed'}"])
        self._wait("munged", lambda: self.run(
            [_which("munge"), "-n", "-S", str(self.munge_socket)]).returncode == 0, ("munged",))

    def _write_config(self) -> None:
        s, node = self.state, self.node
        hw = _hardware(self.run([_which("slurmd"), "-C"], timeout=30).stdout)
        self.node_cpus = self.cpus or hw["CPUs"]
        if self.cpus is None or self.cpus == hw["CPUs"]:
            layout = (f"CPUs={hw['CPUs']} Boards={hw['Boards']} "
                      f"SocketsPerBoard={hw['SocketsPerBoard']} "
                      f"CoresPerSocket={hw['CoresPerSocket']} "
                      f"ThreadsPerCore={hw['ThreadsPerCore']}")
            overrides = []
        else:  # more (or fewer) CPUs than the machine: trust the configuration
            layout = f"CPUs={self.cpus} Sockets=1 CoresPerSocket={self.cpus} ThreadsPerCore=1"
            overrides = ["SlurmdParameters=config_overrides"]
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        lines = [
            "ClusterName=test",
            f"SlurmctldHost={node}(127.0.0.1)",
            "SlurmUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={s / 'spool/ctld'}",
            f"SlurmdSpoolDir={s / 'spool/d'}",
            f"SlurmctldPidFile={s / 'run/slurmctld.pid'}",
            f"SlurmdPidFile={s / 'run/slurmd.pid'}",
            f"SlurmctldLogFile={s / 'log/slurmctld.log'}",
            f"SlurmdLogFile={s / 'log/slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",  # what `sacct -c` reads once squeue forgot a job
            f"JobCompLoc={self.jobcomp}",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "ReturnToService=2",
            f"MinJobAge={self.min_job_age}",
            # Batch jobs start from the backfill pass (bf_interval=1: within a second, not 30 s);
            # batch_sched_delay=0: a pending job's reason turns from Priority to Resources
            # after about 1 s instead of 2-3 s.
            "SchedulerParameters=bf_interval=1,batch_sched_delay=0",
            *(["GresTypes=gpu"] if self.gpus else []),
            *overrides,
            f"NodeName={node} NodeAddr=127.0.0.1 {layout} RealMemory={hw['RealMemory']}{gres}"
            " State=UNKNOWN",
            "PartitionName=debug Default=YES Nodes=ALL MaxTime=INFINITE State=UP"
            + (" PreemptMode=OFF" if self.preemption else ""),
            *(PREEMPTION if self.preemption else []),
            *self.extra_conf,  # a repeated key: the last line wins
            "",
        ]
        self.conf.write_text("\n".join(lines))
        # Fake GPUs must be character devices: without File= the gres is dropped and the node
        # drains; with plain files CUDA_VISIBLE_DEVICES stays empty.
        gres_lines = ["AutoDetect=off"]
        for i in range(self.gpus):
            dev = s / "fakedev" / f"gpu{i}"
            os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # same as /dev/null
            gres_lines.append(f"NodeName={node} Name=gpu File={dev}")
        (s / "gres.conf").write_text("\n".join(gres_lines) + "\n")

    def _start_slurm(self) -> None:
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
        self._wait("slurmctld answering", lambda: "is UP" in self.run(
            ["scontrol", "ping"], timeout=30).stdout, ("slurmctld",))
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])

        def idle() -> bool:  # sinfo -p: one line (the node is in every partition)
            state = self.run(["sinfo", "-h", "-p", "debug", "-o", "%T"], timeout=30).stdout.strip()
            if state.startswith(("drain", "down")) and "*" not in state:
                reason = self.run(["sinfo", "-h", "-p", "debug", "-o", "%E"],
                                  timeout=30).stdout.strip()
                raise SlurmError(f"node {state}: {reason}")
            return state == "idle"
        self._wait("node idle", idle, ("slurmctld", "slurmd"))

    def _start_sshd(self) -> None:
        self.relay_socket.unlink(missing_ok=True)
        with open(self.root / "relay.log", "ab") as out:
            self._procs["relay"] = subprocess.Popen(
                [*self.nsenter(), sys.executable, __file__, "relay", str(self.relay_socket),
                 str(SSH_PORT)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait("the namespace relay", self.relay_socket.exists, ("relay",))
        self.bridge = Relay(unix_socket=self.relay_socket)
        self.sshd = SSHServer(self.root / "ssh", port=self.bridge.port, listen_port=SSH_PORT,
                              launcher=self.nsenter(), env={"SLURM_CONF": str(self.conf)},
                              # connections it drops (MaxStartups) or closes before the login
                              # are logged only from INFO: two full-suite runs on one machine
                              # each lost a connection here at its banner, cause unknown
                              log_level="INFO")
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
        # slurmd first (no new job steps), then the controller, then munge and the relay.
        for name in ("slurmd", "slurmctld", "munged", "relay"):
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self._procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._procs.clear()
        # Job steps (slurmstepd), jobs and sshd sessions are nobody's children here: kill every
        # process still in the namespace, until none is left.
        deadline = time.monotonic() + 30
        while pids := self.pids():
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise SlurmError(f"processes left in the namespace: {pids}")
            time.sleep(0.02)
        self._remove_netns()
        self._netns_id = None
        self.relay_socket.unlink(missing_ok=True)

    def _remove_netns(self) -> None:
        if self.netns.exists() and os.path.ismount(self.netns):
            subprocess.run([_which("umount"), str(self.netns)], check=True, timeout=30)
        self.netns.unlink(missing_ok=True)


# -- the relay inside the namespace: unix socket -> 127.0.0.1:port ---------------------------
def _pump(a: socket.socket, b: socket.socket) -> None:
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [], 5.0)
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    except OSError:
        pass
    finally:
        a.close()
        b.close()


def _serve(client: socket.socket, port: int) -> None:
    # the bridge stands in for a network path, which does not drop a connection attempt
    # because the server was busy for a moment: try a few times before giving up
    for attempt in range(5):
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except OSError as exc:
            print(f"relay: connecting to sshd failed ({exc}), attempt {attempt + 1}",
                  file=sys.stderr, flush=True)
            time.sleep(0.1 * (attempt + 1))
    else:
        client.close()
        return
    _pump(client, upstream)


def relay_main(path: str, port: int) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.tmp"
    if os.path.exists(tmp):
        os.unlink(tmp)
    server.bind(tmp)
    server.listen(64)
    os.rename(tmp, path)  # appears only once it accepts
    while True:
        client, _ = server.accept()
        threading.Thread(target=_serve, args=(client, port), daemon=True).start()


if __name__ == "__main__":
    if sys.argv[1:2] == ["relay"] and len(sys.argv) == 4:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        relay_main(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"usage: {sys.argv[0]} relay SOCKET PORT")
