"""benchmarks/bench_dose.py on a tiny grid: its sets, scores, bound and outputs."""

import json
import os
import sys

import numpy as np
import pytest

try:
    from benchmarks import bench_dose
except ImportError:  # plain `pytest` does not put the repository root on sys.path
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks import bench_dose


def test_dose_benchmark_scores_methods_and_the_bound_against_dose(tmp_path):
    bench_dose.main(["--quick", "--lattices", "MoS2", "--out", str(tmp_path)])
    with open(tmp_path / "dose_results.json") as f:
        rows = json.load(f)["rows"]
    assert [r["dose"] for r in rows] == [1e5, 1e4]
    high, low = rows
    # the bound shrinks as 1 / sqrt(dose): 10x the dose, sqrt(10) smaller (other images)
    assert high["crb_A"] * np.sqrt(10) == pytest.approx(low["crb_A"], rel=0.25)
    for r in rows:
        assert set(r["methods"]) == {"general", "classical (tuned)"}
        assert r["n_atoms"] > 10
    # at 1e5 e/Å² both find MoS2, and no method's error beats the bound there
    for name, m in high["methods"].items():
        assert m["f1"] >= 0.95, (name, m)
        assert m["rmse"] >= high["crb_A"], (name, m)
    assert (tmp_path / "dose_curve.png").stat().st_size > 10_000
    assert "| MoS2 | 1e+05 |" in (tmp_path / "dose_results.md").read_text()
