"""diffmd against OpenMM (Reference platform, double precision) on small systems built through
the openmm Python API: nonbonded LJ + Coulomb (no cutoff; periodic reaction field with and
without the switching function), exceptions (scaled 1-4 pairs, exclusions), and the bonded
forces HarmonicBond, HarmonicAngle, PeriodicTorsion and RBTorsion; exceptions with their own
parameters (NonbondedExceptions against addException)."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

import diffmd as md

openmm = pytest.importorskip("openmm")
unit = pytest.importorskip("openmm.unit")

E_RTOL = 1e-8  # relative, energies
F_ATOL = 1e-6  # kJ/mol/nm, forces

jit_ef = jax.jit(md.energy_and_forces)


# ---------------------------------------------------------------------------------------------
# helpers


def openmm_energy_forces(system, coords, box=None):
    """Potential energy (kJ/mol) and forces (kJ/mol/nm) from OpenMM's Reference platform."""
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in np.diag(box)))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(unit.Quantity([openmm.Vec3(*x) for x in coords], unit.nanometer))
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    return energy, np.asarray(forces)


def new_openmm_system(masses):
    system = openmm.System()
    for m in masses:
        system.addParticle(float(m))
    return system


def assert_agree(md_system, omm_system, box=None):
    e_ref, f_ref = openmm_energy_forces(omm_system, np.asarray(md_system.coords), box)
    e, f = jit_ef(md_system)
    assert abs(e_ref) > 1.0 and np.abs(f_ref).max() > 1.0  # a non-trivial comparison
    assert float(e) == pytest.approx(e_ref, rel=E_RTOL)
    np.testing.assert_allclose(np.asarray(f), f_ref, rtol=0, atol=F_ATOL)


def random_coords(n, seed, box, min_dist=0.3):
    rng = np.random.default_rng(seed)
    box = np.asarray(box, float)
    points = []
    while len(points) < n:
        p = rng.uniform(0.0, 1.0, 3) * box
        if all(np.linalg.norm((d := p - q) - box * np.round(d / box)) > min_dist for q in points):
            points.append(p)
    return np.array(points)


def random_parameters(n, seed):
    rng = np.random.default_rng(seed)
    mass = rng.uniform(1.0, 20.0, n)
    charge = rng.uniform(-0.8, 0.8, n)
    sigma = rng.uniform(0.25, 0.35, n)
    epsilon = rng.uniform(0.2, 1.0, n)
    return mass, charge, sigma, epsilon


def openmm_coulomb_constant():
    """OpenMM's 1/(4π ε0), read off two unit charges 1 nm apart."""
    system = new_openmm_system([1.0, 1.0])
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    for _ in range(2):
        nb.addParticle(1.0, 0.3, 0.0)
    system.addForce(nb)
    return openmm_energy_forces(system, [[0.0, 0, 0], [1.0, 0, 0]])[0]


K_OPENMM = openmm_coulomb_constant()


def test_default_coulomb_constant_matches_openmm():
    assert md.Coulomb().coulomb_const == pytest.approx(K_OPENMM, rel=1e-13)
    assert md.OPENMM_UNITS.coulomb == pytest.approx(K_OPENMM, rel=1e-13)


def nonbonded_pair(n, seed, method, exclusions=(), pairs_14=(), w_lj=0.5, w_c=1 / 1.2, cutoff=1.0,
                   switch=None, dielectric=78.3):
    """An OpenMM System with one NonbondedForce, and the parameters used."""
    mass, charge, sigma, epsilon = random_parameters(n, seed)
    system = new_openmm_system(mass)
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(method)
    for q, s, e in zip(charge, sigma, epsilon):
        nb.addParticle(q, s, e)
    if method != openmm.NonbondedForce.NoCutoff:
        nb.setCutoffDistance(cutoff)
        nb.setReactionFieldDielectric(dielectric)
        nb.setUseDispersionCorrection(False)
        # diffmd measures every distance, 1-4 pairs included, by the minimum image
        nb.setExceptionsUsePeriodicBoundaryConditions(True)
        if switch is not None:
            nb.setUseSwitchingFunction(True)
            nb.setSwitchingDistance(switch)
    for i, j in exclusions:
        nb.addException(i, j, 0.0, 1.0, 0.0)
    for i, j in pairs_14:
        nb.addException(i, j, charge[i] * charge[j] * w_c, 0.5 * (sigma[i] + sigma[j]),
                        math.sqrt(epsilon[i] * epsilon[j]) * w_lj)
    system.addForce(nb)
    atoms = md.Atoms(mass, charge=charge, sigma=sigma, epsilon=epsilon)
    return system, atoms


# ---------------------------------------------------------------------------------------------
# nonbonded


