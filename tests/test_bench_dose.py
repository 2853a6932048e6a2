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
        for m in r["methods"].values():
            assert 0 <= m["vacancies_filled"] <= r["n_empty_sites"]
    # at 1e5 e/Å² both find MoS2, and no method's error beats the bound there
    for name, m in high["methods"].items():
        assert m["f1"] >= 0.95, (name, m)
        assert m["rmse"] >= high["crb_A"], (name, m)
    assert (tmp_path / "dose_curve.png").stat().st_size > 10_000
    assert "| MoS2 | 1e+05 |" in (tmp_path / "dose_results.md").read_text()


def test_the_lattice_entry_stands_for_the_model_serving_each_row():
    assert bench_dose.lattice_model("general", "hBN") == "general"
    assert bench_dose.lattice_model("lattice", "Si-graphene") == "graphene"
    assert bench_dose.lattice_model("lattice:/models", "WS2") == os.path.join(
        "/models", "MoS2.safetensors")
    assert bench_dose.lattice_model("lattice:/models", "Si-graphene") == os.path.join(
        "/models", "graphene.safetensors")
    assert bench_dose.lattice_model("lattice", "no such lattice") is None
    # a method missing from a row (no lattice model serves it) is a dash in the table
    score = {"f1": 0.5, "rmse": 0.1, "vacancies_filled": 1}
    rows = [{"lattice": lat, "dose": 1e4, "n_atoms": 9, "crb_A": 0.05, "n_empty_sites": 2,
             "methods": methods} for lat, methods in
            (("MoS2", {"general": score, "lattice": score}), ("other", {"general": score}))]
    table = bench_dose.markdown(rows, {"n_images": 1, "size": 96, "seed": 0})
    assert "| MoS2 | 1e+04 | 9 | 0.500 | 0.500 | 0.100 | 0.100 | 0.050 | 1 / 2 | 1 / 2 |" \
        in table
    assert "| other | 1e+04 | 9 | 0.500 | — | 0.100 | — | 0.050 | 1 / 2 | — |" in table
