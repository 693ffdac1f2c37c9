"""Reporters: a run streamed to a state CSV and DCD / XTC / PDB trajectories (read back by
mdtraj and OpenMM), in chunks, with the same numbers as the run's own loggers; files appear
under their name only when the run completes."""

from __future__ import annotations

import csv

import equinox as eqx
import jax
import numpy as np
import pytest

import diffmd as md
from test_langevin import argon

mdtraj = pytest.importorskip("mdtraj")


def logged_argon():
    system = argon(n_side=3)
    return eqx.tree_at(lambda s: s.loggers, system, {"x": md.CoordinatesLogger(50), "pe": md.PotentialEnergyLogger(10),
                                                     "t": md.TemperatureLogger(10)})


def test_state_and_trajectories_match_the_runs_own_records(tmp_path):
    system = logged_argon()
    integrator = md.LangevinMiddle(0.002, 120.0, 1.0)
    plain = md.simulate(system, integrator, 2_400, key=jax.random.PRNGKey(0))
    reporters = [md.io.StateDataReporter(tmp_path / "state.csv", 10),
                 *(md.io.TrajectoryReporter(tmp_path / f"run.{kind}", 50) for kind in ("dcd", "xtc", "pdb"))]
    run = md.simulate(system, integrator, 2_400, key=jax.random.PRNGKey(0), reporters=reporters)
    assert set(run.logs) == {"x", "pe", "t"}  # the reporters' records are not kept
    np.testing.assert_array_equal(np.asarray(run.state.coords), np.asarray(plain.state.coords))

    with open(tmp_path / "state.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(md.io.StateDataReporter.COLUMNS)
    assert [int(r["step"]) for r in rows] == list(range(10, 2_401, 10))
    np.testing.assert_allclose([float(r["potential_energy"]) for r in rows], np.asarray(plain.logs["pe"]), rtol=1e-9)
    np.testing.assert_allclose([float(r["temperature"]) for r in rows], np.asarray(plain.logs["t"]), rtol=1e-9)
    assert float(rows[-1]["time_ps"]) == pytest.approx(4.8)
    assert float(rows[0]["volume"]) == pytest.approx(float(system.boundary.volume))
    assert all(float(r["speed_ns_per_day"]) > 0 for r in rows)

    expected = np.asarray(plain.logs["x"])  # (48, N, 3) nm
    side = float(system.boundary.sides[0])
    for kind, atol in (("dcd", 1e-5), ("xtc", 2e-3), ("pdb", 2e-3)):  # DCD float32 Å; XTC 1e-3 nm; PDB 0.001 Å… 3 decimals
        trajectory = mdtraj.load(str(tmp_path / f"run.{kind}"), top=str(tmp_path / "run.pdb"))
        assert trajectory.n_frames == 48 and trajectory.n_atoms == system.n_atoms
        np.testing.assert_allclose(trajectory.xyz, expected, atol=atol)
        np.testing.assert_allclose(trajectory.unitcell_lengths, side, rtol=1e-4)
    from openmm import app

    pdb = app.PDBFile(str(tmp_path / "run.pdb"))
    assert pdb.getNumFrames() == 48
    assert not list(tmp_path.glob(".*.partial"))


def test_a_failed_run_leaves_the_previous_file_and_a_partial_one(tmp_path):
    system = logged_argon()
    target = tmp_path / "run.dcd"
    target.write_bytes(b"previous run")
    with pytest.raises(md.SimulationError):
        md.simulate(system, md.VelocityVerlet(0.5), 200, reporters=[md.io.TrajectoryReporter(target, 10)])
    assert target.read_bytes() == b"previous run"  # (what was written went to .run.dcd.partial)


def test_reporter_errors_are_clear(tmp_path):
    system = logged_argon()
    with pytest.raises(ValueError, match="suffix"):
        md.io.TrajectoryReporter(tmp_path / "run.trr", 10)
    with pytest.raises(ValueError, match="every"):
        md.io.StateDataReporter(tmp_path / "s.csv", 0)
    reporters = [md.io.StateDataReporter(tmp_path / "s.csv", 10)]
    with pytest.raises(TypeError, match="eager"):
        jax.jit(lambda s: md.simulate(s, md.VelocityVerlet(0.002), 20, reporters=reporters).state.coords)(system)


def test_a_run_continued_from_a_checkpoint_is_bit_identical(tmp_path):
    """1,000 steps saved by CheckpointReporter, loaded by load_state and run 1,000 more equal
    2,000 steps in one go bit for bit: coordinates, velocities, PRNG key, the box a barostat
    moved and its adaptive state."""
    system = logged_argon()
    integrator = md.LangevinMiddle(0.002, 120.0, 1.0, coupling=md.MonteCarloBarostat(300.0, 120.0, 10))
    whole = md.simulate(system, integrator, 2_000, key=jax.random.PRNGKey(0))
    md.simulate(system, integrator, 1_000, key=jax.random.PRNGKey(0),
                reporters=[md.io.CheckpointReporter(tmp_path / "run.chk", 1_000)])
    state, meta = md.io.load_state(tmp_path / "run.chk", system, integrator)
    assert meta["steps_done"] == 1_000
    rest = md.simulate(system, integrator, 1_000, start=state)
    for a, b in ((rest.state.coords, whole.state.coords), (rest.state.velocities, whole.state.velocities),
                 (rest.state.boundary.sides, whole.state.boundary.sides),
                 (rest.state.couplings[0].volume_step, whole.state.couplings[0].volume_step),
                 (jax.random.key_data(rest.state.key) if rest.state.key.dtype != np.uint32 else rest.state.key,
                  jax.random.key_data(whole.state.key) if whole.state.key.dtype != np.uint32 else whole.state.key)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(whole.state.couplings[0].total_accepted) > 0  # the box did move
    with pytest.raises(ValueError, match="not a diffmd"):
        (tmp_path / "junk.chk").write_bytes(b"junk")
        md.io.load_state(tmp_path / "junk.chk", system, integrator)
