"""All the benchmarks, one command: a table of ratios to the alternatives measured in this run.

    python bench/run.py [--quick]
                        [--only upload,polling,admission,engine,pipeline,openssh,network]
                        [--quiet-load L] [--json bench/last_run.json]

1. upload     caseflow vs `scp -r` and `rsync -a` (bench/upload_bench.py)
2. polling    one tick with 1,000 running cases vs one `ssh` per case (bench/polling_bench.py)
3. admission  last write into a case folder -> stable, 1 and 100 folders at once
              (bench/admission_latency.py --at-once 1,100)
4. engine     10,000 cases in the store, 1,000 active: tick CPU, transitions/s, RSS; and
              a tick with 20,000 cases waiting for a slot (bench/engine_bench.py)
5. pipeline   200 tiny cases end to end vs the naive script (bench/pipeline_bench.py)
6. openssh    the openssh transport (system ssh through a master connection) vs the ssh
              transport (paramiko): uploads, a poll of 1,000 running cases, one command
              (bench/openssh_bench.py)
7. network    through the link emulator (1 Gbit/s, RTT 0, 10 and 50 ms): its own check, caseflow
              vs scp and rsync for one 4 GiB file and 10,000 files of 4 KiB, and an upload cut
              at 70 % then resumed (bench/network_bench.py)

--quick runs a small version of each (a smoke test; its figures mean little). Each line
of the table says what was measured, caseflow's figure, the alternative's, their ratio and
the target ("met" judges medians; a tick's maximum is shown next to its median). The
machine, the load average before each part, and every run's figures go
to the JSON file. Other work on the machine skews the wall times: --quiet-load L waits
(up to 5 minutes) before each part until the 1-minute load average is at most L.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import admission_latency  # noqa: E402
import engine_bench  # noqa: E402
import network_bench  # noqa: E402
import openssh_bench  # noqa: E402
import pipeline_bench  # noqa: E402
import polling_bench  # noqa: E402
import upload_bench  # noqa: E402
from benchlib import load, machine, ratio, wait_for_quiet  # noqa: E402

PARTS = ["upload", "polling", "admission", "engine", "pipeline", "openssh", "network"]


def _row(what, ours, theirs, ratio_, target, met) -> dict:
    return {"what": what, "caseflow": ours, "alternative": theirs, "ratio": ratio_,
            "target": target, "met": met}


def summary(results: dict) -> list[dict]:
    rows = []
    up = results.get("upload")
    if up:
        # issue 18: over loopback no worse than before the long-link work
        for key, target in (("small", 0.65), ("large", 0.85)):
            r = up[key]
            t = r["tools"]
            ours = f"{t['caseflow']['median_s']:.2f} s"
            if key == "small":
                name, ratio_ = "rsync -a", r["caseflow_vs_rsync"]
            else:
                name = r["caseflow_vs_fastest_scp"]["tool"]
                ratio_ = r["caseflow_vs_fastest_scp"]["ratio"]
            rows.append(_row(f"upload {r['data']}", ours,
                             f"{t[name]['median_s']:.2f} s {name}", ratio_, f"<= {target}",
                             ratio_ <= target))
            if "client_cpu_s" in t["caseflow"]:
                cpu = ratio(t["caseflow"]["client_cpu_s"], t[name]["client_cpu_s"])
                rows.append(_row("  CPU time on the sending side (the login node)",
                                 f"{t['caseflow']['client_cpu_s']:.2f} s",
                                 f"{t[name]['client_cpu_s']:.2f} s {name}", cpu,
                                 *(("<= 1.0", cpu <= 1.0) if key == "large" else ("", None))))
            for other in t:
                if other not in ("caseflow", name):
                    rows.append(_row("", "", f"{t[other]['median_s']:.2f} s {other}",
                                     ratio(t["caseflow"]["median_s"], t[other]["median_s"]),
                                     "", None))
    po = results.get("polling")
    if po:
        n = f"{po['running_cases']:,}"
        rows.append(_row(f"poll {n} running cases: commands / new connections per tick",
                         f"{po['commands_per_tick']} / {po['connections_per_tick']}",
                         f"{po['naive']['commands_per_tick']} / "
                         f"{po['naive']['connections_per_tick']} ssh per case", None, "1 / 0",
                         po["commands_per_tick"] == 1 and po["connections_per_tick"] == 0))
        if "poll_wall_s" in po:  # issue 18: the host's answer for all jobs (its status script)
            rows.append(_row(f"poll {n} running cases, direct runner: the poll's wall time",
                             f"{po['poll_wall_s']:.3f} s (max {po['poll_wall_max_s']:.3f})",
                             "", None, "<= 0.1 s", po["poll_wall_s"] <= 0.1))
        rows.append(_row(f"poll {n} running cases: wall time per tick",
                         f"{po['tick_wall_s']:.2f} s",
                         f"{po['naive']['tick_wall_s']:.1f} s ssh per case",
                         ratio(po["tick_wall_s"], po["naive"]["tick_wall_s"]), "", None))
    ad = results.get("admission")
    if ad:
        for count, r in ad.items():
            d = r["delay_beyond_quiet_s"]
            rows.append(_row(f"admit {count} folder(s) copied at once: last write -> stable",
                             f"Q + {d['max']:.3f} s", f"Q = {r['quiet_seconds']:g} s quiet "
                             "period", None, "Q + 0.5 s", d["max"] <= 0.5))
    en = results.get("engine")
    if en:
        t = en["tick_cpu_ms"]
        head = f"engine, {en['cases']:,} cases, {en['active']:,} active:"
        rows.append(_row(f"{head} CPU per tick with a poll, median / max",
                         f"{t['with_poll']['median']} / {t['with_poll']['max']} ms", "", None,
                         "<= 20 ms", (t["with_poll"]["median"] or 0) <= 20))
        rows.append(_row(f"{head} CPU per tick without a poll",
                         f"{t['without_poll']['median']} / {t['without_poll']['max']} ms", "",
                         None, "<= 20 ms", (t["without_poll"]["median"] or 0) <= 20))
        rows.append(_row(f"{head} transitions persisted per second, store",
                         f"{en['store_build']['transitions_per_s']:,}",
                         f"{en['sqlite_insert_tx_per_s']:,} SQLite 1-row transactions",
                         en["store_vs_sqlite"], "", None))
        rows.append(_row(f"{head} transitions per second, burst end to end",
                         f"{en['burst']['transitions_per_s']:,}", "", None, "", None))
        wt = en["waiting"]["tick_cpu_ms"]["without_poll"]
        rows.append(_row(f"engine, {en['waiting']['queued']:,} cases waiting, no free slot: "
                         "CPU per tick, median / max", f"{wt['median']} / {wt['max']} ms", "",
                         None, "<= 20 ms", (wt["median"] or 0) <= 20))
        rows.append(_row(f"{head} daemon RSS", f"{en['rss_mib']} MiB",
                         f"{en['bare_python_rss_mib']} MiB bare python",
                         ratio(en["rss_mib"], en["bare_python_rss_mib"]), "<= 120 MB",
                         en["rss_mib"] * 1.048576 <= 120))
    pi = results.get("pipeline")
    if pi:
        rows.append(_row(f"pipeline, {pi['cases']} tiny cases end to end: cases per minute",
                         f"{pi['caseflow']['cases_per_minute']:g}",
                         f"{pi['naive']['cases_per_minute']:g} naive script",
                         pi["caseflow_vs_naive"], ">= 20", pi["caseflow_vs_naive"] >= 20))
    rows += openssh_rows(results.get("openssh"))
    rows += network_rows(results.get("network"))
    return rows


def network_rows(nw: dict | None) -> list[dict]:
    """Through the link emulator (issue 18's targets at 50 ms; 0 and 10 ms for the shape)."""
    if not nw:
        return []
    rows = []
    link = nw.get("link")
    if link:
        raw = link["raw"]
        rows.append(_row("link emulator: raw TCP through it, uncapped / capped at 1 Gbit/s",
                         f"{raw['uncapped_0ms']['MiBps']} / {raw['capped_0ms']['MiBps']} MiB/s",
                         f"{link['link_MiBps']} MiB/s the cap", None, "not the bottleneck",
                         raw["capped_0ms"]["MiBps"] >= 0.95 * link["link_MiBps"]))
        for rtt, e in link["one_channel"].items():
            rows.append(_row(f"link emulator: one SSH channel at {rtt}",
                             f"{e['MiBps']} MiB/s", f"{e['bound_MiBps']} MiB/s {e['bound']}",
                             e["ratio"], "", None))
    for rtt, r in nw.get("large", {}).items():
        rate, scp = r["MiBps"]["caseflow"], r["MiBps"][r["fastest_scp"]]
        at50 = rtt == "50ms"
        rows.append(_row(f"long link {rtt}, 1 Gbit/s: upload {r['data']}", f"{rate} MiB/s",
                         f"{scp} MiB/s {r['fastest_scp']}", r["caseflow_vs_fastest_scp_rate"],
                         ">= 2.5" if at50 else "",
                         r["caseflow_vs_fastest_scp_rate"] >= 2.5 if at50 else None))
        rows.append(_row("", "", f"{r['MiBps']['rsync -a']} MiB/s rsync -a",
                         ratio(rate, r["MiBps"]["rsync -a"]), "", None))
        rows.append(_row("  share of the link", f"{r['caseflow_share_of_link']}", "", None,
                         ">= 0.8" if at50 else "",
                         r["caseflow_share_of_link"] >= 0.8 if at50 else None))
    for rtt, r in nw.get("small", {}).items():
        t = r["tools"]
        at50 = rtt == "50ms"
        rows.append(_row(f"long link {rtt}: upload {r['data']}",
                         f"{t['caseflow']['median_s']:.2f} s",
                         f"{t['rsync -a']['median_s']:.2f} s rsync -a", r["caseflow_vs_rsync"],
                         "<= 0.5" if at50 else "", r["caseflow_vs_rsync"] <= 0.5 if at50 else None))
    res = nw.get("resume")
    if res:
        rows.append(_row(f"long link {res['rtt_ms']}ms: upload cut at 70 %, resumed: bytes "
                         "sent in all / case size",
                         f"{res['bytes_to_host'] / 2**20:,.0f} MiB",
                         f"{res['case_bytes'] / 2**20:,.0f} MiB the case", res["bytes_vs_case"],
                         "<= 1.35", res["bytes_vs_case"] <= 1.35))
        rows.append(_row("  the target folder existed after the cut",
                         "yes" if res["target_visible_after_cut"] else "no", "", None, "no",
                         not res["target_visible_after_cut"]))
    return rows


def openssh_rows(op: dict | None) -> list[dict]:
    """The openssh transport in the caseflow column, the ssh transport (paramiko) as the
    alternative: the same speed is the target (within 10 %)."""
    if not op:
        return []
    rows = []
    for key in ("small", "large"):
        r = op[key]
        t = r["tools"]
        rows.append(_row(f"openssh transport: upload {r['data']}",
                         f"{t['openssh']['median_s']:.2f} s",
                         f"{t['ssh']['median_s']:.2f} s ssh transport (paramiko)",
                         r["openssh_vs_ssh"], "<= 1.1", r["openssh_vs_ssh"] <= 1.1))
        rows.append(_row("  CPU time on the sending side (with the ssh master)",
                         f"{t['openssh']['client_cpu_s']:.2f} s",
                         f"{t['ssh']['client_cpu_s']:.2f} s paramiko", r["cpu_openssh_vs_ssh"],
                         "", None))
        if "openssh_vs_scp" in r:  # the loopback targets of the ssh transport, for openssh
            rows.append(_row(f"openssh transport: upload {r['data']} vs scp",
                             f"{t['openssh']['median_s']:.2f} s",
                             f"{t['scp']['median_s']:.2f} s {r['scp']}", r["openssh_vs_scp"],
                             "<= 0.85", r["openssh_vs_scp"] <= 0.85))
            rows.append(_row("  CPU time on the sending side (with the ssh master)",
                             f"{t['openssh']['client_cpu_s']:.2f} s",
                             f"{t['scp']['client_cpu_s']:.2f} s {r['scp']}",
                             r["cpu_openssh_vs_scp"], "<= 1.0", r["cpu_openssh_vs_scp"] <= 1.0))
    p = op["poll"]
    rows.append(_row(f"openssh transport: poll {p['running_cases']:,} running cases, tick wall",
                     f"{p['openssh']['tick_wall_s']:.2f} s",
                     f"{p['ssh']['tick_wall_s']:.2f} s ssh transport (paramiko)",
                     p["openssh_vs_ssh"], "<= 1.1", p["openssh_vs_ssh"] <= 1.1))
    rt = op["round_trip"]
    rows.append(_row("openssh transport: one short command's round trip",
                     f"{rt['ms']['openssh']} ms", f"{rt['ms']['ssh']} ms paramiko",
                     rt["openssh_vs_ssh"], "", None))
    return rows


def print_table(rows: list[dict]) -> None:
    head = ("measure", "caseflow", "alternative (same run)", "caseflow ÷ alt.", "target", "met")
    cells = [[r["what"], str(r["caseflow"]), str(r["alternative"]),
              "" if r["ratio"] is None else str(r["ratio"]), r["target"],
              "" if r["met"] is None else ("yes" if r["met"] else "NO")] for r in rows]
    widths = [max(len(head[i]), *(len(c[i]) for c in cells)) for i in range(len(head))]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(x.ljust(w) for x, w in zip(c, widths)))


