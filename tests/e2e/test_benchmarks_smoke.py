"""The benchmark suite runs: `python -m benchmarks --quick` for a subset writes RESULTS.md and RESULTS.json with
figures in them. Only that it measured something is checked here, never how fast: the targets belong to the
benchmark's own report (benchmarks/RESULTS.md), not to the tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_quick_run_writes_results_with_figures(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "e2e,engine,timers", "--frameworks", "ptb",
         "--no-profile", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "RESULTS.json").read_text())
    assert results["machine"]["cores"] >= 1 and results["machine"]["commit"] != "unknown"
    ptb = results["e2e"]["ptb"]
    assert "error" not in ptb, ptb
    for phase in ("method1_small", "method3_small", "method1_half", "method3_half", "method1_large",
                  "method3_large"):
        figures = ptb["phases"][phase]
        assert figures["steps"] > 0 and figures["updates_per_s"] > 0, (phase, figures)
        assert figures["p99_ms"] is not None and figures["bot_cpu_s"] > 0, (phase, figures)
    assert ptb["echo"]["steps"] > 0 and ptb["echo"]["api_calls_per_update"] == 1.0
    assert ptb["memory"]["opened_live"] > 0 and ptb["memory"]["peak_rss_bytes"] > 0
    assert results["engine"]["engine"]["events_per_s"] > 0 and results["engine"]["bare_insert_commit"]["rows"] > 0
    assert results["timers"]["fired"] == results["timers"]["pending"] > 0
    assert {t["section"] for t in results["targets"]} == {"e2e ptb", "engine", "timers"}
    assert all(t["value"] is not None for t in results["targets"]), results["targets"]
    report = (out / "RESULTS.md").read_text()
    assert "## Targets" in report and "| Method 1, saturation |" in report
    assert results["machine"]["cpu"] in report and results["machine"]["commit"][:12] in report