def test_lj_coulomb_no_cutoff():
    n = 8
    coords = random_coords(n, 1, [2.0, 2.0, 2.0])
    omm, atoms = nonbonded_pair(n, 1, openmm.NonbondedForce.NoCutoff)
    inters = [md.LennardJones(), md.Coulomb(coulomb_const=K_OPENMM)]
    assert_agree(md.System(atoms, coords, md.NoBoundary(3), pairwise_inters=inters), omm)


BOX = np.array([2.4, 2.5, 2.6])


@pytest.mark.parametrize("switch", [0.8, None])
def test_reaction_field_cutoff_periodic(switch):
    """OpenMM's CutoffPeriodic: reaction-field Coulomb; LJ plain-truncated, or switched."""
    n, rc, eps_s = 14, 1.0, 60.0
    coords = random_coords(n, 2, BOX)
    omm, atoms = nonbonded_pair(n, 2, openmm.NonbondedForce.CutoffPeriodic, cutoff=rc, switch=switch,
                                dielectric=eps_s)
    cutoff = md.PlainCutoff(rc) if switch is None else md.SwitchedCutoff(rc, switch)
    inters = [md.LennardJones(cutoff=cutoff),
              md.CoulombReactionField(distance=rc, solvent_dielectric=eps_s, coulomb_const=K_OPENMM)]
    system = md.System(atoms, coords, md.RectangularBoundary(BOX), pairwise_inters=inters)
    d = coords[:, None] - coords[None]
    r = np.linalg.norm(d - BOX * np.round(d / BOX), axis=-1)[np.triu_indices(n, 1)]
    assert (r < rc).sum() >= 5 and (r > rc).sum() >= 5  # the cutoff matters
    if switch is not None:
        assert ((r > switch) & (r < rc)).sum() >= 2  # and so does the switch
    assert_agree(system, omm, BOX)


EXCLUSIONS = [(0, 1), (1, 2), (0, 2), (2, 3), (4, 5)]
PAIRS_14 = [(0, 3), (1, 4), (3, 6)]


def test_exceptions_no_cutoff():
    n, w_lj, w_c = 8, 0.5, 1 / 1.2
    coords = random_coords(n, 3, [2.0, 2.0, 2.0])
    omm, atoms = nonbonded_pair(n, 3, openmm.NonbondedForce.NoCutoff, EXCLUSIONS, PAIRS_14, w_lj, w_c)
    inters = [md.LennardJones(weight_14=w_lj), md.Coulomb(coulomb_const=K_OPENMM, weight_14=w_c)]
    system = md.System(atoms, coords, md.NoBoundary(3), pairwise_inters=inters, exclusions=EXCLUSIONS,
                       pairs_14=PAIRS_14)
    assert_agree(system, omm)
    # and the exceptions do matter
    plain = md.System(atoms, coords, md.NoBoundary(3), pairwise_inters=inters)
    e_ref, _ = openmm_energy_forces(omm, coords)
    assert abs(float(jit_ef(plain)[0]) - e_ref) > 1.0


def test_exceptions_with_reaction_field():
    """With CutoffPeriodic, OpenMM computes exceptions as plain Coulomb + LJ without cutoff (here
    some 1-4 pairs lie beyond the cutoff and across the box), and excluded pairs get no
    reaction-field term."""
    n, rc, w_lj, w_c = 10, 1.0, 0.5, 1 / 1.2
    coords = random_coords(n, 4, BOX)
    omm, atoms = nonbonded_pair(n, 4, openmm.NonbondedForce.CutoffPeriodic, EXCLUSIONS, PAIRS_14, w_lj, w_c,
                                cutoff=rc, switch=0.85)
    inters = [md.LennardJones(cutoff=md.SwitchedCutoff(rc, 0.85), weight_14=w_lj),
              md.CoulombReactionField(distance=rc, coulomb_const=K_OPENMM, weight_14=w_c)]
    system = md.System(atoms, coords, md.RectangularBoundary(BOX), pairwise_inters=inters, exclusions=EXCLUSIONS,
                       pairs_14=PAIRS_14)
    raw = np.array([coords[j] - coords[i] for i, j in PAIRS_14])
    image = raw - BOX * np.round(raw / BOX)
    assert (np.linalg.norm(image, axis=1) > rc).any()  # no cutoff for 1-4 pairs
    assert not np.allclose(raw, image)  # minimum image for 1-4 pairs
    assert_agree(system, omm, BOX)


# ---------------------------------------------------------------------------------------------
# NonbondedExceptions: exceptions with their own parameters (addException)

