"""Over a long link: caseflow vs scp and rsync through the link emulator, same sshd, same run.

The link (bench/link_emulator.py) is a relay in front of the bench's sshd (OpenSSH's default
MaxSessions 10) that delays each direction by RTT/2 and carries at most 1 Gbit/s each way.
First its own check (raw rate through it; one SSH channel's rate against window / RTT), then,
at RTT 0, 10 and 50 ms, the same copies as bench/upload_bench.py through it: one large file
(4 GiB) and 10,000 files of 4 KiB, each copy verified (every path, size and SHA-256) and
removed. caseflow's time is a whole `upload_dir` on a fresh connection (connecting, listing,
sending, verifying, renaming), as scp's and rsync's include their connection.

Then a resumed upload: the 4 GiB case is cut at 70 % (every connection through the link
dropped once the client has sent 70 % of the case's bytes into it), then uploaded again;
reported are the bytes the client sent into the link towards the host in both attempts (what
the cut dropped included), against the case's size, and that the target folder did not exist
until the second attempt had verified it.

    python bench/network_bench.py [--quick] [--only check,large,small,resume] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load, machine, ratio, section, sshd, tmpfs, workdir  # noqa: E402
from link_emulator import Link, self_check  # noqa: E402
from upload_bench import (Tools, compare, digests, make_large_file,  # noqa: E402
                          make_small_files)

from caseflow import casefolder  # noqa: E402
from caseflow.config import TransportConfig  # noqa: E402
from caseflow.errors import TransientError  # noqa: E402
from caseflow.transports.local import local_manifest  # noqa: E402
from caseflow.transports.ssh import SSHTransport  # noqa: E402

RTTS = (0, 10, 50)
RATE_BITS = 1e9
LINK_MIBPS = RATE_BITS / 8 / 2**20
PARTS = ("check", "large", "small", "resume")
SCP = "scp -r -c aes128-gcm"


def _large_tools(tools: Tools) -> dict:
    return {"caseflow": tools.caseflow,
            SCP: lambda s: tools.scp(s, "aes128-gcm@openssh.com"),
            "rsync -a": tools.rsync}


def _rates(result: dict, size: int) -> dict:
    """MiB/s of each tool (median time), and caseflow's share of the link."""
    rates = {n: round(size / t["median_s"] / 2**20, 1) for n, t in result["tools"].items()}
    scps = {n: r for n, r in rates.items() if n.startswith("scp")}
    best = max(scps, key=scps.get)
    return {"MiBps": rates, "fastest_scp": best,
            "caseflow_vs_fastest_scp_rate": ratio(rates["caseflow"], scps[best]),
            "caseflow_share_of_link": ratio(rates["caseflow"], LINK_MIBPS)}


def resume(server, src: Path, target_root: Path, size: int, rtt: float) -> dict:
    """Cut the upload of `src` at 70 % of its bytes (counted at the link), then upload again."""
    manifest = casefolder.scan(src)
    target = target_root / "resumed"
    with Link(server.port, rtt, RATE_BITS) as link:
        tools = Tools(server, target_root, port=link.port)
        settings = TransportConfig(**tools.settings)
        cut_at = int(size * 0.7)
        cut = threading.Event()

        def watch():
            while not cut.is_set():
                if link.stats()["sent_to_server"] >= cut_at:
                    link.cut()
                    cut.set()
                    return
                time.sleep(0.005)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t = SSHTransport(settings)
        first_error = None
        t0 = time.perf_counter()
        try:
            t.upload_dir(src, str(target), manifest)
        except TransientError as exc:
            first_error = str(exc)
        finally:
            t.close()
            cut.set()
        first_s = time.perf_counter() - t0
        after_cut = link.stats()["sent_to_server"]
        visible_after_cut = target.exists()
        t = SSHTransport(settings)
        t0 = time.perf_counter()
        try:
            t.upload_dir(src, str(target), manifest)
        finally:
            t.close()
        second_s = time.perf_counter() - t0
        total = link.stats()["sent_to_server"]
    if local_manifest(target) != manifest.as_set() or digests(target) != digests(src):
        raise SystemExit("resume: the resumed copy does not match the source")
    shutil.rmtree(target)
    return {"case_bytes": size, "rtt_ms": rtt, "cut_at_bytes": cut_at,
            "first_attempt": {"error": first_error, "seconds": round(first_s, 2),
                              "bytes_to_host": after_cut},
            "second_attempt": {"seconds": round(second_s, 2),
                               "bytes_to_host": total - after_cut},
            "bytes_to_host": total, "bytes_vs_case": ratio(total, size),
            "target_visible_after_cut": visible_after_cut}