def markdown_table(rows: list[dict]) -> str:
    """The table as Markdown, for docs/performance.md (pasted from a run, not typed)."""
    head = "| measure | caseflow | alternative (same run) | ratio | target | met |"
    out = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        cells = [r["what"].strip() or "...", str(r["caseflow"]), str(r["alternative"]),
                 "" if r["ratio"] is None else str(r["ratio"]), r["target"] or "", met]
        if r["what"].startswith("  "):
            cells[0] = "... " + cells[0]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small version of each (smoke test)")
    p.add_argument("--only", help=f"comma-separated parts of {','.join(PARTS)}")
    p.add_argument("--quiet-load", type=float, help="wait before each part for this load")
    p.add_argument("--json", default=str(Path(__file__).resolve().parent / "last_run.json"))
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown here")
    p.add_argument("--table-from", metavar="JSON", help="print the table of an earlier run's "
                   "JSON file (no benchmark runs)")
    args = p.parse_args()
    if args.table_from:
        earlier = json.loads(Path(args.table_from).read_text())
        rows = summary(earlier["results"])
        print_table(rows)
        if args.markdown:
            Path(args.markdown).write_text(markdown_table(rows))
        return 0
    parts = args.only.split(",") if args.only else PARTS
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    started = time.time()
    out = {"machine": machine(), "quick": args.quick, "started": time.strftime(
        "%Y-%m-%d %H:%M:%S"), "load_before": {}, "results": {}}
    runners = {"upload": lambda: upload_bench.run(args.quick),
               "polling": lambda: polling_bench.run(args.quick),
               "admission": lambda: admission_latency.run(args.quick),
               "engine": lambda: engine_bench.run(args.quick),
               "pipeline": lambda: pipeline_bench.run(args.quick),
               "openssh": lambda: openssh_bench.run(args.quick),
               "network": lambda: network_bench.run(args.quick)}
    for part in parts:
        if args.quiet_load is not None:
            wait_for_quiet(args.quiet_load, patience=300)
        out["load_before"][part] = load()
        out["results"][part] = runners[part]()
    out["seconds"] = round(time.time() - started)
    out["summary"] = summary(out["results"])
    m = out["machine"]
    print(f"\n{m['cores']} cores ({m['cpu']}), {m['memory_mib']:,} MiB, {m['kernel']}, "
          f"{m['openssh']}, Python {m['python']}, paramiko {m['paramiko']}; load average "
          f"before each part: {out['load_before']}; {out['seconds']} s"
          + ("; QUICK run: the figures mean little" if args.quick else ""))
    print_table(out["summary"])
    Path(args.json).write_text(json.dumps(out, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(out["summary"]))
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
