"""A long network link in user space, for benchmarks: a TCP relay on 127.0.0.1 that delays
each direction by RTT/2 and caps its bandwidth, without limiting what is in flight.

This kernel has no netem, and loopback has no round-trip time, so a benchmark over loopback
measures CPU, not what a user across a campus or national network sees: there, an SSH channel
can have only its window in flight (OpenSSH's sshd grants 2 MiB per channel), so one channel
moves at most window / RTT (2 MiB / 50 ms = 40 MiB/s) however fast the link is.

The relay (link_relay.c, compiled here with the system's cc on first use) reads from each
side as fast as the side sends (up to `buffer_bytes` queued per direction of a connection, far
more than the bandwidth-delay product of the links measured here: 1 Gbit/s x 50 ms = 6.25 MB),
stamps every chunk with the time its last byte leaves a link of `rate_bits` (serialisation,
one chunk after the other, shared by all connections through the link) plus the one-way delay,
and writes it to the other side at that time. What limits a transfer through it is therefore
what limits it on a real long link: windows, round trips and the bandwidth, not the relay
(`self_check` measures that). It does not drop packets, and it does not limit a connection's
TCP window: on a real long link the kernel's TCP buffers also bound one connection
(net.ipv4.tcp_wmem / tcp_rmem; Linux's default send buffer of at most 4 MiB allows about
80 MiB/s at 50 ms).

A first version was a relay in Python (two threads per direction): it carried 600 MiB/s of
1 MiB writes but only 101-104 MiB/s of one SSH channel at 0 and 10 ms, below the 119 MiB/s
of the 1 Gbit/s link it was to emulate (the per-chunk cost of its threads and locks with SSH's
32 KiB packets), so a C relay replaced it.

    with Link(target_port=sshd.port, rtt_ms=50, rate_bits=1e9) as link:
        ... connect to 127.0.0.1:link.port; link.stats(), link.cut() ...

    python bench/link_emulator.py [--quick] [--json FILE]   # its own check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BUFFER = 32 * 1024 * 1024  # queued per direction before the relay stops reading (back-pressure)
SOURCE = Path(__file__).resolve().with_name("link_relay.c")
_binary: Path | None = None


def relay_binary() -> Path:
    """link_relay.c compiled (once per process, into a temporary folder)."""
    global _binary
    if _binary is None or not _binary.exists():
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise SystemExit("bench: the link emulator needs a C compiler (cc): apt-get install "
                             "gcc")
        out = Path(tempfile.mkdtemp(prefix="caseflow-link-")) / "link_relay"
        subprocess.run([cc, "-O2", "-Wall", "-o", str(out), str(SOURCE)], check=True)
        _binary = out
    return _binary


class Link:
    """A relay on 127.0.0.1:`port` to 127.0.0.1:`target_port` with `rtt_ms` of round-trip
    time (half each way) and `rate_bits` bits per second each way (None: no cap), shared by
    every connection through it."""

    def __init__(self, target_port: int, rtt_ms: float = 0.0, rate_bits: float | None = None,
                 buffer_bytes: int = BUFFER):
        self.rtt_ms = rtt_ms
        self.rate_bits = rate_bits
        self.proc = subprocess.Popen(
            [str(relay_binary()), str(target_port), str(rtt_ms), str(rate_bits or 0),
             str(buffer_bytes)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self._lock = threading.Lock()

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ask(self, command: str) -> str:
        with self._lock:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            return self.proc.stdout.readline().strip()

    def stats(self) -> dict:
        """Connections accepted so far, and bytes each way (all connections): delivered, and
        sent into the link (`sent_to_server`: what the client sent, with what a cut dropped)."""
        connections, up, down, up_in, down_in = (int(x) for x in self._ask("stats").split())
        return {"connections": connections, "to_server": up, "to_client": down,
                "sent_to_server": up_in, "sent_to_client": down_in}

    @property
    def bytes_relayed(self) -> int:
        s = self.stats()
        return s["to_server"] + s["to_client"]

    def cut(self) -> None:
        """Drop every connection through the link (a cable pulled); new ones are accepted."""
        self._ask("cut")

    def cpu_seconds(self) -> float:
        """CPU time the relay has used (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


# -- its own check: it is not the bottleneck ------------------------------------------------

def raw_rate(rtt_ms: float, rate_bits: float | None, total: int = 1 << 30) -> dict:
    """One plain TCP stream through the link into a sink (no SSH, no window but TCP's, which
    on loopback is large): what the relay itself can carry, and its CPU time per GiB."""
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(1)
    got = [0]

    def drain():
        conn, _ = sink.accept()
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            got[0] += len(data)
        conn.close()
    t = threading.Thread(target=drain)
    t.start()
    block = memoryview(bytes(1 << 20))
    with Link(sink.getsockname()[1], rtt_ms, rate_bits) as link:
        c = socket.create_connection(("127.0.0.1", link.port))
        start = time.monotonic()
        sent = 0
        while sent < total:
            c.sendall(block)
            sent += len(block)
        c.shutdown(socket.SHUT_WR)
        t.join()
        took = time.monotonic() - start
        c.close()
        cpu = link.cpu_seconds()
    sink.close()
    assert got[0] == total, (got[0], total)
    return {"MiBps": round(total / took / 2**20, 1),
            "relay_cpu_s_per_GiB": round(cpu / (total / 2**30), 2)}


def one_channel_rate(server, rtt_ms: float, rate_bits: float | None,
                     total: int = 256 << 20) -> dict:
    """One SSH channel (`ssh -c aes128-gcm host 'cat > /dev/null'`) through the link: bounded
    by the sshd's channel window / RTT on a long link. MiB/s, and the relay's CPU per GiB."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchlib import ssh_options
    with Link(server.port, rtt_ms, rate_bits) as link:
        known = server.write_known_hosts(server.root / f"known_hosts_{link.port}", link.port)
        argv = ["ssh", *ssh_options(server, known), "-c", "aes128-gcm@openssh.com",
                "-p", str(link.port), f"{server.user}@127.0.0.1", "cat > /dev/null"]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
        block = bytes(1 << 20)
        # the connection set-up (a few round trips) is not part of the channel's rate: time
        # from the first byte the channel accepted to the end, after a warm-up of 16 MiB
        for _ in range(16):
            proc.stdin.write(block)
        proc.stdin.flush()
        cpu0 = link.cpu_seconds()
        start = time.monotonic()
        for _ in range(total >> 20):
            proc.stdin.write(block)
        proc.stdin.close()
        proc.wait()
        took = time.monotonic() - start
        cpu = link.cpu_seconds() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"ssh through the link failed ({proc.returncode})")
    return {"MiBps": round(total / took / 2**20, 1),
            "relay_cpu_s_per_GiB": round(cpu / (total / 2**30), 2)}


SSHD_WINDOW = 2 * 1024 * 1024  # OpenSSH's CHAN_SES_WINDOW_DEFAULT (64 packets of 32 KiB)


def self_check(rtts=(0, 10, 50), rate_bits=1e9, quick=False) -> dict:
    """Raw rate through the link, and one SSH channel's rate against its bound: the link's
    rate, or window / RTT where that is lower. sshd grants more window once half of it is
    used, so a window-bound channel moves between half and all of window / RTT."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchlib import sshd, workdir
    link = rate_bits / 8 / 2**20
    out: dict = {"rate_bits": rate_bits, "link_MiBps": round(link, 1), "raw": {},
                 "one_channel": {}}
    raw_total = (256 << 20) if quick else (1 << 30)
    out["raw"]["uncapped_0ms"] = raw_rate(0, None, raw_total)
    out["raw"]["capped_0ms"] = raw_rate(0, rate_bits, raw_total)
    out["raw"]["capped_50ms"] = raw_rate(50, rate_bits, raw_total)
    with workdir("link") as work, sshd(work) as server:
        for rtt in rtts:
            entry = one_channel_rate(server, rtt, rate_bits, (64 << 20) if quick else (256 << 20))
            bound = min(link, SSHD_WINDOW / (rtt / 1000) / 2**20) if rtt else link
            entry["bound_MiBps"] = round(bound, 1)
            entry["bound"] = "window / RTT" if rtt and bound < link else "the link"
            entry["ratio"] = round(entry["MiBps"] / bound, 3)
            out["one_channel"][f"{rtt}ms"] = entry
    return out


def print_check(result: dict) -> None:
    for name, r in result["raw"].items():
        print(f"raw TCP through the relay, {name}: {r['MiBps']} MiB/s (the link: "
              f"{result['link_MiBps']} MiB/s when capped); relay CPU "
              f"{r['relay_cpu_s_per_GiB']} s/GiB")
    for rtt, e in result["one_channel"].items():
        print(f"one SSH channel at {rtt}: {e['MiBps']} MiB/s, bound ({e['bound']}) "
              f"{e['bound_MiBps']} MiB/s: {e['ratio']}; relay CPU {e['relay_cpu_s_per_GiB']} "
              "s/GiB")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    result = self_check(quick=args.quick)
    print_check(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
