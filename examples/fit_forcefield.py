"""Learning a torsion constant of alanine dipeptide (amber14) by differentiating through short simulations.

What it does. Alanine dipeptide (ACE-ALA-NME, 22 atoms) in vacuum with `amber14-all.xml` is
built from internal coordinates (no file is read or downloaded), relaxed with OpenMM, and turned
into a diffmd System by `diffmd.ForceField`. The force-field number learned is the k of the
periodicity-2 term of the backbone ψ torsion (k3 = 6.61072 kJ/mol, periodicity3 = 2, phase3 = π
of ff14SB's <Proper> N–CX–C–N): the entry is found, not hard-coded, as the one the System's
PeriodicTorsionForce row on ALA's (N, CA, C, N+1) with periodicity 2 uses
(`system.force_field.index`), and `ff.labels["PeriodicTorsionForce"]` names it ("... n=3": the
Proper's third term). Sixteen replicas start from 300 K states (the ends of 16
independent 5-ps OpenMM Langevin runs from the relaxed structure) and run 300 velocity-Verlet
steps of 1 fs each (NVE, float64), all in one `jax.vmap`; φ and ψ are logged every 2 steps. The
loss compares the first two Fourier (circular) moments of their distribution with a target's,

    loss(k) = Σ_{θ∈{φ,ψ}} Σ_{n=1,2} (⟨cos nθ⟩_k − ⟨cos nθ⟩_target)² + (⟨sin nθ⟩_k − ⟨sin nθ⟩_target)²,

averaged over time and replicas; the target is the same simulation at the force field's own k.
Training starts at 2× the true k and runs Adam on log k, with dloss/dk from forward-mode
differentiation through `diffmd.simulate` of `system.with_parameters(p)`. Before training,
dloss/dk at the start value is checked against a central finite difference of the same loss and
against reverse mode; after training, the loss and its derivative are scanned over k (0.25–2.5×
the true value) to show the landscape descended.

Run:  .venv/bin/python examples/fit_forcefield.py --out results/fit_forcefield        (~45 s)
      .venv/bin/python examples/fit_forcefield.py --quick --out /tmp/fit_forcefield   (~10 s: tests)

Writes OUT/summary.json (learned, true and start k, the gradient check, the OpenMM comparison of
the start structure, the epochs, the loss scan, timings), OUT/training.png (loss, k with the true
k as a line, and k's relative error against epoch), OUT/dihedrals.png (φ and ψ distributions and
the replica-mean ψ(t) at the start, learned and true k) and OUT/loss_landscape.png (loss and
dloss/dk against k). One line per epoch is printed:

    Epoch  1 | k 13.2214 kJ/mol (2.0000× true) | Loss 2.50e-01 | dLoss/dk  6.49e-02

Measured (default run, seed 0, this 2-core CPU): k = 13.2214 → 6.61068 kJ/mol (true 6.61072) in
40 epochs, relative error 6e-6 (loss 0.25 → 1e-11); forward-mode dloss/dk agrees with the
central difference to 1e-8 and with reverse mode to 2e-16; 0.4 s per epoch (16 × 300 steps with
their tangents), 45 s in all (of which 10 s the reverse-mode cross-check).

Choices, and why (issue 11, point 7, suggested this design; where it departs, and why):

* Which number. Of the torsion entries on ALA's φ and ψ, ψ's periodicity-2 term (the largest
  backbone ψ term) gives the clearest signal: the loss at 2× is 0.25 and rises monotonically on
  both sides of the true value (loss_landscape.png), where the largest φ term (C–N–CX–C,
  periodicity 3, k = 1.757) moves the same loss only 7e-3 at 2×, 35× flatter. A torsion k is
  also the number a force-field fit would adjust; σ of an atom type moves several pair distances
  at once, and a torsion's effect on a dihedral is the direct one.
* Which observable. A dihedral distribution, through its first two Fourier moments: smooth in
  the coordinates (a histogram is not), and together they see where the distribution sits
  (first moment) and how wide it is (second); a torsion constant changes both. ⟨cos φ⟩ alone
  would be one number, blind to the sign of a shift.
* Forward mode. One scalar is learned, so one tangent carried along the run gives the exact
  derivative (`jax.jvp`, `simulate(grad_mode="forward")`) in constant memory; here it compiles
  in half the time of reverse mode (4.3 s against 9.0 s) and runs 1.6× faster (0.37 s against
  0.61 s per epoch). Reverse mode (jax.grad, `grad_mode="reverse"`) is the cross-check in the
  default run; it would be the choice for many numbers at once (e.g. the whole `ff.parameters`).
* Common random numbers. The target and every epoch run from the same 16 starts, so the loss is
  a smooth deterministic function of k whose minimum is exactly the true k (loss 0 there), and
  recovery can be checked to many digits. `--independent-target` makes the target from other
  starts (seed + 1000): the loss no longer reaches 0, and the learned k is off by the sampling
  error of R × 0.3 ps — measured (seed 0): 6.475 (−2.1 %) with 16 replicas, 6.835 (+3.4 %) with
  64; a few per cent either way, so a fit against real data needs more sampling than a test of
  the gradients does.
* Log k and Adam(0.1, b1 = 0.5). Learning log k keeps k positive and makes the step relative;
  Adam makes it independent of the loss's scale (which changes with the steps and replicas).
  With the default b1 = 0.9 the momentum carries k past the true value and back for tens of
  epochs on this one-dimensional, nearly quadratic loss (after 40 epochs still 3 % off from 2×,
  6 % from 0.3×); b1 = 0.5 ends 40 epochs within 6e-6 from 2× and 5e-6 from 0.3×
  (`--start-factor`; measured).
* Starts and thermostat. Each replica runs NVE from a canonical (300 K) state: diffmd has no
  Langevin integrator yet, and OpenMM's makes the starts (Reference platform, seeded, so they
  are reproducible). Over 0.3 ps a thermostat would hardly act; NVE keeps every run a plain
  Hamiltonian trajectory, the one diffmd's VelocityVerlet reproduces step for step against
  OpenMM (tests/test_forcefield.py). The suggested start, random velocities on the minimised
  structure, is not a 300 K ensemble: kinetic energy flows into the potential and the runs
  settle at ~160 K (measured); from the Langevin states the runs average 297 K. 1 fs without
  constraints (diffmd has none for bonds yet): the total energy fluctuates by ~1 kJ/mol
  (~1 % of the kinetic energy) with no systematic drift over the run.
* The gradient check uses the training loss itself (0.3 ps is short enough for a central
  difference in float64 to be well-conditioned), values from the same compiled function that
  trains, at the start value, h = 1e-4·k.
* The structure: the 10 heavy atoms from ideal peptide geometry (Engh & Huber bond lengths and
  angles) at φ = −60°, ψ = −45°, ω = 180° with a small NeRF z-matrix builder, hydrogens by
  `openmm.app.Modeller.addHydrogens` (hydrogens.xml knows ACE and NME; its random starting
  offsets are seeded here so the structure is reproducible), then OpenMM's
  `LocalEnergyMinimizer` (Reference platform). In vacuum amber14 relaxes the αR start to the C7eq
  basin (φ ≈ −75°, ψ ≈ 54°); after 5 ps at 300 K most replicas are still in C7eq, a few in C5
  (φ ≈ −150°, ψ ≈ 150°).
"""

