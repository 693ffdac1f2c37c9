"""Smoke test of benchmarks/lj_fluid.py on a tiny fluid (N = 343, a few dozen steps).

Checks the shared start, the record fields of every engine, the driver's JSON, and that the
engines really integrate the same potential from the same start:

- diffmd's `SwitchedCutoff` is OpenMM's switching function, so diffmd in float64 and OpenMM's
  double-precision Reference platform must give the same potential energy to rounding (1e-8
  relative, ≈2e-5 kJ/mol here; observed ≈1e-12 kJ/mol). The switching shell (0.9–1.0 nm) changes
  the energy by ≈0.04 kJ/mol, so a missing or different switch fails the check by > 1000×.
- float32 diffmd and OpenMM's CPU platform (single-precision pair terms): 1e-6 relative
  (≈2e-3 kJ/mol; observed ≈2e-5).
- JAX MD smooths with a polynomial in r² instead: its energy must differ from diffmd's by
  exactly Σ V(r)·(S_JAXMD(r) − S_OpenMM(r)) over the pairs of the start (≈0.03 kJ/mol here),
  computed independently in numpy; float32 tolerance 1e-3 kJ/mol.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import lj_fluid  # noqa: E402

N = 343  # box 2.54 nm: about the smallest cube whose half side holds the list cutoff 1.2 nm
FIELDS = ("engine", "n_atoms", "atom_steps_per_s", "steps_per_s", "timed_steps", "timed_seconds",
          "pe_start_per_atom", "drift_per_atom_per_ns", "peak_rss_mib", "variant")


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    return lj_fluid.start_configuration(N, tmp_path_factory.mktemp("cache"))


def _pairs(start):
    """Distances (nm) of all pairs closer than the cutoff, minimum image, float64."""
    x, side = start["coords"], start["side"]
    d = x[:, None, :] - x[None, :, :]
    d -= side * np.round(d / side)
    r = np.sqrt(np.sum(d * d, axis=-1))[np.triu_indices(len(x), 1)]
    return r[r < lj_fluid.CUTOFF]


def _energy(r, switch):
    v = 4 * lj_fluid.EPSILON * ((lj_fluid.SIGMA / r) ** 12 - (lj_fluid.SIGMA / r) ** 6)
    return float(np.sum(v * switch))


def _switches(r):
    """(OpenMM's switch, JAX MD's multiplicative_isotropic_cutoff) at distances r."""
    rc, ro = lj_fluid.CUTOFF, lj_fluid.SWITCH
    x = np.clip((r - ro) / (rc - ro), 0, 1)
    openmm = 1 - 10 * x**3 + 15 * x**4 - 6 * x**5
    jaxmd = np.where(r < ro, 1.0, (rc**2 - r**2) ** 2 * (rc**2 + 2 * r**2 - 3 * ro**2) / (rc**2 - ro**2) ** 3)
    return openmm, jaxmd


def _check_record(record, engine):
    for field in FIELDS:
        assert field in record, field
    assert record["engine"] == engine and record["n_atoms"] == N
    assert record["timed_steps"] >= 20 and record["timed_seconds"] > 0
    assert record["atom_steps_per_s"] == pytest.approx(record["steps_per_s"] * N)
    assert np.isfinite(record["drift_per_atom_per_ns"])
    assert abs(record["drift_end_minus_start_per_atom"]) < 1e-3  # NVE over ≤ 0.1 ps: kJ/mol per atom
    json.dumps(record, allow_nan=False)


def test_start_is_minimised_cached_and_at_120_kelvin(start):
    s, path = start
    again = lj_fluid.load_start(path)
    np.testing.assert_array_equal(again["coords"], s["coords"])
    assert s["coords"].shape == (N, 3) and np.all((s["coords"] >= 0) & (s["coords"] < s["side"]))
    assert s["side"] == pytest.approx((N / 21.0) ** (1 / 3))
    assert s["pe_minimised_per_atom"] < s["pe_lattice_per_atom"] - 0.1
    assert np.allclose(s["velocities"].sum(axis=0), 0, atol=1e-12)
    kelvin = lj_fluid.MASS * np.sum(s["velocities"] ** 2) / (3 * N * lj_fluid.KB)
    assert kelvin == pytest.approx(120.0, abs=25.0)  # 5 standard deviations of a 1029-dof sample
    assert lj_fluid.start_configuration(N, path.parent)[0]["coords"].tobytes() == s["coords"].tobytes()


def test_diffmd_float64_and_openmm_reference_agree_exactly(start):
    s, _ = start
    from openmm import LocalEnergyMinimizer  # noqa: F401  (openmm present)

    record = lj_fluid.run_diffmd(s, dtype="float64", finder="distance", seconds=0, min_steps=20, chunk_steps=10)
    _check_record(record, "diffmd")
    assert record["dtype"] == "float64" and record["chunks"] == 2 and record["reallocations"] == 0
    context, _ = lj_fluid.openmm_context(s["coords"], s["side"], "Reference")
    reference = lj_fluid.openmm_energies(context)[0]
    diffmd = record["pe_start_per_atom"] * N
    tolerance = 1e-8 * abs(reference)
    assert diffmd == pytest.approx(reference, abs=tolerance)
    r = _pairs(s)
    openmm_switch, jaxmd_switch = _switches(r)
    assert _energy(r, openmm_switch) == pytest.approx(reference, abs=tolerance)
    # the check can tell the switches apart: no switch, or JAX MD's, is far outside the tolerance
    assert abs(_energy(r, 1.0) - reference) > 1000 * tolerance
    assert abs(_energy(r, jaxmd_switch) - reference) > 1000 * tolerance


def test_float32_diffmd_and_openmm_cpu_records(start):
    s, _ = start
    d = lj_fluid.run_diffmd(s, dtype="float32", finder="distance", seconds=0, min_steps=20, chunk_steps=10)
    o = lj_fluid.run_openmm(s, seconds=0, min_steps=20)
    _check_record(d, "diffmd")
    _check_record(o, "openmm")
    assert d["dtype"] == "float32" and o["threads"] == 2
    openmm_cpu = o["pe_start_per_atom"] * N
    assert d["pe_start_per_atom"] * N == pytest.approx(openmm_cpu, abs=1e-6 * abs(openmm_cpu))
    assert d["e_start_per_atom"] == pytest.approx(o["e_start_per_atom"], abs=1e-5)  # same velocities


@pytest.mark.slow  # ~14 s: JAX MD's own compile and run
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_jaxmd_record_and_its_different_switch(start):
    s, _ = start
    record = lj_fluid.run_jaxmd(s, seconds=0, min_steps=20)
    _check_record(record, "jax-md")
    r = _pairs(s)
    openmm_switch, jaxmd_switch = _switches(r)
    expected = _energy(r, jaxmd_switch) - _energy(r, openmm_switch)  # ≈ 0.03 kJ/mol
    diffmd_like = _energy(r, openmm_switch)
    assert record["pe_start_per_atom"] * N - diffmd_like == pytest.approx(expected, abs=1e-3)
    assert abs(expected) > 10e-3


@pytest.mark.slow  # ~10 s; the default suite keeps its 7-minute budget
def test_driver_writes_json_and_table(start, tmp_path, capsys):
    _, path = start
    out = tmp_path / "lj.json"
    result = lj_fluid.main(["--sizes", str(N), "--engines", "diffmd", "openmm", "--dtypes", "float32",
                            "--finder", "distance", "--seconds", "0", "--min-steps", "20", "--chunk-steps", "10",
                            "--cache-dir", str(path.parent), "--json", str(out)])
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    assert written["records"] == json.loads(json.dumps(result["records"]))
    assert sorted(r["engine"] for r in written["records"]) == ["diffmd", "openmm"]
    for record in written["records"]:
        assert {"engine", "n_atoms", "atom_steps_per_s"} <= set(record) and record["n_atoms"] == N
    diffmd = next(r for r in written["records"] if r["engine"] == "diffmd")
    openmm = next(r for r in written["records"] if r["engine"] == "openmm")
    assert diffmd["ratio_to_openmm"] == pytest.approx(diffmd["atom_steps_per_s"] / openmm["atom_steps_per_s"])
    assert "| 343 | diffmd | f32 distance |" in printed and "| 343 | openmm |" in printed


def test_distance_finder_is_skipped_for_large_systems(tmp_path, capsys):
    result = lj_fluid.main(["--sizes", "20000", "--engines", "diffmd", "--finder", "distance",
                            "--cache-dir", str(tmp_path)])
    assert result["records"] == []
    assert [(s["n_atoms"], s["dtype"]) for s in result["skipped"]] == [(20000, "float32"), (20000, "float64")]
    assert "O(N²)" in result["skipped"][0]["reason"] and "skipped: N = 20,000" in capsys.readouterr().out
    assert not any(tmp_path.iterdir())  # nothing was prepared for a size with nothing to run


def test_cell_finder_fails_clearly_when_missing(monkeypatch):
    import diffmd as md

    monkeypatch.delattr(md, "CellListNeighborFinder", raising=False)
    assert lj_fluid.default_finder() == "distance"
    with pytest.raises(RuntimeError, match="CellListNeighborFinder"):
        lj_fluid.neighbor_finder("cell", 1.2)
    with pytest.raises(SystemExit, match="use --finder distance"):
        lj_fluid.main(["--sizes", str(N), "--finder", "cell"])