EXC_E_RTOL = 1e-9  # relative, energies
EXC_F_RTOL = 1e-7  # of the largest force component
OWN_EXCEPTIONS = [(0, 3), (1, 4), (3, 6), (2, 8), (5, 9)]


def exceptions_pair(n, seed, method, cutoff=1.0, dielectric=78.3):
    """OpenMM: a NonbondedForce with exceptions carrying their own q_ij, σ_ij, ε_ij, plus plain
    exclusions (zero exceptions); diffmd: the ordinary terms, NonbondedExceptions with the same
    rows and the exclusions. Returns (OpenMM System, atoms, exceptions term)."""
    mass, charge, sigma, epsilon = random_parameters(n, seed)
    rng = np.random.default_rng(seed + 1000)
    qq = rng.uniform(-0.6, 0.6, len(OWN_EXCEPTIONS))
    sigma_e = rng.uniform(0.2, 0.4, len(OWN_EXCEPTIONS))
    epsilon_e = rng.uniform(0.1, 1.2, len(OWN_EXCEPTIONS))
    system = new_openmm_system(mass)
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(method)
    for q, s, e in zip(charge, sigma, epsilon):
        nb.addParticle(q, s, e)
    if method != openmm.NonbondedForce.NoCutoff:
        nb.setCutoffDistance(cutoff)
        nb.setReactionFieldDielectric(dielectric)
        nb.setUseDispersionCorrection(False)
        nb.setExceptionsUsePeriodicBoundaryConditions(True)
    for i, j in EXCLUSIONS:
        nb.addException(i, j, 0.0, 1.0, 0.0)
    for (i, j), q, s, e in zip(OWN_EXCEPTIONS, qq, sigma_e, epsilon_e):
        nb.addException(i, j, q, s, e)
    system.addForce(nb)
    atoms = md.Atoms(mass, charge=charge, sigma=sigma, epsilon=epsilon)
    exceptions = md.NonbondedExceptions(indices=OWN_EXCEPTIONS, charge_prod=qq, sigma=sigma_e, epsilon=epsilon_e,
                                        coulomb_const=K_OPENMM)
    return system, atoms, exceptions


def assert_agree_exceptions(md_system, omm_system, box=None):
    e_ref, f_ref = openmm_energy_forces(omm_system, np.asarray(md_system.coords), box)
    e, f = jit_ef(md_system)
    scale = np.abs(f_ref).max()
    assert abs(e_ref) > 1.0 and scale > 1.0  # a non-trivial comparison
    assert float(e) == pytest.approx(e_ref, rel=EXC_E_RTOL)
    np.testing.assert_allclose(np.asarray(f), f_ref, rtol=0, atol=EXC_F_RTOL * scale)
    return e_ref


def test_nonbonded_exceptions_no_cutoff():
    n = 10
    coords = random_coords(n, 7, [2.0, 2.0, 2.0])
    omm, atoms, exceptions = exceptions_pair(n, 7, openmm.NonbondedForce.NoCutoff)
    inters = [md.LennardJones(), md.Coulomb(coulomb_const=K_OPENMM)]
    system = md.System(atoms, coords, md.NoBoundary(3), pairwise_inters=inters, bonded_inters=[exceptions],
                       exclusions=EXCLUSIONS)
    e_ref = assert_agree_exceptions(system, omm)
    # the exceptions' own parameters matter: the same pairs as plain exclusions differ
    excluded_only = md.System(atoms, coords, md.NoBoundary(3), pairwise_inters=inters,
                              exclusions=EXCLUSIONS + OWN_EXCEPTIONS)
    assert abs(float(jit_ef(excluded_only)[0]) - e_ref) > 1.0


def test_nonbonded_exceptions_cutoff_periodic():
    """CutoffPeriodic: reaction field for ordinary pairs; exceptions are plain Coulomb + LJ with
    no cutoff, measured by the minimum image (some beyond the cutoff and across the box)."""
    n, rc, eps_s = 12, 1.0, 60.0
    coords = random_coords(n, 8, BOX)
    omm, atoms, exceptions = exceptions_pair(n, 8, openmm.NonbondedForce.CutoffPeriodic, cutoff=rc, dielectric=eps_s)
    inters = [md.LennardJones(cutoff=md.PlainCutoff(rc)),
              md.CoulombReactionField(distance=rc, solvent_dielectric=eps_s, coulomb_const=K_OPENMM)]
    system = md.System(atoms, coords, md.RectangularBoundary(BOX), pairwise_inters=inters,
                       bonded_inters=[exceptions], exclusions=EXCLUSIONS)
    raw = np.array([coords[j] - coords[i] for i, j in OWN_EXCEPTIONS])
    image = raw - BOX * np.round(raw / BOX)
    assert (np.linalg.norm(image, axis=1) > rc).any()  # no cutoff for exceptions
    assert not np.allclose(raw, image)  # minimum image for exceptions
    assert_agree_exceptions(system, omm, BOX)


