"""The crash suite: `caseflow run` (a real process, over the real sshd, to real pueue 3.4.1
and 4.0.4) is SIGKILLed at random moments while 20 cases flow, and restarted, again and again.
Then the invariants are checked from the store and from the remote side.

CASEFLOW_CRASH_KILLS (default 12, the CI size; the full run uses 60) and CASEFLOW_CRASH_SEED
(default: random, printed) steer it:
    CASEFLOW_CRASH_KILLS=60 .venv/bin/python -m pytest -m reliability -s tests/reliability
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

from caseflow.spec import load_spec
from harness import is_valid_path, wait_for
from reliability.conftest import CRASH_HOSTS, JOB, host_id, write_case

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

CASES = 20
TERMINAL = ("success", "failure", "not_found")


@pytest.mark.parametrize("gpu_host", CRASH_HOSTS, indirect=True, ids=host_id)
def test_sigkill_at_random_moments_loses_nothing_and_runs_nothing_twice(ws, gpu_host, daemons):
    kills = int(os.environ.get("CASEFLOW_CRASH_KILLS", "12"))
    seed = int(os.environ.get("CASEFLOW_CRASH_SEED", random.randrange(1 << 30)))
    print(f"\ncrash suite: seed {seed}, {kills} kills "
          f"(rerun: CASEFLOW_CRASH_SEED={seed} CASEFLOW_CRASH_KILLS={kills})")
    rnd = random.Random(seed)
    ws.write_config(
        transport=gpu_host.transport(ws.remote, reconnect_min_interval=0.2),
        backend={"kind": "pueue", "command": JOB.replace("{ctl}", str(ws.ctl))},
        groups={"gpu_a": {"slots": 3}, "gpu_b": {"slots": 2}},
        tick_seconds=0.1, poll_seconds=0.2, workers=3,
        stability={"quiet_seconds": 0.3, "rescan_seconds": 1},
        retry={"initial_seconds": 0.2, "max_seconds": 1},
        archive={"done": "done", "failed": "failed"}, remote_cleanup="on_success")
    expected: dict[str, str] = {}
    pending = [f"case_{i:02d}" for i in range(CASES)]
    rnd.shuffle(pending)

    def drop_some(n: int) -> None:
        for _ in range(min(n, len(pending))):
            name = pending.pop()
            files = {f"part{j}.bin": os.urandom(rnd.choice([100, 5000, 200_000]))
                     for j in range(rnd.randint(1, 4))}
            if rnd.random() < 0.25:
                files["exit_code"] = "3"
            files["work"] = f"{rnd.uniform(0.1, 0.8):.2f}"
            if rnd.random() < 0.4:
                files["case.yaml"] = "group: gpu_b\n"
            expected[name] = "failure" if "exit_code" in files else "success"
            staging = ws.root / "staging" / name
            write_case(staging, files)
            os.rename(staging, ws.inbox / name)

    survived = 0
    caught: Counter = Counter()  # what the kills interrupted: cases per phase at each kill
    for k in range(kills):
        drop_some(rnd.randint(0, 4) if k < kills - 1 else len(pending))
        d = daemons()
        d.wait_running()
        time.sleep(rnd.uniform(0.0, 1.5))  # a random moment: the point of this suite
        d.kill()
        survived += 1
        for r in ws.store.cases():
            phase = ("fetching results" if r.job_outcome and r.state == "running" else
                     "wrap-up" if r.wrapup else r.state)
            if phase not in TERMINAL:
                caught[phase] += 1
    drop_some(len(pending))
    final = daemons()
    final.wait_running()

    def all_done():
        rows = ws.store.cases()
        return len(rows) == CASES and all(r.state in TERMINAL and not r.wrapup for r in rows)
    wait_for(all_done, timeout=300, what="every case to end")
    assert final.stop() == 0
    rows = ws.store.cases()
    spec = load_spec()

    # 1. every case reached the right terminal state, with its results at home
    wrong = {r.name: (r.state, r.reason) for r in rows if r.state != expected[r.name]}
    assert wrong == {}, wrong
    for r in rows:
        assert r.results_fetched, r
        result = (ws.root / "results").glob(f"{r.name}*/output/result.txt")
        assert [p.read_text().strip() for p in result] == [f"result of {r.id}"], r.name
    # 2. exactly one remote task per case attempt (every case ran once: run 1)
    labels = [t["label"] for t in gpu_host.tasks().values()]
    instance = ws.store.instance_id()
    assert sorted(labels) == sorted(f"caseflow-{instance}-{r.id}-1" for r in rows)
    starts = (ws.ctl / "starts").read_text().split("\n")
    started = sorted(int(line.split()[0]) for line in starts if line)
    assert started == sorted(r.id for r in rows), "a job was started twice (or never)"
    # 3. no slot held by a terminal case, none held twice
    assert [s for s in ws.store.slots() if s.case_id is not None] == []
    # 4. each case's history is a valid path of the spec
    for r in rows:
        trail = [(h.src, h.dst, h.trigger) for h in ws.store.history(r.id)]
        assert is_valid_path(spec, trail), (r.name, trail)
    # 5. no partial upload was ever run as a case
    assert not (ws.ctl / "partial").exists(), (ws.ctl / "partial").read_text()
    # the wrap-up finished too: archived, and successful cases removed from the host
    for r in rows:
        assert os.path.dirname(r.local_path) == str(ws.root / ("done" if r.state == "success"
                                                                 else "failed"))
        assert os.path.exists(r.remote_path) == (r.state != "success"), r
    assert list(ws.inbox.iterdir()) == []
    print(f"crash suite: {survived} kills survived, {CASES} cases, 0 duplicates, 0 leaked slots;"
          f" cases caught by the kills, by phase: {dict(sorted(caught.items()))}")