from __future__ import annotations

import functools
import random
import time

import jax

jax.config.update("jax_enable_x64", True)  # float64 throughout: the FD check and a 1-fs NVE run need it

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import diffmd as md  # noqa: E402
import diffmd.plot  # noqa: E402,F401  (headless matplotlib)
from diffmd.io import save_figure  # noqa: E402
from diffmd.space import dihedral_angle  # noqa: E402

from _cli import example_parser, write_summary  # noqa: E402

FORCE_FIELD = "amber14-all.xml"
TEMPERATURE = 300.0  # K
TIMESTEP = 0.001  # ps
N_STEPS, N_REPLICAS, LOG_EVERY = 300, 16, 2
N_EPOCHS, LEARNING_RATE, ADAM_B1 = 40, 0.1, 0.5
START_FACTOR = 2.0  # training starts at this multiple of the true k
PERIODICITY = 2  # the ψ term learned
QUICK = dict(n_steps=100, n_replicas=4, epochs=6, scan_points=3)

# ---------------------------------------------------------------------------------------------
# Building alanine dipeptide from internal coordinates
# ---------------------------------------------------------------------------------------------

# Ideal peptide geometry (Engh & Huber 1991): bond lengths (Å) and angles (degrees).
BOND = {"C-C": 1.52, "C=O": 1.23, "C-N": 1.33, "N-CA": 1.46, "CA-CB": 1.53}
ANGLE = {"CA-C-N": 116.2, "C-N-CA": 121.7, "N-CA-C": 111.2, "N-C-O": 122.7, "CA-C-O": 120.5, "N-C-CA-CB": 122.7,
         "C-CA-CB": 110.1}

# (residue, atom name, element symbol) of the heavy atoms, in the order they are placed.
HEAVY_ATOMS = [("ACE", "CH3", "C"), ("ACE", "C", "C"), ("ACE", "O", "O"),
               ("ALA", "N", "N"), ("ALA", "CA", "C"), ("ALA", "C", "C"), ("ALA", "O", "O"), ("ALA", "CB", "C"),
               ("NME", "N", "N"), ("NME", "C", "C")]