# ---------------------------------------------------------------------------------------------
# bonded


def chain(n, seed, start):
    """A random zig-zag chain (bond ~0.15 nm, angles 80°–150°)."""
    rng = np.random.default_rng(seed)
    x = [np.asarray(start, float)]
    while len(x) < n:
        step = rng.normal(size=3)
        step *= rng.uniform(0.13, 0.17) / np.linalg.norm(step)
        if len(x) >= 2:
            prev = x[-1] - x[-2]
            cos = np.dot(step, -prev) / np.linalg.norm(step) / np.linalg.norm(prev)
            if not -0.85 < cos < 0.15:
                continue
        x.append(x[-1] + step)
    return np.array(x)


N_CHAIN = 7
BONDS = [(i, i + 1) for i in range(N_CHAIN - 1)] + [(0, 3)]
ANGLES = [(i, i + 1, i + 2) for i in range(N_CHAIN - 2)]
TORSIONS = [(i, i + 1, i + 2, i + 3) for i in range(N_CHAIN - 3)]


def bonded_systems(seed, periodic):
    rng = np.random.default_rng(seed)
    mass = rng.uniform(1.0, 16.0, N_CHAIN)
    omm = new_openmm_system(mass)

    bond_r0, bond_k = rng.uniform(0.12, 0.18, len(BONDS)), rng.uniform(1e5, 3e5, len(BONDS))
    bonds = openmm.HarmonicBondForce()
    for (i, j), r0, k in zip(BONDS, bond_r0, bond_k):
        bonds.addBond(i, j, r0, k)

    theta0, k_theta = rng.uniform(1.8, 2.1, len(ANGLES)), rng.uniform(300.0, 600.0, len(ANGLES))
    angles = openmm.HarmonicAngleForce()
    for (i, j, k), t0, kt in zip(ANGLES, theta0, k_theta):
        angles.addAngle(i, j, k, t0, kt)

    # two periodicities on the first dihedral (two rows), as force fields do
    rows = TORSIONS + [TORSIONS[0]]
    periodicity = [1, 2, 3, 4, 2][: len(rows)]
    phase, k_phi = rng.uniform(-math.pi, math.pi, len(rows)), rng.uniform(1.0, 10.0, len(rows))
    periodic_torsions = openmm.PeriodicTorsionForce()
    for (i, j, k, l), n, p, kp in zip(rows, periodicity, phase, k_phi):
        periodic_torsions.addTorsion(i, j, k, l, n, p, kp)

    rb_coefficients = rng.uniform(-5.0, 5.0, (2, 6))
    rb_rows = [TORSIONS[1], TORSIONS[3]]
    rb = openmm.RBTorsionForce()
    for (i, j, k, l), c in zip(rb_rows, rb_coefficients):
        rb.addTorsion(i, j, k, l, *c)

    forces = {"bonds": bonds, "angles": angles, "periodic": periodic_torsions, "rb": rb}
    for force in forces.values():
        force.setUsesPeriodicBoundaryConditions(periodic)
    ours = {
        "bonds": md.HarmonicBonds(indices=BONDS, r0=bond_r0, k=bond_k),
        "angles": md.HarmonicAngles(indices=ANGLES, theta0=theta0, k=k_theta),
        "periodic": md.PeriodicTorsions(indices=rows, periodicity=periodicity, phase=phase, k=k_phi),
        "rb": md.RBTorsions(indices=rb_rows, coefficients=rb_coefficients),
    }
    return omm, forces, ours, md.Atoms(mass)


@pytest.mark.parametrize("kind", ["bonds", "angles", "periodic", "rb"])
def test_bonded_force_open_space(kind):
    omm, forces, ours, atoms = bonded_systems(5, periodic=False)
    omm.addForce(forces[kind])
    coords = chain(N_CHAIN, 5, [0.5, 0.5, 0.5])
    assert_agree(md.System(atoms, coords, md.NoBoundary(3), bonded_inters=[ours[kind]]), omm)


def test_all_bonded_forces_periodic_across_the_boundary():
    box = np.array([1.5, 1.6, 1.7])
    omm, forces, ours, atoms = bonded_systems(6, periodic=True)
    for force in forces.values():
        omm.addForce(force)
    coords = chain(N_CHAIN, 6, box - 0.1)
    wrapped = np.mod(coords, box)
    assert not np.allclose(wrapped, coords)  # the molecule straddles the box
    system = md.System(atoms, wrapped, md.RectangularBoundary(box), bonded_inters=list(ours.values()))
    assert_agree(system, omm, box)