def run(quick: bool = False, only: tuple[str, ...] = PARTS) -> dict:
    large_mib, small_count = (256, 1000) if quick else (4096, 10_000)
    repeat_small = 1 if quick else 3
    section(f"network: through a link of {RATE_BITS / 1e9:g} Gbit/s at RTT "
            f"{', '.join(map(str, RTTS))} ms")
    out: dict = {"rate_bits": RATE_BITS, "link_MiBps": round(LINK_MIBPS, 1)}
    if "check" in only:
        out["link"] = self_check(RTTS, RATE_BITS, quick)
    with workdir("network") as work:
        src = work / "src"
        src.mkdir()
        with sshd(work) as server, tmpfs(work / "target", large_mib + 512) as on_tmpfs:
            out["target_on_tmpfs"] = on_tmpfs
            target = work / "target"
            if "small" in only:
                small = make_small_files(src, small_count, 4096, 100)
                out["small"] = {}
                for rtt in RTTS:
                    with Link(server.port, rtt, RATE_BITS) as link:
                        tools = Tools(server, target, port=link.port)
                        chosen = {"caseflow": tools.caseflow, "rsync -a": tools.rsync}
                        r = compare(chosen, f"{small_count:,} files of 4 KiB in 100 folders",
                                    small, repeat_small)
                    out["small"][f"{rtt}ms"] = r
                    print(f"small files at {rtt} ms: caseflow "
                          f"{r['tools']['caseflow']['median_s']:.2f} s, rsync -a "
                          f"{r['tools']['rsync -a']['median_s']:.2f} s: "
                          f"{r['caseflow_vs_rsync']}x (load {load()})", flush=True)
                shutil.rmtree(small)
            if "large" in only or "resume" in only:
                large = make_large_file(src, large_mib << 20)
                sums = digests(large)
            if "large" in only:
                out["large"] = {}
                for rtt in RTTS:
                    with Link(server.port, rtt, RATE_BITS) as link:
                        tools = Tools(server, target, port=link.port)
                        r = compare(_large_tools(tools), f"one {large_mib:,} MiB file", large,
                                    1, warm_up=False, sums=sums)
                    r.update(_rates(r, large_mib << 20))
                    out["large"][f"{rtt}ms"] = r
                    print(f"one {large_mib} MiB file at {rtt} ms: "
                          + ", ".join(f"{n} {v} MiB/s" for n, v in r["MiBps"].items())
                          + f"; caseflow {r['caseflow_vs_fastest_scp_rate']}x {r['fastest_scp']}"
                          f", {r['caseflow_share_of_link']} of the link (load {load()})",
                          flush=True)
            if "resume" in only:
                out["resume"] = resume(server, large, target, large_mib << 20, RTTS[-1])
                r = out["resume"]
                print(f"resume at {r['rtt_ms']} ms: cut at {r['cut_at_bytes'] >> 20} MiB "
                      f"({r['first_attempt']['error']}); {r['bytes_to_host'] >> 20} MiB sent in "
                      f"all for a {large_mib} MiB case: {r['bytes_vs_case']}x", flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small data, one run (a smoke test)")
    p.add_argument("--only", help=f"comma-separated parts of {','.join(PARTS)}")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    only = tuple(args.only.split(",")) if args.only else PARTS
    result = {"machine": machine(), "network": run(args.quick, only)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