HEAVY_BONDS = [(0, 1), (1, 2), (1, 3), (3, 4), (4, 5), (4, 7), (5, 6), (5, 8), (8, 9)]


def place(a, b, c, bond: float, angle_deg: float, torsion_deg: float) -> np.ndarray:
    """NeRF: the atom d with |cd| = bond, angle b–c–d and dihedral a–b–c–d (IUPAC sign)."""
    angle, torsion = np.deg2rad(angle_deg), np.deg2rad(torsion_deg)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    local = bond * np.array([-np.cos(angle), np.sin(angle) * np.cos(torsion), np.sin(angle) * np.sin(torsion)])
    return c + local[0] * bc + local[1] * m + local[2] * n


def dihedral_deg(p0, p1, p2, p3) -> float:
    """Dihedral p0–p1–p2–p3 in degrees, (−180, 180], IUPAC sign (trans = 180)."""
    b1 = p2 - p1
    b1 = b1 / np.linalg.norm(b1)
    v = (p0 - p1) - np.dot(p0 - p1, b1) * b1
    w = (p3 - p2) - np.dot(p3 - p2, b1) * b1
    return float(np.degrees(np.arctan2(np.dot(np.cross(b1, v), w), np.dot(v, w))))


def heavy_atom_positions(phi: float = -60.0, psi: float = -45.0, omega: float = 180.0) -> np.ndarray:
    """(10, 3) positions (nm) of HEAVY_ATOMS with ideal geometry and backbone dihedrals φ, ψ (ALA)
    and ω (both peptide bonds), degrees. L-alanine (CB by the N–C–CA–CB dihedral)."""
    ch3 = np.zeros(3)
    c0 = np.array([BOND["C-C"], 0.0, 0.0])
    bend = np.deg2rad(180.0 - ANGLE["CA-C-N"])  # CH3–C–N angle in the x–y plane
    n = c0 + BOND["C-N"] * np.array([np.cos(bend), np.sin(bend), 0.0])
    ca = place(ch3, c0, n, BOND["N-CA"], ANGLE["C-N-CA"], omega)
    o0 = place(ca, n, c0, BOND["C=O"], ANGLE["N-C-O"], omega - 180.0)  # O cis to CA in a trans peptide
    c = place(c0, n, ca, BOND["C-C"], ANGLE["N-CA-C"], phi)
    cb = place(n, c, ca, BOND["CA-CB"], ANGLE["C-CA-CB"], ANGLE["N-C-CA-CB"])
    n2 = place(n, ca, c, BOND["C-N"], ANGLE["CA-C-N"], psi)
    o = place(n2, ca, c, BOND["C=O"], ANGLE["CA-C-O"], 180.0)  # in the peptide plane, opposite N+1
    c2 = place(ca, c, n2, BOND["N-CA"], ANGLE["C-N-CA"], omega)
    return np.array([ch3, c0, o0, n, ca, c, o, cb, n2, c2]) / 10.0  # Å -> nm


@functools.lru_cache(maxsize=None)
def openmm_forcefield():
    from openmm import app

    return app.ForceField(FORCE_FIELD)


def build_alanine_dipeptide(phi: float = -60.0, psi: float = -45.0, omega: float = 180.0, minimize: bool = True,
                            tolerance: float = 1.0):
    """Alanine dipeptide (ACE-ALA-NME) with hydrogens: (openmm.app.Topology, (22, 3) positions in nm).

    Heavy atoms from `heavy_atom_positions`, hydrogens from `Modeller.addHydrogens` with amber14,
    then (if `minimize`) OpenMM's LocalEnergyMinimizer on the Reference platform (vacuum, no
    cutoff, no constraints) to `tolerance` kJ/mol/nm.
    """
    import openmm
    from openmm import app, unit

    topology = app.Topology()
    chain = topology.addChain()
    residues, atoms = {}, []
    for residue, name, symbol in HEAVY_ATOMS:
        if residue not in residues:
            residues[residue] = topology.addResidue(residue, chain)
        atoms.append(topology.addAtom(name, app.Element.getBySymbol(symbol), residues[residue]))
    for i, j in HEAVY_BONDS:
        topology.addBond(atoms[i], atoms[j])
    modeller = app.Modeller(topology, heavy_atom_positions(phi, psi, omega) * unit.nanometer)
    saved = random.getstate()  # addHydrogens starts its hydrogens at random offsets: make them reproducible
    try:
        random.seed(0)
        modeller.addHydrogens(openmm_forcefield(), platform=openmm.Platform.getPlatformByName("Reference"))
    finally:
        random.setstate(saved)
    positions = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
    if minimize:
        context = _openmm_context(modeller.topology)
        context.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(context, tolerance, 0)
        positions = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    return modeller.topology, np.asarray(positions, dtype=np.float64)


