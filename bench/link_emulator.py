"""A long network link in user space, for benchmarks: a TCP relay on 127.0.0.1 that delays
each direction by RTT/2 and caps its bandwidth, without limiting what is in flight.

This kernel has no netem, and loopback has no round-trip time, so a benchmark over loopback
measures CPU, not what a user across a campus or national network sees: there, an SSH channel
can have only its window in flight (OpenSSH's sshd grants 2 MiB per channel), so one channel
moves at most window / RTT (2 MiB / 50 ms = 40 MiB/s) however fast the link is.

The relay reads from each side as fast as the side sends (up to `buffer_bytes` queued per
direction, far more than the bandwidth-delay product of the links measured here: 1 Gbit/s x
50 ms = 6.25 MB), stamps every chunk with the time its last byte leaves a link of `rate_bits`
(serialisation, one chunk after the other) plus the one-way delay, and writes it to the other
side at that time. What limits a transfer through it is therefore what limits it on a real
long link: windows, round trips and the bandwidth, not the relay (`self_check` measures that).

    with Link(target_port=sshd.port, rtt_ms=50, rate_bits=1e9) as link:
        ... connect to 127.0.0.1:link.port ...

    python bench/link_emulator.py [--json FILE]     # its own check: raw rate, one channel
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

CHUNK = 256 * 1024       # the largest read; at 1 Gbit/s one chunk is 2 ms on the wire
BUFFER = 32 * 1024 * 1024  # queued per direction before the relay stops reading (back-pressure)


class _Direction:
    """One direction of one connection: a reader stamps chunks, a writer delivers them."""

    def __init__(self, link: "Link", src: socket.socket, dst: socket.socket):
        self.link, self.src, self.dst = link, src, dst
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.cond = threading.Condition()
        self.eof = False
        self.wire_free = 0.0  # when the link has sent everything queued so far
        self.bytes = 0

    def start(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._read, daemon=True),
                   threading.Thread(target=self._write, daemon=True)]
        for t in threads:
            t.start()
        return threads

    def _read(self) -> None:
        rate = self.link.rate_bits
        try:
            while True:
                with self.cond:
                    while self.queued >= self.link.buffer_bytes and not self.eof:
                        self.cond.wait()
                data = self.src.recv(CHUNK)
                if not data:
                    break
                now = time.monotonic()
                # the link sends one chunk after the other at its rate, then the delay
                start = max(now, self.wire_free)
                self.wire_free = start + (len(data) * 8 / rate if rate else 0.0)
                with self.cond:
                    self.queue.append((self.wire_free + self.link.one_way, data))
                    self.queued += len(data)
                    self.cond.notify_all()
        except OSError:
            pass
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def _write(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.eof:
                        self.cond.wait()
                    if not self.queue:
                        break
                    due, data = self.queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self.dst.sendall(data)
                self.bytes += len(data)
                with self.cond:
                    self.queue.popleft()
                    self.queued -= len(data)
                    self.cond.notify_all()
            self.dst.shutdown(socket.SHUT_WR)  # pass the EOF on, after the data
        except OSError:
            with self.cond:
                self.eof = True
                self.queue.clear()
                self.cond.notify_all()
            for s in (self.src, self.dst):
                _close(s)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


class Link:
    """A relay on 127.0.0.1:`port` to 127.0.0.1:`target_port` with `rtt_ms` of round-trip
    time (half each way) and `rate_bits` bits per second each way (None: no cap)."""

    def __init__(self, target_port: int, rtt_ms: float = 0.0, rate_bits: float | None = None,
                 buffer_bytes: int = BUFFER):
        self.target = ("127.0.0.1", target_port)
        self.rtt_ms = rtt_ms
        self.one_way = rtt_ms / 2000.0
        self.rate_bits = rate_bits
        self.buffer_bytes = buffer_bytes
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._directions: list[_Direction] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for s in (client, upstream):
                # small SSH messages (window adjusts, acks) must not wait for Nagle
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = [_Direction(self, client, upstream), _Direction(self, upstream, client)]
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
                self._directions += pair
            for d in pair:
                d.start()

    @property
    def bytes_relayed(self) -> int:
        with self._lock:
            return sum(d.bytes for d in self._directions)

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            _close(s)


# -- its own check: it is not the bottleneck ------------------------------------------------

def raw_rate(rtt_ms: float, rate_bits: float | None, total: int = 1 << 30) -> float:
    """MiB/s of one plain TCP stream through the link into a sink (no SSH, no window but
    TCP's, which on loopback is large): what the relay itself can carry."""
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
    sink.close()
    assert got[0] == total, (got[0], total)
    return total / took / 2**20


def one_channel_rate(server, rtt_ms: float, rate_bits: float | None,
                     total: int = 256 << 20) -> float:
    """MiB/s of one SSH channel (`ssh host 'cat > /dev/null'`, the client's default cipher)
    through the link: bounded by the sshd's channel window / RTT on a long link."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchlib import ssh_options
    with Link(server.port, rtt_ms, rate_bits) as link:
        known = server.write_known_hosts(server.root / f"known_hosts_{link.port}", link.port)
        # OpenSSH takes an option's first value: this known_hosts file comes first
        argv = ["ssh", "-o", f"UserKnownHostsFile={known}", *ssh_options(server),
                "-p", str(link.port), f"{server.user}@127.0.0.1", "cat > /dev/null"]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE)
        block = bytes(1 << 20)
        # the connection set-up (a few round trips) is not part of the channel's rate: time
        # from the first byte the channel accepted to the end, after a warm-up of 16 MiB
        for _ in range(16):
            proc.stdin.write(block)
        proc.stdin.flush()
        start = time.monotonic()
        for _ in range(total >> 20):
            proc.stdin.write(block)
        proc.stdin.close()
        proc.wait()
        took = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"ssh through the link failed ({proc.returncode})")
    return total / took / 2**20


SSHD_WINDOW = 2 * 1024 * 1024  # OpenSSH's CHAN_SES_WINDOW_DEFAULT (64 packets of 32 KiB)


def self_check(rtts=(0, 10, 50), rate_bits=1e9, quick=False) -> dict:
    """Raw rate through the link, and one SSH channel's rate against window / RTT."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchlib import sshd, workdir
    out: dict = {"rate_bits": rate_bits, "raw": {}, "one_channel": {}}
    raw_total = (256 << 20) if quick else (1 << 30)
    out["raw"]["uncapped_0ms_MiBps"] = round(raw_rate(0, None, raw_total), 1)
    out["raw"]["capped_0ms_MiBps"] = round(raw_rate(0, rate_bits, raw_total), 1)
    out["raw"]["link_MiBps"] = round(rate_bits / 8 / 2**20, 1)
    with workdir("link") as work, sshd(work) as server:
        for rtt in rtts:
            rate = one_channel_rate(server, rtt, rate_bits, (64 << 20) if quick else (256 << 20))
            entry = {"measured_MiBps": round(rate, 1)}
            if rtt:
                bound = SSHD_WINDOW / (rtt / 1000) / 2**20
                entry["window_over_rtt_MiBps"] = round(bound, 1)
                entry["ratio"] = round(rate / bound, 3)
            out["one_channel"][f"{rtt}ms"] = entry
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    result = self_check(quick=args.quick)
    raw = result["raw"]
    print(f"raw TCP through the relay, 0 ms: {raw['uncapped_0ms_MiBps']} MiB/s uncapped, "
          f"{raw['capped_0ms_MiBps']} MiB/s capped at {raw['link_MiBps']} MiB/s")
    for rtt, e in result["one_channel"].items():
        extra = (f" (window/RTT {e['window_over_rtt_MiBps']} MiB/s, ratio {e['ratio']})"
                 if "ratio" in e else "")
        print(f"one SSH channel at {rtt}: {e['measured_MiBps']} MiB/s{extra}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
