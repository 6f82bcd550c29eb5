"""The pure-engine benchmark (bench/engine_bench.py --quick) still runs against the engine as
it is now. Its figures are not checked: timings belong to `make bench`, not to the tests."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_engine_benchmark_runs(tmp_path):
    out = tmp_path / "engine.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "engine_bench.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())["engine"]
    assert result["burst"]["transitions"] > 0 and result["ticks"] > 0
    assert result["rss_mib"] > 0 and result["store_build"]["transitions"] > 0