def _openmm_context(topology, integrator=None):
    import openmm
    from openmm import app

    system = openmm_forcefield().createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=None)
    integrator = integrator or openmm.VerletIntegrator(TIMESTEP)
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))


def openmm_energy_and_forces(topology, positions):
    """OpenMM's (Reference platform) potential energy (kJ/mol) and forces (kJ/mol/nm)."""
    from openmm import unit

    context = _openmm_context(topology)
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def equilibrated_starts(topology, positions, n_replicas: int, seed: int = 0, equilibration_ps: float = 5.0):
    """(coordinates, velocities), each (R, N, 3) in nm and nm/ps: the ends of R independent OpenMM
    Langevin runs at TEMPERATURE (LangevinMiddleIntegrator, 1/ps, 1 fs, Reference platform), each
    `equilibration_ps` long from `positions`, seeded by (seed, replica); centre-of-mass velocity
    removed."""
    import openmm
    from openmm import unit

    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, 1.0, TIMESTEP)
    context = _openmm_context(topology, integrator)
    masses = np.array([context.getSystem().getParticleMass(i).value_in_unit(unit.dalton)
                       for i in range(topology.getNumAtoms())])
    coords, velocities = [], []
    for replica in range(n_replicas):
        replica_seed = 1 + replica + 100_000 * seed  # OpenMM takes 0 as "pick a seed"
        integrator.setRandomNumberSeed(replica_seed)
        context.reinitialize()  # the new seed takes effect
        context.setPositions(positions)
        context.setVelocitiesToTemperature(TEMPERATURE, replica_seed)
        integrator.step(int(round(equilibration_ps / TIMESTEP)))
        state = context.getState(getPositions=True, getVelocities=True)
        coords.append(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        v = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        velocities.append(v - masses @ v / masses.sum())
    return jnp.asarray(np.array(coords)), jnp.asarray(np.array(velocities))


def backbone_dihedrals(topology) -> dict:
    """Atom indices of ALA's φ (C−1, N, CA, C) and ψ (N, CA, C, N+1)."""
    index = {(a.residue.name, a.name): a.index for a in topology.atoms()}
    return {"phi": (index["ACE", "C"], index["ALA", "N"], index["ALA", "CA"], index["ALA", "C"]),
            "psi": (index["ALA", "N"], index["ALA", "CA"], index["ALA", "C"], index["NME", "N"])}


def torsion_entry(system, atoms, periodicity: int):
    """The PeriodicTorsionForce entry (index into ff.parameters["PeriodicTorsionForce"]) used by
    the System's torsion on `atoms` (either direction) with this periodicity, and the rows of the
    System's PeriodicTorsions that use the same entry."""
    position, _, entries = next(t for t in system.force_field.index.terms if t[1] == "PeriodicTorsionForce")
    term = system.bonded_inters[position]
    rows = term.indices.array
    same = np.all(rows == np.asarray(atoms), axis=1) | np.all(rows == np.asarray(atoms)[::-1], axis=1)
    hits = np.flatnonzero(same & (np.asarray(term.periodicity) == periodicity))
    if len(hits) != 1:
        raise ValueError(f"torsion_entry: {len(hits)} torsions on atoms {atoms} with periodicity {periodicity}")
    entry = int(entries.array[hits[0]])
    return entry, np.flatnonzero(entries.array == entry)


# ---------------------------------------------------------------------------------------------
# The learning problem
# ---------------------------------------------------------------------------------------------


class Problem:
    """The System, the entry learned, the replicas' starts, and one compiled
    function `value_and_grad(k, target) -> ((loss, (moments, dihedrals)), dloss/dk)`.

    The derivative is taken in forward mode (`jax.jvp`, `simulate(grad_mode="forward")`): one
    scalar parameter, so one tangent, carried along with the run in constant memory. Everything
    that runs a simulation goes through that one function, so the target, every epoch, the
    finite-difference check and the scan share a single compilation. `reverse_value_and_grad`
    (jax.grad through `grad_mode="reverse"`) is the cross-check, compiled only when called.
    """

    def __init__(self, n_steps: int = N_STEPS, n_replicas: int = N_REPLICAS, log_every: int = LOG_EVERY,
                 seed: int = 0):
        self.n_steps, self.n_replicas, self.log_every = n_steps, n_replicas, log_every
        t0 = time.perf_counter()
        self.ff = md.ForceField(FORCE_FIELD)
        self.topology, self.positions = build_alanine_dipeptide()
        system = self.ff.create_system((self.topology, self.positions))
        self.dihedral_atoms = backbone_dihedrals(self.topology)
        quads = jnp.asarray([self.dihedral_atoms["phi"], self.dihedral_atoms["psi"]])

        def dihedrals(state, system):  # (φ, ψ) in radians
            x = state.coords[quads]
            return dihedral_angle(x[:, 1] - x[:, 0], x[:, 2] - x[:, 1], x[:, 3] - x[:, 2])

        self.system = eqx.tree_at(lambda s: s.loggers, system, {"dihedrals": md.ObservableLogger(dihedrals, log_every)})
        self.entry, self.rows = torsion_entry(self.system, self.dihedral_atoms["psi"], PERIODICITY)
        self.label = self.ff.labels["PeriodicTorsionForce"][self.entry]
        self.parameters = self.system.force_field.parameters
        self.k_true = float(self.parameters["PeriodicTorsionForce"]["k"][self.entry])
        self.starts = equilibrated_starts(self.topology, self.positions, n_replicas, seed)
        self.build_s = time.perf_counter() - t0
        self.value_and_grad = jax.jit(self._forward)
        self.reverse_value_and_grad = jax.jit(jax.value_and_grad(functools.partial(self.loss, grad_mode="reverse"),
                                                                 has_aux=True))

    def _forward(self, k, target):
        loss, dloss, aux = jax.jvp(lambda x: self.loss(x, target), (k,), (jnp.ones_like(k),), has_aux=True)
        return (loss, aux), dloss

    def with_k(self, k):
        """The force-field parameters with the learned entry's k set to `k` (may be traced)."""
        p = dict(self.parameters)
        torsions = p["PeriodicTorsionForce"]
        p["PeriodicTorsionForce"] = dict(torsions, k=torsions["k"].at[self.entry].set(k))
        return p

    def dihedrals(self, k, starts, grad_mode="forward"):
        """(R, T, 2) φ, ψ (radians) along the replicas' runs from `starts` (coordinates and
        velocities, each (R, N, 3)) with torsion constant k."""
        system = self.system.with_parameters(self.with_k(k))

        def one(x, v):
            start = eqx.tree_at(lambda s: (s.coords, s.velocities), system, (x, v))
            trajectory = md.simulate(start, md.VelocityVerlet(TIMESTEP), self.n_steps, grad_mode=grad_mode)
            return trajectory.logs["dihedrals"]

        return jax.vmap(one)(*starts)

    def loss(self, k, target, starts=None, grad_mode="forward"):
        """Squared distance of the (φ, ψ) Fourier moments from `target`; aux (moments, dihedrals)."""
        angles = self.dihedrals(k, self.starts if starts is None else starts, grad_mode)
        m = moments(angles)
        return jnp.sum((m - target) ** 2), (m, angles)

    def target(self, starts=None):
        """The moments (and dihedrals) of the simulation at the force field's own k (from the
        training's starts, or from `starts`)."""
        if starts is None:
            (_, (m, angles)), _ = self.value_and_grad(jnp.float64(self.k_true), jnp.zeros(8))
        else:
            _, (m, angles) = jax.jit(self.loss)(jnp.float64(self.k_true), jnp.zeros(8), starts)
        return m, angles


@functools.lru_cache(maxsize=4)
def get_problem(n_steps: int = N_STEPS, n_replicas: int = N_REPLICAS, log_every: int = LOG_EVERY,
                seed: int = 0) -> Problem:
    """The Problem of this configuration, built (and its function compiled) once per process."""
    return Problem(n_steps, n_replicas, log_every, seed)


def moments(angles):
    """⟨cos nθ⟩, ⟨sin nθ⟩ for n = 1, 2 and θ = φ, ψ, averaged over replicas and time: (8,)."""
    n = jnp.array([1.0, 2.0])
    a = angles[..., :, None] * n  # (R, T, 2, 2): dihedral, n
    return jnp.concatenate([jnp.mean(jnp.cos(a), axis=(0, 1)).ravel(), jnp.mean(jnp.sin(a), axis=(0, 1)).ravel()])


def compare_with_openmm(problem: Problem) -> dict:
    """Potential energy and forces of the start structure, diffmd against OpenMM's Reference platform."""
    e_openmm, f_openmm = openmm_energy_and_forces(problem.topology, problem.positions)
    e_diffmd, f_diffmd = jax.jit(md.energy_and_forces)(problem.system)
    return {"energy_diffmd": float(e_diffmd), "energy_openmm": e_openmm,
            "max_force_diff": float(np.abs(np.asarray(f_diffmd) - f_openmm).max()),
            "max_force": float(np.abs(f_openmm).max())}


def gradient_check(problem: Problem, target, k: float, rel_h: float = 1e-4, reverse: bool = True) -> dict:
    """dloss/dk by forward mode (the one training uses) against a central finite difference,
    h = rel_h·k, the values from the same compiled function; and, if `reverse`, against jax.grad
    through a reverse-mode run."""
    value_and_grad = problem.value_and_grad
    (_, _), grad = value_and_grad(jnp.float64(k), target)
    h = rel_h * k
    plus = float(value_and_grad(jnp.float64(k + h), target)[0][0])
    minus = float(value_and_grad(jnp.float64(k - h), target)[0][0])
    central = (plus - minus) / (2 * h)
    grad = float(grad)
    result = {"k": k, "h": h, "forward": grad, "central_fd": central, "rel_diff_fd": abs(grad - central) / abs(central),
              "n_steps": problem.n_steps, "n_replicas": problem.n_replicas}
    line = (f"Gradient check at k = {k:.4f} kJ/mol ({problem.n_replicas} replicas × {problem.n_steps} steps, float64): "
            f"forward (jvp) {grad:.10e} | central FD (h = {h:.2e}) {central:.10e} | "
            f"rel. diff. {result['rel_diff_fd']:.1e}")
    if reverse:
        t0 = time.perf_counter()
        reverse_grad = float(problem.reverse_value_and_grad(jnp.float64(k), target)[1])
        result.update(reverse=reverse_grad, rel_diff_reverse=abs(grad - reverse_grad) / abs(reverse_grad),
                      reverse_s=time.perf_counter() - t0)
        line += f" | reverse (grad) {reverse_grad:.10e}, rel. diff. {result['rel_diff_reverse']:.1e}"
    print(line, flush=True)
    return result


def train(problem: Problem, target, k_start: float, n_epochs: int = N_EPOCHS, lr: float = LEARNING_RATE,
          b1: float = ADAM_B1):
    """Adam on log k; one printed line per epoch. Returns (learned k, history, first epoch's dihedrals)."""
    optimizer = optax.adam(lr, b1=b1)
    log_k = jnp.log(jnp.float64(k_start))
    state = optimizer.init(log_k)
    history, first_angles = [], None
    for epoch in range(1, n_epochs + 1):
        t0 = time.perf_counter()
        k = jnp.exp(log_k)
        (loss, (_, angles)), grad_k = problem.value_and_grad(k, target)
        if first_angles is None:
            first_angles = angles
        if not (np.isfinite(float(loss)) and np.isfinite(float(grad_k))):
            raise RuntimeError(f"epoch {epoch}: loss {float(loss)} or gradient {float(grad_k)} is not finite")
        updates, state = optimizer.update(grad_k * k, state, log_k)  # d loss / d log k = k · d loss / dk
        record = {"epoch": epoch, "k": float(k), "k_over_true": float(k) / problem.k_true, "loss": float(loss),
                  "grad_k": float(grad_k), "seconds": time.perf_counter() - t0}
        history.append(record)
        print(f"Epoch {epoch:>2} | k {record['k']:7.4f} kJ/mol ({record['k_over_true']:.4f}× true) | "
              f"Loss {record['loss']:.2e} | dLoss/dk {record['grad_k']: .2e}", flush=True)
        log_k = optax.apply_updates(log_k, updates)
    return float(jnp.exp(log_k)), history, first_angles


def scan_loss(problem: Problem, target, factors) -> dict:
    """Loss and dloss/dk at k = factor × the true k."""
    losses, grads = [], []
    for factor in factors:
        (loss, _), grad = problem.value_and_grad(jnp.float64(factor * problem.k_true), target)
        losses.append(float(loss))
        grads.append(float(grad))
    return {"factor": [float(f) for f in factors], "k": [float(f) * problem.k_true for f in factors],
            "loss": losses, "grad_k": grads}


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def plot_training(history, k_true: float, path):
    """Loss, k (with the true value as a line) and |k − k_true|/k_true against epoch."""
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    ks = np.array([h["k"] for h in history])
    fig, (ax_loss, ax_k, ax_err) = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    ax_loss.semilogy(epochs, [max(h["loss"], 1e-300) for h in history], marker="o", markersize=3)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (Fourier moments of φ, ψ)")
    ax_loss.set_title("Training loss")
    ax_k.plot(epochs, ks, marker="o", markersize=3, label="k (learned)")
    ax_k.axhline(k_true, color="purple", linestyle="--", label=f"true k = {k_true:.5f}")
    ax_k.set_xlabel("epoch")
    ax_k.set_ylabel("k of ψ (N–CX–C–N, n = 2), kJ/mol")
    ax_k.set_title("Torsion constant")
    ax_k.legend()
    ax_err.semilogy(epochs, np.maximum(np.abs(ks - k_true) / k_true, 1e-300), marker="o", markersize=3)
    ax_err.set_xlabel("epoch")
    ax_err.set_ylabel("|k − true k| / true k")
    ax_err.set_title("Relative error of k")
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def plot_dihedrals(runs: dict, dt_ps: float, path):
    """φ and ψ histograms (all replicas and times) and the replica-mean ψ(t), for each run
    (label → (R, T, 2) dihedrals in radians)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    styles = [dict(color="tab:orange"), dict(color="tab:blue"), dict(color="black", linestyle="--")]
    every = np.concatenate([np.degrees(np.asarray(a)).reshape(-1, 2) for a in runs.values()])
    bins = [np.linspace(every[:, c].min(), every[:, c].max(), 41) for c in range(2)]  # shared by the runs
    for (label, angles), style in zip(runs.items(), styles):
        deg = np.degrees(np.asarray(angles))
        for column, ax in enumerate(axes[:2]):
            ax.hist(deg[..., column].ravel(), bins=bins[column], histtype="step", density=True, label=label,
                    linewidth=1.5, **style)
        t = np.arange(deg.shape[1]) * dt_ps
        axes[2].plot(t, np.unwrap(deg[..., 1], period=360.0, axis=1).mean(axis=0), label=label, **style)
    for ax, name in zip(axes[:2], ("φ", "ψ")):
        ax.set_xlabel(f"{name} (degrees)")
        ax.set_ylabel("density")
        ax.set_title(f"{name} over all replicas and times")
    axes[2].set_xlabel("time (ps)")
    axes[2].set_ylabel("ψ, mean over replicas (degrees, unwrapped in time)")
    axes[2].set_title("ψ(t)")
    axes[0].legend(fontsize=8)
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def plot_landscape(scan: dict, k_true: float, k_learned: float, path):
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_grad) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    ax_loss.plot(scan["k"], scan["loss"], marker="o", markersize=3)
    ax_loss.set_ylabel("loss")
    ax_grad.plot(scan["k"], scan["grad_k"], marker="o", markersize=3)
    ax_grad.axhline(0.0, color="gray", linewidth=0.8)
    ax_grad.set_ylabel("dloss/dk (mol/kJ)")
    for ax in (ax_loss, ax_grad):
        ax.axvline(k_true, color="purple", linestyle="--", label="true k")
        ax.axvline(k_learned, color="tab:green", linestyle=":", label="learned k")
        ax.set_xlabel("k (kJ/mol)")
        ax.legend()
    ax_loss.set_title("Loss against the torsion constant")
    ax_grad.set_title("Its exact derivative (forward mode)")
    out = save_figure(fig, path)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    parser = example_parser(__doc__, default_out="results/fit_forcefield")
    parser.add_argument("--quick", action="store_true",
                        help=f"a short run for tests ({QUICK['n_replicas']} replicas × {QUICK['n_steps']} steps, "
                             f"{QUICK['epochs']} epochs)")
    parser.add_argument("--epochs", type=int, default=None, help=f"training epochs (default {N_EPOCHS})")
    parser.add_argument("--steps", type=int, default=None, help=f"steps of 1 fs per replica (default {N_STEPS})")
    parser.add_argument("--replicas", type=int, default=None, help=f"replicas (default {N_REPLICAS})")
    parser.add_argument("--lr", type=float, default=LEARNING_RATE, help=f"Adam learning rate on log k "
                                                                        f"(default {LEARNING_RATE})")
    parser.add_argument("--start-factor", type=float, default=START_FACTOR,
                        help=f"start from this multiple of the true k (default {START_FACTOR})")
    parser.add_argument("--scan-points", type=int, default=None, help="points of the loss scan (default 10)")
    parser.add_argument("--independent-target", action="store_true",
                        help="make the target from other starts (seed + 1000) than training's")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else dict(n_steps=N_STEPS, n_replicas=N_REPLICAS, epochs=N_EPOCHS, scan_points=10)
    n_steps = args.steps or defaults["n_steps"]
    n_replicas = args.replicas or defaults["n_replicas"]
    n_epochs = args.epochs if args.epochs is not None else defaults["epochs"]
    scan_points = args.scan_points if args.scan_points is not None else defaults["scan_points"]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    problem = get_problem(n_steps, n_replicas, LOG_EVERY, args.seed)
    phi0, psi0 = (dihedral_deg(*problem.positions[list(problem.dihedral_atoms[d])]) for d in ("phi", "psi"))
    agreement = compare_with_openmm(problem)
    print(f"Alanine dipeptide ({problem.system.n_atoms} atoms, {FORCE_FIELD}, vacuum), relaxed start φ {phi0:.1f}°, "
          f"ψ {psi0:.1f}°: energy diffmd {agreement['energy_diffmd']:.9f} | OpenMM {agreement['energy_openmm']:.9f} "
          f"kJ/mol; max |ΔF| {agreement['max_force_diff']:.1e} kJ/mol/nm", flush=True)
    print(f"Learning k of PeriodicTorsionForce entry {problem.entry} ({problem.label}; periodicity {PERIODICITY}), "
          f"used by {len(problem.rows)} torsion(s) of the System; true k = {problem.k_true:.5f} kJ/mol", flush=True)

    t0 = time.perf_counter()
    target_starts = (equilibrated_starts(problem.topology, problem.positions, n_replicas, args.seed + 1000)
                     if args.independent_target else None)
    target, target_angles = problem.target(target_starts)
    compile_s = time.perf_counter() - t0
    print(f"Target: {n_replicas} replicas × {n_steps} steps at the true k (compiled and run in {compile_s:.1f} s)",
          flush=True)

    k_start = args.start_factor * problem.k_true
    check = gradient_check(problem, target, k_start, reverse=not args.quick)

    print(f"Training k from {k_start:.4f} kJ/mol ({args.start_factor:g}× true), Adam(lr {args.lr:g}, b1 {ADAM_B1}) "
          f"on log k, {n_epochs} epochs", flush=True)
    t0 = time.perf_counter()
    k_learned, history, start_angles = train(problem, target, k_start, n_epochs, args.lr)
    train_s = time.perf_counter() - t0
    (final_loss, (_, learned_angles)), final_grad = problem.value_and_grad(jnp.float64(k_learned), target)
    if start_angles is None:  # no epochs
        start_angles = problem.value_and_grad(jnp.float64(k_start), target)[0][1][1]
    rel_error = abs(k_learned - problem.k_true) / problem.k_true
    print(f"Learned k {k_learned:.6f} kJ/mol | true {problem.k_true:.6f} | start {k_start:.4f} | rel. error "
          f"{rel_error:.1e} | loss {float(final_loss):.2e} ({train_s:.1f} s)", flush=True)

    t0 = time.perf_counter()
    scan = scan_loss(problem, target, np.linspace(0.25, 2.5, scan_points)) if scan_points else None
    scan_s = time.perf_counter() - t0

    dt_ps = LOG_EVERY * TIMESTEP
    plots = [
        plot_training(history, problem.k_true, out / "training.png"),
        plot_dihedrals({f"start, k = {k_start:.2f}": start_angles, f"learned, k = {k_learned:.3f}": learned_angles,
                        f"target, k = {problem.k_true:.3f}": target_angles}, dt_ps, out / "dihedrals.png"),
    ]
    if scan is not None:
        plots.append(plot_landscape(scan, problem.k_true, k_learned, out / "loss_landscape.png"))

    summary = {
        "example": "fit_forcefield",
        "seed": args.seed,
        "quick": args.quick,
        "force_field": FORCE_FIELD,
        "parameter": {"section": "PeriodicTorsionForce", "field": "k", "entry": problem.entry,
                      "label": problem.label, "periodicity": PERIODICITY, "dihedral": "psi",
                      "rows_using_it": problem.rows, "units": "kJ/mol"},
        "k_true": problem.k_true,
        "k_start": k_start,
        "k_learned": k_learned,
        "rel_error": rel_error,
        "final_loss": float(final_loss),
        "final_grad_k": float(final_grad),
        "n_epochs": n_epochs,
        "learning_rate": args.lr,
        "adam_b1": ADAM_B1,
        "independent_target": args.independent_target,
        "gradient_check": check,
        "start_structure": {"phi_deg": phi0, "psi_deg": psi0, **agreement},
        "target_moments": target,
        "epochs": history,
        "scan": scan,
        "constants": {"temperature_K": TEMPERATURE, "timestep_ps": TIMESTEP, "n_steps": n_steps,
                      "n_replicas": n_replicas, "log_every": LOG_EVERY, "n_atoms": problem.system.n_atoms},
        "runtime_s": {"build": problem.build_s, "compile_and_target": compile_s, "train": train_s,
                      "scan": scan_s, "total": time.perf_counter() - start},
        "plots": [p.name for p in plots],
    }
    write_summary(out, summary)
    print(f"Wrote {out / 'summary.json'} and {', '.join(p.name for p in plots)} "
          f"({summary['runtime_s']['total']:.1f} s)", flush=True)
    return summary


if __name__ == "__main__":
    main()
