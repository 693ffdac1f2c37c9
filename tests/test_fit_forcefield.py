"""Checks of examples/fit_forcefield.py: alanine dipeptide built from internal coordinates, and
the k of its ψ torsion learned by differentiating through short simulations.

Fast: the builder's geometry and reproducibility, and one `--quick` run (4 replicas × 100
steps, 6 epochs; ~20 s, most of it compiling) whose summary carries the OpenMM comparison and the
finite-difference check. Slow (`-m slow`): the default run recovers the true k.
"""

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest


openmm = pytest.importorskip("openmm")
app = pytest.importorskip("openmm.app")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import fit_forcefield as example  # noqa: E402


def _signed_volume(n, ca, c, cb):
    return float(np.dot(n - ca, np.cross(c - ca, cb - ca)))


def test_heavy_atoms_have_the_requested_geometry():
    x = example.heavy_atom_positions(phi=-57.0, psi=-47.0, omega=178.0)
    names = [f"{r}:{a}" for r, a, _ in example.HEAVY_ATOMS]
    at = {name: x[i] for i, name in enumerate(names)}
    assert example.dihedral_deg(at["ACE:C"], at["ALA:N"], at["ALA:CA"], at["ALA:C"]) == pytest.approx(-57.0)
    assert example.dihedral_deg(at["ALA:N"], at["ALA:CA"], at["ALA:C"], at["NME:N"]) == pytest.approx(-47.0)
    assert example.dihedral_deg(at["ACE:CH3"], at["ACE:C"], at["ALA:N"], at["ALA:CA"]) == pytest.approx(178.0)
    assert example.dihedral_deg(at["ALA:CA"], at["ALA:C"], at["NME:N"], at["NME:C"]) == pytest.approx(178.0)
    lengths = {(i, j): np.linalg.norm(x[i] - x[j]) for i, j in example.HEAVY_BONDS}
    assert all(0.122 < d < 0.154 for d in lengths.values())
    # L-alanine: the same handedness at CA as the alanines of OpenMM's villin test structure
    pdb = app.PDBFile(os.path.join(os.path.dirname(app.__file__), "data", "test.pdb"))
    positions = np.asarray(pdb.positions.value_in_unit(openmm.unit.nanometer))
    villin = [_signed_volume(*(positions[a.index] for name in ("N", "CA", "C", "CB") for a in residue.atoms()
                               if a.name == name))
              for residue in pdb.topology.residues() if residue.name == "ALA"]
    assert villin and all(v > 0 for v in villin)
    assert _signed_volume(at["ALA:N"], at["ALA:CA"], at["ALA:C"], at["ALA:CB"]) > 0


def test_builder_is_reproducible_and_relaxed():
    topology, positions = example.build_alanine_dipeptide()
    _, again = example.build_alanine_dipeptide()
    assert [r.name for r in topology.residues()] == ["ACE", "ALA", "NME"]
    assert topology.getNumAtoms() == 22 and positions.shape == (22, 3)
    np.testing.assert_array_equal(positions, again)  # addHydrogens' random start is seeded
    _, forces = example.openmm_energy_and_forces(topology, positions)
    assert np.abs(forces).max() < 5.0  # minimised (to 1 kJ/mol/nm RMS)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit_forcefield")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        returned = example.main(["--quick", "--out", str(out)])
    return out, returned, printed.getvalue()


def test_quick_diffmd_matches_openmm_on_the_built_molecule(quick):
    start = json.loads((quick[0] / "summary.json").read_text())["start_structure"]
    assert start["energy_diffmd"] == pytest.approx(start["energy_openmm"], rel=1e-10)
    assert start["max_force_diff"] < 1e-8
    assert -100.0 < start["phi_deg"] < -50.0 and 30.0 < start["psi_deg"] < 90.0  # C7eq basin


def test_quick_gradient_matches_finite_difference(quick):
    check = json.loads((quick[0] / "summary.json").read_text())["gradient_check"]
    assert check["n_steps"] == 100 and check["n_replicas"] == 4
    assert check["forward"] > 0  # from 2× the true k the loss rises with k
    assert check["rel_diff_fd"] < 1e-6


def test_quick_run_learns_towards_the_true_k_and_writes_outputs(quick):
    out, returned, printed = quick
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k_learned"] == pytest.approx(returned["k_learned"])
    parameter = summary["parameter"]
    assert parameter["label"].startswith("type1=protein-N type2=protein-CX type3=protein-C type4=protein-N")
    assert parameter["rows_using_it"] and len(parameter["rows_using_it"]) == 1
    assert summary["k_true"] == pytest.approx(6.61072)
    assert summary["k_start"] == pytest.approx(2 * summary["k_true"])
    epochs = summary["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5, 6]
    assert printed.count("\nEpoch ") == 6
    ks = [e["k"] for e in epochs] + [summary["k_learned"]]
    assert all(a > b > summary["k_true"] for a, b in zip(ks, ks[1:]))  # down towards the true k, no overshoot
    losses = [e["loss"] for e in epochs]
    assert all(a > b for a, b in zip(losses, losses[1:]))
    assert len(summary["scan"]["loss"]) == 3
    for name in ("training.png", "dihedrals.png", "loss_landscape.png"):
        assert (out / name).stat().st_size > 1000


def test_quick_loss_vanishes_at_the_true_k(quick):
    """The target and training share their initial velocities: loss and derivative are 0 at the
    true k (reuses the quick run's compiled function)."""
    problem = example.get_problem(example.QUICK["n_steps"], example.QUICK["n_replicas"], example.LOG_EVERY, 0)
    target, _ = problem.target()
    (loss, _), grad = problem.value_and_grad(jnp.float64(problem.k_true), target)
    assert float(loss) == 0.0 and float(grad) == 0.0
    (_, _), grad_above = problem.value_and_grad(jnp.float64(1.1 * problem.k_true), target)
    assert float(grad_above) > 0


@pytest.mark.slow
def test_default_run_recovers_the_true_k(tmp_path):
    summary = example.main(["--out", str(tmp_path)])
    assert summary["rel_error"] < 1e-4
    assert summary["gradient_check"]["rel_diff_fd"] < 1e-6
    assert summary["gradient_check"]["rel_diff_reverse"] < 1e-10
    assert summary["runtime_s"]["total"] < 300
