"""Every built-in interaction: force = −∇E, energies at hand-computed points, cutoffs, force
cap, NaN safety of gradients, one-term constructors, exclusions / 1-4 pairs, user-defined
interactions, float32 (conftest enables float64 globally), atom types, user per-atom
parameters, NonbondedExceptions, global terms, FixedAtoms and degrees of freedom."""

from __future__ import annotations

import math
import zlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md
from diffmd.forces.cutoffs import Cutoff

BOX = 2.4  # periodic box side (nm); half of it is at least every cutoff below
RC = 1.0  # cutoff distance
RS = 0.8  # switching distance
K_COULOMB = 138.93545764438198  # kJ/mol·nm/e², OpenMM's 1/(4π ε0) (ONE_4PI_EPS0)


# ---------------------------------------------------------------------------------------------
# helpers

# Compiled once per system structure (eager dispatch of the many small ops is far slower).
jit_energy = jax.jit(md.potential_energy)
jit_ef = jax.jit(md.energy_and_forces)
jit_forces = jax.jit(md.forces)


def min_image(d, box):
    return d if box is None else d - box * np.round(d / box)


def random_coords(n, dims, seed, box=BOX, min_dist=0.28, periodic=True):
    """n points in [0, box)^dims, pairwise (minimum-image) distance above min_dist."""
    rng = np.random.default_rng(seed)
    points = []
    while len(points) < n:
        p = rng.uniform(0.0, box, dims)
        if all(np.linalg.norm(min_image(p - q, box if periodic else None)) > min_dist for q in points):
            points.append(p)
    return np.array(points)


def random_atoms(n, seed, dtype=np.float64, zero=()):
    """Atoms with distinct σ, ε, charges; atoms listed in `zero` get σ = ε = 0 (as the
    reference's examples for atoms without LJ)."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.25, 0.35, n)
    epsilon = rng.uniform(0.5, 1.5, n)
    charge = rng.uniform(-1.0, 1.0, n)
    for i in zero:
        sigma[i] = epsilon[i] = 0.0
    mass = rng.uniform(10.0, 20.0, n)
    mass, charge, sigma, epsilon = (np.asarray(v, dtype) for v in (mass, charge, sigma, epsilon))
    return md.Atoms(mass, charge=charge, sigma=sigma, epsilon=epsilon)


def boundary_for(kind, dims, dtype=np.float64):
    return md.RectangularBoundary(np.full(dims, BOX, dtype)) if kind == "pbc" else md.NoBoundary(dims)


@jax.jit
def _forces_and_displaced_energies(system, displaced, neighbors):
    forces = md.forces(system, None, neighbors)
    return forces, jax.vmap(lambda c: md.potential_energy(system, c, neighbors))(displaced)


def assert_forces_match_fd(system, rtol=1e-6, neighbors=None, h=1e-5):
    """forces(system) against −∇E by central finite differences of `potential_energy`
    (all 2·N·D displacements in one vmap, compiled together with the forces)."""
    c0 = np.asarray(system.coords, np.float64)
    n, d = c0.shape
    steps = (np.eye(n * d) * h).reshape(n * d, n, d)
    displaced = jnp.asarray(np.concatenate([c0 + steps, c0 - steps]), system.coords.dtype)
    forces, energies = _forces_and_displaced_energies(system, displaced, neighbors)
    energies = np.asarray(energies, np.float64)
    expected = -(energies[: n * d] - energies[n * d :]).reshape(n, d) / (2 * h)
    scale = np.abs(expected).max()
    assert scale > 1e-3, "test system exerts no force: the comparison would be vacuous"
    np.testing.assert_allclose(np.asarray(forces), expected, rtol=rtol, atol=rtol * scale)


def two_atoms(r, dims=3, sigma=(0.3, 0.4), epsilon=(1.0, 0.5), charge=(0.5, -0.8), boundary="pbc"):
    """Two atoms at distance r along x (across the periodic boundary in the pbc case)."""
    atoms = md.Atoms(np.array([12.0, 14.0]), charge=np.array(charge), sigma=np.array(sigma), epsilon=np.array(epsilon))
    a = np.zeros(dims)
    a[0] = 0.1
    b = a.copy()
    b[0] -= r  # negative x: wraps through the box for pbc
    if boundary == "none":
        b[0] = a[0] + r
    return atoms, np.stack([a, b])


def energy_and_force_2(inter, r, dims=3, **kw):
    """(E, magnitude of the force on atom 1 along the pair axis, positive = repulsive)."""
    atoms, coords = two_atoms(r, dims, **kw)
    boundary = md.RectangularBoundary(np.full(dims, BOX)) if kw.get("boundary", "pbc") == "pbc" else md.NoBoundary(dims)
    system = md.System(atoms, coords, boundary, pairwise_inters=[inter])
    e, f = jit_ef(system)
    axis = md.vector(coords[0], coords[1], boundary)
    axis = axis / np.linalg.norm(axis)
    np.testing.assert_allclose(np.asarray(f[0]), -np.asarray(f[1]), atol=1e-12)  # Newton's third law
    return float(e), float(np.dot(np.asarray(f[1]), np.asarray(axis)))


def lj(r, sigma, epsilon):
    s6 = (sigma / r) ** 6
    return 4 * epsilon * (s6 * s6 - s6)


def lj_dvdr(r, sigma, epsilon):
    s6 = (sigma / r) ** 6
    return -24 * epsilon * (2 * s6 * s6 - s6) / r


def mixed(atoms_np, i, j, mixing="lorentz-berthelot"):
    s, e = atoms_np["sigma"], atoms_np["epsilon"]
    sig = 0.5 * (s[i] + s[j]) if mixing == "lorentz-berthelot" else math.sqrt(s[i] * s[j])
    return sig, math.sqrt(e[i] * e[j])


def as_np(atoms):
    return {k: np.asarray(getattr(atoms, k)) for k in ("mass", "charge", "sigma", "epsilon")}


def all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))


def tree_dot(a, b):
    return sum(jnp.sum(x * y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def random_tangent(tree, seed):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return treedef.unflatten([jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])


@jax.jit
def _value_grad_jvp(system, neighbors, tangent):
    def energy_of(atoms, coords):
        return md.potential_energy(eqx.tree_at(lambda s: s.atoms, system, atoms), coords, neighbors)

    args = (system.atoms, system.coords)
    value, grads = jax.value_and_grad(energy_of, argnums=(0, 1))(*args)
    return value, grads, jax.jvp(energy_of, args, tangent)[1]


def check_grad_finite_and_jvp(system, neighbors=None, seed=0):
    """Reverse-mode gradients w.r.t. the whole Atoms and the coordinates are finite and agree
    with forward mode (jvp) along a random direction. Returns (energy, gradients)."""
    tangent = random_tangent((system.atoms, system.coords), seed)
    value, grads, jvp = _value_grad_jvp(system, neighbors, tangent)
    assert all_finite(grads), grads
    assert np.isfinite(float(jvp))
    np.testing.assert_allclose(float(jvp), float(tree_dot(grads, tangent)), rtol=1e-9, atol=1e-9)
    return value, grads


# ---------------------------------------------------------------------------------------------
# pairwise interactions: force = −∇E in every geometry

CUTOFFS = {
    "nocut": md.NoCutoff(),
    "plain": md.PlainCutoff(RC),
    "shiftpot": md.ShiftedPotentialCutoff(RC),
    "shiftforce": md.ShiftedForceCutoff(RC),
    "switched": md.SwitchedCutoff(RC, RS),
}

PAIRWISE = {
    **{
        f"lj-{name}-{mixing[:3]}": md.LennardJones(cutoff=cutoff, mixing=mixing)
        for name, cutoff in CUTOFFS.items()
        for mixing in ("lorentz-berthelot", "geometric")
    },
    "lj-capped-shiftforce": md.LennardJones(cutoff=md.ShiftedForceCutoff(RC), force_cap=300.0),
    "lj-capped-nocut-geo": md.LennardJones(mixing="geometric", force_cap=300.0),
    "softsphere-shiftpot": md.SoftSphere(cutoff=md.ShiftedPotentialCutoff(RC)),
    "softsphere-geo": md.SoftSphere(mixing="geometric"),
    "mie-shiftforce": md.Mie(n=10.0, m=5.5, cutoff=md.ShiftedForceCutoff(RC)),
    "mie-nocut-geo": md.Mie(n=9.0, m=6.0, mixing="geometric"),
    "coulomb": md.Coulomb(),
    "coulomb-shiftforce": md.Coulomb(cutoff=md.ShiftedForceCutoff(RC)),
    "reaction-field": md.CoulombReactionField(distance=RC, solvent_dielectric=78.3),
}


# every interaction in a periodic 3-D box; a representative subset also in open space and in 2-D
PAIRWISE_SUBSET = ["lj-switched-geo", "lj-capped-shiftforce", "mie-shiftforce", "reaction-field"]
PAIRWISE_CASES = [(name, "pbc3") for name in PAIRWISE] + [
    (name, geometry) for geometry in ("open3", "pbc2") for name in PAIRWISE_SUBSET]


@pytest.mark.parametrize(("name", "geometry"), PAIRWISE_CASES)
def test_pairwise_forces_are_minus_gradient(name, geometry):
    kind, dims = geometry[:-1], int(geometry[-1])
    n = 7 if dims == 3 else 6
    seed = zlib.crc32(f"{name}{geometry}".encode()) % 1000
    for seed in range(seed, seed + 100):  # pairs close, inside the switching range, beyond rc
        coords = random_coords(n, dims, seed, box=BOX if kind == "pbc" else 1.6, periodic=kind == "pbc")
        d = min_image(coords[:, None] - coords[None], BOX if kind == "pbc" else None)
        r = np.linalg.norm(d, axis=-1)[np.triu_indices(n, 1)]
        if (r < 0.6).any() and ((r > RS) & (r < RC)).any() and (r > RC).any():
            break
    else:
        raise AssertionError("no suitable configuration")
    system = md.System(random_atoms(n, seed), coords, boundary_for(kind, dims), pairwise_inters=[PAIRWISE[name]])
    assert_forces_match_fd(system)


# ---------------------------------------------------------------------------------------------
# pairwise interactions: values at hand-computed points


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mixing", ["lorentz-berthelot", "geometric"])
def test_lj_minimum_and_zero_crossing(mixing, dims):
    sigma = 0.35 if mixing == "lorentz-berthelot" else math.sqrt(0.3 * 0.4)
    epsilon = math.sqrt(0.5)
    inter = md.LennardJones(mixing=mixing)
    e, f = energy_and_force_2(inter, 2 ** (1 / 6) * sigma, dims)
    assert e == pytest.approx(-epsilon, rel=1e-12)
    assert abs(f) < 1e-9
    e, f = energy_and_force_2(inter, sigma, dims)
    assert abs(e) < 1e-12
    assert f == pytest.approx(24 * epsilon / sigma, rel=1e-12)  # −dV/dr at r = σ


def test_lj_and_mie_with_open_boundary_and_mie_minimum():
    sigma, epsilon = 0.35, math.sqrt(0.5)
    r = 0.41
    e_lj, f_lj = energy_and_force_2(md.LennardJones(), r, boundary="none")
    assert e_lj == pytest.approx(lj(r, sigma, epsilon), rel=1e-12)
    assert f_lj == pytest.approx(-lj_dvdr(r, sigma, epsilon), rel=1e-12)
    e_mie, f_mie = energy_and_force_2(md.Mie(n=12.0, m=6.0), r, boundary="none")
    assert e_mie == pytest.approx(e_lj, rel=1e-12) and f_mie == pytest.approx(f_lj, rel=1e-12)
    n, m = 10.0, 5.0  # minimum of any Mie potential is −ε at r = (n/m)^(1/(n−m)) σ
    e_min, f_min = energy_and_force_2(md.Mie(n=n, m=m), (n / m) ** (1 / (n - m)) * sigma)
    assert e_min == pytest.approx(-epsilon, rel=1e-12) and abs(f_min) < 1e-9


def test_softsphere_and_coulomb_values():
    e, f = energy_and_force_2(md.SoftSphere(), 0.35)  # r = σ_mix
    assert e == pytest.approx(4 * math.sqrt(0.5), rel=1e-12)
    assert f == pytest.approx(48 * math.sqrt(0.5) / 0.35, rel=1e-12)
    r, qq = 0.7, 0.5 * -0.8
    e, f = energy_and_force_2(md.Coulomb(), r)
    assert e == pytest.approx(K_COULOMB * qq / r, rel=1e-12)
    assert f == pytest.approx(K_COULOMB * qq / r**2, rel=1e-12)  # negative: opposite charges attract
    e, _ = energy_and_force_2(md.Coulomb(coulomb_const=1.0), r, dims=2)
    assert e == pytest.approx(qq / r, rel=1e-12)


def test_reaction_field_values():
    eps_s, r = 78.3, 0.5
    k_rf = (eps_s - 1) / ((2 * eps_s + 1) * RC**3)
    c_rf = 3 * eps_s / ((2 * eps_s + 1) * RC)  # OpenMM's form of 1/rc + k_rf rc²
    qq = 0.5 * -0.8
    inter = md.CoulombReactionField(distance=RC, solvent_dielectric=eps_s)
    e, f = energy_and_force_2(inter, r)
    assert e == pytest.approx(K_COULOMB * qq * (1 / r + k_rf * r**2 - c_rf), rel=1e-12)
    assert f == pytest.approx(K_COULOMB * qq * (1 / r**2 - 2 * k_rf * r), rel=1e-12)
    e, _ = energy_and_force_2(inter, RC * (1 - 1e-9))
    assert abs(e) < 1e-6  # continuous at the cutoff
    assert energy_and_force_2(inter, RC * 1.01) == (0.0, 0.0)


def test_cutoff_schemes_at_and_beyond_the_cutoff():
    sigma, epsilon = 0.35, math.sqrt(0.5)
    v_rc, dv_rc = lj(RC, sigma, epsilon), lj_dvdr(RC, sigma, epsilon)
    inside, below = RC * (1 - 1e-7), 0.6

    # plain: V(r) inside, exactly zero (energy and force) beyond
    e, f = energy_and_force_2(md.LennardJones(cutoff=md.PlainCutoff(RC)), inside)
    assert e == pytest.approx(lj(inside, sigma, epsilon), rel=1e-12)
    assert energy_and_force_2(md.LennardJones(cutoff=md.PlainCutoff(RC)), RC * 1.001) == (0.0, 0.0)
    assert energy_and_force_2(md.LennardJones(cutoff=md.PlainCutoff(RC)), RC) == (0.0, 0.0)

    # shifted potential: energy → 0 at rc, force does not
    inter = md.LennardJones(cutoff=md.ShiftedPotentialCutoff(RC))
    e, f = energy_and_force_2(inter, inside)
    assert abs(e) < 2e-7 * abs(dv_rc) and f == pytest.approx(-dv_rc, rel=1e-5)
    e, f = energy_and_force_2(inter, below)
    assert e == pytest.approx(lj(below, sigma, epsilon) - v_rc, rel=1e-12)

    # shifted force: energy and force → 0 at rc
    inter = md.LennardJones(cutoff=md.ShiftedForceCutoff(RC))
    e, f = energy_and_force_2(inter, inside)
    assert abs(e) < 1e-13 and abs(f) < 1e-5 * abs(dv_rc)
    e, f = energy_and_force_2(inter, below)
    assert e == pytest.approx(lj(below, sigma, epsilon) - v_rc - (below - RC) * dv_rc, rel=1e-12)
    assert f == pytest.approx(-lj_dvdr(below, sigma, epsilon) + dv_rc, rel=1e-12)
    assert energy_and_force_2(inter, RC * 1.001) == (0.0, 0.0)

    # switched: S(x) V(r), OpenMM's polynomial; untouched below rs, zero at rc
    inter = md.LennardJones(cutoff=md.SwitchedCutoff(RC, RS))
    r = 0.9
    x = (r - RS) / (RC - RS)
    s = 1 - 6 * x**5 + 15 * x**4 - 10 * x**3
    ds = (-30 * x**4 + 60 * x**3 - 30 * x**2) / (RC - RS)
    e, f = energy_and_force_2(inter, r)
    assert e == pytest.approx(s * lj(r, sigma, epsilon), rel=1e-12)
    assert f == pytest.approx(-(ds * lj(r, sigma, epsilon) + s * lj_dvdr(r, sigma, epsilon)), rel=1e-12)
    e, _ = energy_and_force_2(inter, 0.7)
    assert e == pytest.approx(lj(0.7, sigma, epsilon), rel=1e-12)
    e, f = energy_and_force_2(inter, inside)
    assert abs(e) < 1e-15 and abs(f) < 1e-12
    assert energy_and_force_2(inter, RC * 1.001) == (0.0, 0.0)


def test_cutoff_validation():
    with pytest.raises(ValueError, match="positive"):
        md.PlainCutoff(0.0)
    with pytest.raises(ValueError, match="switch_distance"):
        md.SwitchedCutoff(0.8, 1.0)  # distance first: a switch beyond the cutoff is refused
    with pytest.raises(ValueError, match="mixing"):
        md.LennardJones(mixing="arithmetic")
    with pytest.raises(ValueError, match="force_cap"):
        md.LennardJones(force_cap=-1.0)


# ---------------------------------------------------------------------------------------------
# LennardJones force cap

CAP = 100.0


def test_force_cap_bounds_every_pair_force():
    inter = md.LennardJones(force_cap=CAP)
    atoms, _ = two_atoms(1.0)
    r = np.concatenate([np.linspace(0.005, 0.6, 400), [0.35 * 2 ** (1 / 6)]])
    coords = np.zeros((len(r), 2, 3))
    coords[:, 1, 0] = r
    system = md.System(atoms, coords[0], md.NoBoundary(3), pairwise_inters=[inter])
    forces = jax.jit(jax.vmap(lambda c: jit_forces(system, c)))(jnp.asarray(coords))
    magnitude = np.linalg.norm(np.asarray(forces[:, 1]), axis=-1)
    assert magnitude.max() <= CAP * (1 + 1e-9)
    assert magnitude[:50].min() == pytest.approx(CAP, rel=1e-9)  # deep overlap: exactly the cap
    uncapped = md.LennardJones()
    f_uncapped = jax.jit(jax.vmap(lambda c: jit_forces(eqx.tree_at(lambda s: s.pairwise_inters, system, (uncapped,)), c)))(
        jnp.asarray(coords)
    )
    far = np.linalg.norm(np.asarray(f_uncapped[:, 1]), axis=-1) < CAP
    np.testing.assert_allclose(np.asarray(forces)[far], np.asarray(f_uncapped)[far], rtol=1e-9, atol=1e-12)


def test_force_cap_on_overlapping_cluster():
    n = 6
    coords = np.random.default_rng(5).uniform(0.0, 0.1, (n, 3))  # every pair deep inside σ
    atoms = random_atoms(n, 5)
    inter = md.LennardJones(force_cap=CAP)  # (a shifted-force cutoff would add a constant V'(rc))
    system = md.System(atoms, coords, md.NoBoundary(3), pairwise_inters=[inter])
    # per-pair force magnitude = |dE/dr| of each pair's own energy
    i, j = np.triu_indices(n, 1)
    r = jnp.asarray(np.linalg.norm(coords[j] - coords[i], axis=-1))
    values = inter.atom_values(atoms)  # per-atom σ and √ε, as the pair function reads them
    gather = lambda idx: md.Params({name: v[idx] for name, v in values.items()})
    dedr = jax.jit(jax.grad(lambda rr: jnp.sum(inter.pair_energy(rr, gather(i), gather(j)))))(r)
    assert np.abs(np.asarray(dedr)).max() <= CAP * (1 + 1e-9)
    np.testing.assert_allclose(np.abs(np.asarray(dedr)), CAP, rtol=1e-9)
    assert_forces_match_fd(system)


def test_force_cap_does_not_change_well_separated_systems():
    coords = random_coords(7, 3, 11, min_dist=0.36)
    atoms = random_atoms(7, 11)
    capped = md.System(atoms, coords, boundary_for("pbc", 3), pairwise_inters=[md.LennardJones(force_cap=CAP)])
    plain = md.System(atoms, coords, boundary_for("pbc", 3), pairwise_inters=[md.LennardJones()])
    assert np.abs(np.asarray(jit_forces(plain))).max() < CAP  # precondition: cap inactive
    assert float(jit_energy(capped)) == pytest.approx(float(jit_energy(plain)), rel=1e-12)
    np.testing.assert_allclose(np.asarray(jit_forces(capped)), np.asarray(jit_forces(plain)), rtol=1e-10, atol=1e-10)


def test_force_cap_parameter_gradients_match_finite_differences():
    """r* depends on σ and ε; the capped energy is differentiable w.r.t. them, to second order
    (r* follows σ through an implicit-function derivative)."""
    coords = np.random.default_rng(8).uniform(0.0, 0.25, (4, 3))
    atoms = random_atoms(4, 8)
    system = md.System(atoms, coords, md.NoBoundary(3), pairwise_inters=[md.LennardJones(force_cap=CAP)])

    def energy(sigma, epsilon):
        a = eqx.tree_at(lambda x: (x.per_atom["sigma"], x.per_atom["epsilon"]), atoms, (sigma, epsilon))
        return md.potential_energy(eqx.tree_at(lambda s: s.atoms, system, a))

    @jax.jit
    def derivatives(sigma, epsilon):
        value, grads = jax.value_and_grad(energy, argnums=(0, 1))(sigma, epsilon)
        return value, grads, jax.jacfwd(jax.grad(energy))(sigma, epsilon)

    _, (g_sigma, g_eps), hessian = derivatives(atoms.sigma, atoms.epsilon)
    h = 1e-6
    for k in range(4):
        e = np.eye(4)[k] * h
        up_s, down_s = derivatives(atoms.sigma + e, atoms.epsilon), derivatives(atoms.sigma - e, atoms.epsilon)
        up_e, down_e = derivatives(atoms.sigma, atoms.epsilon + e), derivatives(atoms.sigma, atoms.epsilon - e)
        assert float(g_sigma[k]) == pytest.approx(float(up_s[0] - down_s[0]) / (2 * h), rel=1e-6, abs=1e-6)
        assert float(g_eps[k]) == pytest.approx(float(up_e[0] - down_e[0]) / (2 * h), rel=1e-6, abs=1e-6)
        fd_hessian = (np.asarray(up_s[1][0]) - np.asarray(down_s[1][0])) / (2 * h)
        np.testing.assert_allclose(np.asarray(hessian[:, k]), fd_hessian, rtol=1e-5, atol=1e-5 * np.abs(fd_hessian).max())


# ---------------------------------------------------------------------------------------------
# bonded interactions


def bonded_terms(dims):
    """Bonds and angles on 6 atoms (+ torsions in 3-D), several terms per type."""
    terms = [
        md.HarmonicBonds(indices=[[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]], r0=[0.3, 0.35, 0.4, 0.32, 0.5],
                         k=[1000.0, 2000.0, 1500.0, 900.0, 1200.0]),
        md.MorseBonds(indices=[[0, 2], [1, 3]], r0=[0.5, 0.45], depth=[300.0, 400.0], a=[2.5, 3.0]),
        md.HarmonicAngles(indices=[[0, 1, 2], [1, 2, 3], [2, 3, 4]], theta0=[1.9, 2.1, 1.7], k=[300.0, 400.0, 350.0]),
        md.CosineAngles(indices=[[3, 4, 5], [1, 2, 3]], theta0=[2.0, 1.5], k=[50.0, 70.0]),
    ]
    if dims == 3:
        terms += [
            md.PeriodicTorsions(indices=[[0, 1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4], [2, 3, 4, 5]],
                                periodicity=[1, 2, 3, 3], phase=[0.0, math.pi, 0.3, -1.0], k=[10.0, 5.0, 2.0, 7.0]),
            md.RBTorsions(indices=[[0, 1, 2, 3], [2, 3, 4, 5]],
                          coefficients=[[9.0, -3.0, 2.0, 1.5, -4.0, 0.7], [1.0, 2.0, -3.0, 4.0, 0.5, -0.2]]),
        ]
    return terms


def chain_coords(dims, seed, start=None):
    """A random zig-zag chain of 6 atoms with bonds ~0.35 nm (no collinear triples); every
    bonded term below spans less than half the box, so minimum images are unambiguous."""
    rng = np.random.default_rng(seed)
    x = [np.full(dims, 0.2) if start is None else np.asarray(start, float)]
    while len(x) < 6:
        step = rng.normal(size=dims)
        step *= rng.uniform(0.3, 0.4) / np.linalg.norm(step)
        if len(x) >= 2:
            prev = x[-1] - x[-2]
            cos = np.dot(step, -prev) / np.linalg.norm(step) / np.linalg.norm(prev)
            if abs(cos) > 0.9 or cos > 0.2:
                continue
        x.append(x[-1] + step)
    return np.array(x)


BONDED_NAMES = ["HarmonicBonds", "MorseBonds", "HarmonicAngles", "CosineAngles", "PeriodicTorsions", "RBTorsions"]


# every type in a periodic 3-D box (chain crossing the boundary); bonds and angles also in 2-D
# (torsions are 3-D only, see test_torsions_refuse_2d); one of each arity in open space
BONDED_CASES = (
    [(name, "pbc3") for name in BONDED_NAMES]
    + [(name, "pbc2") for name in BONDED_NAMES if "Torsions" not in name]
    + [(name, "open3") for name in ("MorseBonds", "CosineAngles", "PeriodicTorsions")]
)


@pytest.mark.parametrize(("name", "geometry"), BONDED_CASES)
def test_bonded_forces_are_minus_gradient(name, geometry):
    kind, dims = geometry[:-1], int(geometry[-1])
    seed = zlib.crc32(f"{name}{geometry}".encode()) % 1000
    # in the periodic case start next to a face so that bonds cross the boundary
    coords = chain_coords(dims, seed, start=np.full(dims, BOX - 0.05) if kind == "pbc" else None)
    if kind == "pbc":
        coords = np.mod(coords, BOX)
    (inter,) = [t for t in bonded_terms(dims) if type(t).__name__ == name]
    system = md.System(random_atoms(6, seed), coords, boundary_for(kind, dims), bonded_inters=[inter])
    assert_forces_match_fd(system)


def test_periodic_bonded_terms_use_minimum_image():
    dims = 3
    open_coords = chain_coords(dims, 4, start=np.full(dims, BOX - 0.05))
    wrapped = np.mod(open_coords, BOX)
    assert not np.allclose(wrapped, open_coords)  # the chain does cross the box
    terms = bonded_terms(dims)
    atoms = random_atoms(6, 4)
    e_open = jit_energy(md.System(atoms, open_coords, md.NoBoundary(3), bonded_inters=terms))
    e_pbc = jit_energy(md.System(atoms, wrapped, boundary_for("pbc", 3), bonded_inters=terms))
    assert float(e_pbc) == pytest.approx(float(e_open), rel=1e-12)  # (forces: FD tests above)


def bonded_system(terms, coords, boundary=None):
    coords = np.asarray(coords, float)
    n, dims = coords.shape
    return md.System(md.Atoms(np.ones(n)), coords, boundary or md.NoBoundary(dims), bonded_inters=terms)


@pytest.mark.parametrize("dims", [2, 3])
def test_bond_values(dims):
    k, r0 = 800.0, 0.7
    for r, expected in ((r0, 0.0), (r0 + 0.1, 0.5 * k * 0.01), (r0 - 0.2, 0.5 * k * 0.04)):
        coords = np.zeros((2, dims))
        coords[1, -1] = r
        system = bonded_system([md.HarmonicBond(0, 1, r0, k)], coords)
        e, f = jit_ef(system)
        assert float(e) == pytest.approx(expected, rel=1e-12, abs=1e-14)
        assert float(f[1, -1]) == pytest.approx(-k * (r - r0), rel=1e-12, abs=1e-12)
    depth, a = 300.0, 2.0
    for r, expected in ((r0, 0.0), (r0 + 0.1, depth * (1 - math.exp(-0.2)) ** 2), (r0 + 50.0, depth)):
        coords = np.zeros((2, dims))
        coords[1, 0] = r
        e = jit_energy(bonded_system([md.MorseBond(0, 1, r0, depth, a)], coords))
        assert float(e) == pytest.approx(expected, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("dims", [2, 3])
def test_angle_values(dims):
    coords = np.zeros((3, dims))
    coords[0, 0] = 0.3  # i on x, vertex j at the origin, k on y: θ = 90°
    coords[2, 1] = 0.5
    theta0, k = math.radians(100.0), 400.0
    e = jit_energy(bonded_system([md.HarmonicAngle(0, 1, 2, theta0, k)], coords))
    assert float(e) == pytest.approx(0.5 * k * math.radians(10.0) ** 2, rel=1e-12)
    e = jit_energy(bonded_system([md.CosineAngle(0, 1, 2, theta0, k)], coords))
    assert float(e) == pytest.approx(k * (1 + math.cos(math.pi / 2 - theta0)), rel=1e-12)
    # 60°: equilateral triangle
    tri = np.zeros((3, dims))
    tri[0, 0], tri[2, 0], tri[2, 1] = 1.0, 0.5, math.sqrt(3) / 2
    e = jit_energy(bonded_system([md.HarmonicAngle(0, 1, 2, 0.0, 2.0)], tri))
    assert float(e) == pytest.approx((math.pi / 3) ** 2, rel=1e-12)


def torsion_coords(phi_degrees):
    """i on +x, j at 0, k on +z, l at azimuth φ above k. Looking from j to k, the front bond
    j→i must turn clockwise by φ to eclipse k→l, so the IUPAC dihedral is +φ."""
    phi = math.radians(phi_degrees)
    return np.array([[1.0, 0, 0], [0, 0, 0], [0, 0, 1.0], [math.cos(phi), math.sin(phi), 1.0]]) * 0.3


@pytest.mark.parametrize("phi", [180.0, 0.0, 60.0, -60.0, 90.0, -135.0])
def test_torsion_values(phi):
    coords = torsion_coords(phi)
    p = math.radians(phi)
    k = 5.0
    for n, phase in ((1, 0.0), (2, math.pi), (3, math.pi / 2)):
        e = jit_energy(bonded_system([md.PeriodicTorsion(0, 1, 2, 3, n, phase, k)], coords))
        assert float(e) == pytest.approx(k * (1 + math.cos(n * p - phase)), rel=1e-12, abs=1e-12)
    c = [1.5, -2.0, 3.0, 0.5, -1.0, 0.25]
    e = jit_energy(bonded_system([md.RBTorsion(0, 1, 2, 3, c)], coords))
    psi = p - math.pi
    assert float(e) == pytest.approx(sum(cn * math.cos(psi) ** n for n, cn in enumerate(c)), rel=1e-12, abs=1e-12)
    phi_measured = md.space.dihedral_angle(*(jnp.asarray(coords[a + 1] - coords[a]) for a in range(3)))
    assert math.remainder(float(phi_measured) - p, 2 * math.pi) == pytest.approx(0.0, abs=1e-12)


def test_trans_is_180_degrees_and_sign_convention():
    trans = np.array([[0.0, 1, 0], [0, 0, 0], [1, 0, 0], [1, -1, 0]])
    cis = np.array([[0.0, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0]])
    b = lambda x: [jnp.asarray(x[a + 1] - x[a]) for a in range(3)]
    assert abs(float(md.space.dihedral_angle(*b(trans)))) == pytest.approx(math.pi, abs=1e-12)
    assert float(md.space.dihedral_angle(*b(cis))) == pytest.approx(0.0, abs=1e-12)
    # phase π/2 tells +60° from −60°: V = k(1 + cos(φ − π/2)) = k(1 + sin φ)
    term = [md.PeriodicTorsion(0, 1, 2, 3, 1, math.pi / 2, 1.0)]
    assert float(jit_energy(bonded_system(term, torsion_coords(60.0)))) == pytest.approx(1 + math.sin(math.pi / 3))
    assert float(jit_energy(bonded_system(term, torsion_coords(-60.0)))) == pytest.approx(1 - math.sin(math.pi / 3))


@pytest.mark.parametrize("term", [md.PeriodicTorsion(0, 1, 2, 3, 1, 0.0, 1.0), md.RBTorsion(0, 1, 2, 3, [1.0] * 6)])
def test_torsions_refuse_2d(term):
    system = bonded_system([term], np.random.default_rng(0).normal(size=(4, 2)))
    with pytest.raises(ValueError, match="3-D"):
        jit_energy(system)


# ---------------------------------------------------------------------------------------------
# NaN safety of gradients


NAN_PAIRWISE = [
    md.LennardJones(),
    md.LennardJones(mixing="geometric", cutoff=md.ShiftedForceCutoff(RC)),
    md.LennardJones(mixing="geometric", force_cap=CAP),
    md.LennardJones(cutoff=md.SwitchedCutoff(RC, RS), force_cap=CAP),
    md.SoftSphere(mixing="geometric"),
    md.Mie(n=10.0, m=5.0, mixing="geometric", cutoff=md.ShiftedPotentialCutoff(RC)),
    md.Coulomb(cutoff=md.PlainCutoff(RC)),
    md.CoulombReactionField(distance=RC),
]


def test_gradients_finite_with_zero_sigma_and_epsilon():
    n = 6
    atoms = random_atoms(n, 21, zero=(0, 3))  # atoms 0 and 3 have σ = ε = 0
    atoms = eqx.tree_at(lambda a: a.per_atom["charge"], atoms, atoms.charge.at[3].set(0.0))
    coords = random_coords(n, 3, 21)
    system = md.System(atoms, coords, boundary_for("pbc", 3), pairwise_inters=NAN_PAIRWISE)
    _, grads = check_grad_finite_and_jvp(system)
    # and the gradient w.r.t. the nonzero parameters is right (FD on atom 1, same compiled code)
    tangent = random_tangent((system.atoms, system.coords), 0)
    h = 1e-6

    def energy_at(field, delta):
        a = eqx.tree_at(lambda x: x.per_atom[field], atoms, getattr(atoms, field).at[1].add(delta))
        return float(_value_grad_jvp(eqx.tree_at(lambda s: s.atoms, system, a), None, tangent)[0])

    for field in ("sigma", "epsilon", "charge"):
        fd = (energy_at(field, h) - energy_at(field, -h)) / (2 * h)
        assert abs(fd) > 1e-3
        assert float(getattr(grads[0], field)[1]) == pytest.approx(fd, rel=1e-6, abs=1e-6)


def test_gradients_finite_with_padded_neighbor_list():
    n, rc_list = 8, 1.2
    atoms = random_atoms(n, 31, zero=(0,))  # padding slots repeat pair (0, 0): the worst case
    coords = random_coords(n, 3, 31)
    inters = [
        md.LennardJones(cutoff=md.ShiftedForceCutoff(RC), use_neighbors=True, mixing="geometric"),
        md.CoulombReactionField(distance=RC, use_neighbors=True),
    ]
    system = md.System(atoms, coords, boundary_for("pbc", 3), pairwise_inters=inters,
                       neighbor_finder=md.DistanceNeighborFinder(rc_list), exclusions=[(1, 2)], pairs_14=[(2, 5)])
    excluded = system.excluded_pairs().array
    count = int(system.neighbor_finder.count_neighbors(system.coords, system.boundary, excluded))
    neighbors = system.neighbor_finder.build(system.coords, system.boundary, excluded, capacity=md.Capacity(count + 2))
    assert int(np.sum(~np.asarray(neighbors.mask))) >= 2 * n  # there are padding slots
    assert 0 < len(neighbors.pairs()) < n * (n - 1) // 2 - 2  # and some pairs are beyond the list cutoff

    e_list, grads_list = check_grad_finite_and_jvp(system, neighbors)
    e_all, grads_all = check_grad_finite_and_jvp(system)
    assert float(e_list) == pytest.approx(float(e_all), rel=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(grads_list), jax.tree_util.tree_leaves(grads_all)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-10)
    assert float(jnp.abs(grads_list[0].sigma).max()) > 0 and float(jnp.abs(grads_list[1]).max()) > 0


@pytest.mark.slow  # (compiles a whole simulation; the padded-list test above covers the same code path)
def test_gradients_finite_through_simulate_with_oversized_neighbor_list():
    n = 6
    atoms = random_atoms(n, 41, zero=(0, 2))
    coords = random_coords(n, 3, 41, min_dist=0.35)
    system = md.System(atoms, coords, boundary_for("pbc", 3),
                       pairwise_inters=[md.LennardJones(cutoff=md.ShiftedForceCutoff(RC), use_neighbors=True)],
                       neighbor_finder=md.DistanceNeighborFinder(1.2, capacity=n + 3))

    def final_energy(atoms):
        s = eqx.tree_at(lambda x: x.atoms, system, atoms)
        return md.simulate(s, md.VelocityVerlet(0.001), 3).state.potential_energy

    grads = jax.grad(final_energy)(atoms)
    assert all_finite(grads)
    assert float(jnp.abs(grads.sigma).max()) > 0


def degenerate_coords(dims):
    """Atoms 0-1-2 exactly collinear (θ = 180° at 1), 3-4-5 collinear with θ = 0 at 4,
    6-7-8-9 with 7-8-9 collinear (dihedral undefined) in 3-D."""
    x = np.zeros((10, dims))
    x[0, 0], x[2, 0] = -0.3, 0.4  # atom 1 at the origin
    x[3, 0], x[4, 0], x[5, 0] = 1.3, 1.0, 1.6  # 3 and 5 on the same side of 4
    x[6, 1] = 2.5
    x[7, 1], x[8, 1], x[9, 1] = 2.0, 2.0, 2.0
    x[6, 0], x[8, 0], x[9, 0] = 0.5, 0.3, 0.6  # 7 at (0, 2), 8 and 9 on the x axis from 7
    return x


@pytest.mark.parametrize("dims", [2, 3])
def test_gradients_finite_for_collinear_angles_and_degenerate_dihedrals(dims):
    coords = degenerate_coords(dims)
    theta0 = np.array([1.9, 2.0])
    terms = [
        md.HarmonicAngles(indices=[[0, 1, 2], [3, 4, 5]], theta0=theta0, k=[100.0, 200.0]),
        md.CosineAngles(indices=[[0, 1, 2], [3, 4, 5]], theta0=[1.0, 0.5], k=[30.0, 40.0]),
        md.HarmonicBonds(indices=[[0, 1], [7, 8]], r0=[0.2, 0.2], k=[10.0, 10.0]),
    ]
    if dims == 3:
        terms += [
            md.PeriodicTorsions(indices=[[6, 7, 8, 9], [0, 1, 2, 9]], periodicity=[1.0, 2.0], phase=[0.4, 0.0], k=[5.0, 3.0]),
            md.RBTorsions(indices=[[6, 7, 8, 9]], coefficients=[[1.0, 2.0, 3.0, -1.0, 0.5, 0.2]]),
        ]
    system = bonded_system(terms, coords)

    def energy(terms_, coords_):
        return md.potential_energy(eqx.tree_at(lambda s: s.bonded_inters, system, terms_), coords_)

    @jax.jit
    def value_grad_jvp(args, tangent):
        return energy(*args), jax.grad(energy, argnums=(0, 1))(*args), jax.jvp(energy, args, tangent)[1]

    args = (system.bonded_inters, system.coords)
    tangent = random_tangent(args, 3)
    e, grads, jvp = value_grad_jvp(args, tangent)
    expected = 0.5 * 100 * (math.pi - 1.9) ** 2 + 0.5 * 200 * 2.0**2 + 30 * (1 + math.cos(math.pi - 1.0)) + 40 * (1 + math.cos(-0.5))
    expected += 0.5 * 10 * 0.1**2 * 2
    if dims == 3:  # degenerate dihedrals are reported as φ = 0
        expected += 5 * (1 + math.cos(-0.4)) + 3 * 2 + (1 - 2 + 3 + 1 + 0.5 - 0.2)
    assert float(e) == pytest.approx(expected, rel=1e-12)
    assert all_finite(grads)
    np.testing.assert_allclose(float(jvp), float(tree_dot(grads, tangent)), rtol=1e-9, atol=1e-9)
    # gradients w.r.t. parameters at the degenerate point are still exact: dE/dθ0 = −k(θ − θ0)
    np.testing.assert_allclose(np.asarray(grads[0][0].theta0), -np.array([100.0, 200.0]) * (np.array([math.pi, 0.0]) - theta0),
                               rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# one-term constructors, merging and validation


def test_one_term_constructors_match_batched():
    coords = chain_coords(3, 7)
    one_term = [
        [md.HarmonicBond(0, 1, 0.7, 100.0), md.HarmonicBond(1, 2, 0.3, 250.0), md.HarmonicBond(4, 5, 0.35, 90.0)],
        [md.HarmonicAngle(0, 1, 2, 1.9, 300.0), md.HarmonicAngle(1, 2, 3, 2.1, 200.0)],
        [md.PeriodicTorsion(0, 1, 2, 3, 3, 0.0, 2.0), md.PeriodicTorsion(1, 2, 3, 4, 1, math.pi, 4.0)],
        [md.RBTorsion(0, 1, 2, 3, [1.0, 2, 3, 4, 5, 6]), md.RBTorsion(2, 3, 4, 5, [-1.0, 0.5, 0, 2, 1, -3])],
        [md.MorseBond(0, 2, 0.5, 300.0, 2.0), md.MorseBond(1, 3, 0.6, 200.0, 2.5)],
        [md.CosineAngle(2, 3, 4, 1.9, 30.0), md.CosineAngle(3, 4, 5, 2.2, 40.0)],
    ]
    batched = [
        md.HarmonicBonds(indices=[[0, 1], [1, 2], [4, 5]], r0=[0.7, 0.3, 0.35], k=[100.0, 250.0, 90.0]),
        md.HarmonicAngles(indices=[[0, 1, 2], [1, 2, 3]], theta0=[1.9, 2.1], k=[300.0, 200.0]),
        md.PeriodicTorsions(indices=[[0, 1, 2, 3], [1, 2, 3, 4]], periodicity=[3, 1], phase=[0.0, math.pi], k=[2.0, 4.0]),
        md.RBTorsions(indices=[[0, 1, 2, 3], [2, 3, 4, 5]], coefficients=[[1.0, 2, 3, 4, 5, 6], [-1.0, 0.5, 0, 2, 1, -3]]),
        md.MorseBonds(indices=[[0, 2], [1, 3]], r0=[0.5, 0.6], depth=[300.0, 200.0], a=[2.0, 2.5]),
        md.CosineAngles(indices=[[2, 3, 4], [3, 4, 5]], theta0=[1.9, 2.2], k=[30.0, 40.0]),
    ]
    sys_one = bonded_system(one_term, coords)
    sys_batched = bonded_system(batched, coords)
    assert [type(t) for t in sys_one.bonded_inters] == [type(t) for t in batched]
    assert [t.n_terms for t in sys_one.bonded_inters] == [3, 2, 2, 2, 2, 2]
    for merged, reference in zip(sys_one.bonded_inters, batched):  # same rows, same parameters
        assert merged.indices == reference.indices
        for a, b in zip(jax.tree_util.tree_leaves(merged), jax.tree_util.tree_leaves(reference)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    e1, e2 = float(jit_energy(sys_one)), float(jit_energy(sys_batched))
    assert e1 == pytest.approx(e2, rel=1e-13)

    # one mixed list is split by type; total = sum of the parts
    mixed_list = [one_term[0][0], one_term[1][0], one_term[0][1], one_term[2][1], one_term[4][0], one_term[1][1]]
    sys_mixed = bonded_system([mixed_list], coords)
    assert sorted(type(t).__name__ for t in sys_mixed.bonded_inters) == [
        "HarmonicAngles", "HarmonicBonds", "MorseBonds", "PeriodicTorsions"]
    equivalent = [
        md.HarmonicBonds(indices=[[0, 1], [1, 2]], r0=[0.7, 0.3], k=[100.0, 250.0]),
        md.HarmonicAngles(indices=[[0, 1, 2], [1, 2, 3]], theta0=[1.9, 2.1], k=[300.0, 200.0]),
        md.PeriodicTorsions(indices=[[1, 2, 3, 4]], periodicity=[1], phase=[math.pi], k=[4.0]),
        md.MorseBonds(indices=[[0, 2]], r0=[0.5], depth=[300.0], a=[2.0]),
    ]
    e_mixed, e_equivalent = float(jit_energy(sys_mixed)), float(jit_energy(bonded_system(equivalent, coords)))
    assert e_mixed == pytest.approx(e_equivalent, rel=1e-12)
    assert e_mixed < e2 - 1.0  # a strict subset of the terms above (all of them positive)


def test_shape_and_index_errors_name_the_problem():
    with pytest.raises(ValueError, match="r0"):
        md.HarmonicBonds(indices=[[0, 1], [1, 2]], r0=[0.3], k=[1.0, 2.0])
    with pytest.raises(ValueError, match="k has shape"):
        md.HarmonicAngles(indices=[[0, 1, 2]], theta0=[1.0], k=[[1.0]])
    with pytest.raises(ValueError, match="r0 has shape"):  # (B, 1) would broadcast to (B, B)
        md.HarmonicBonds(indices=[[0, 1], [1, 2]], r0=[[0.3], [0.4]], k=[1.0, 2.0])
    with pytest.raises(ValueError, match="coefficients"):
        md.RBTorsions(indices=[[0, 1, 2, 3]], coefficients=[[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="6 coefficients"):
        md.RBTorsion(0, 1, 2, 3, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"indices must have shape \(n_terms, 2\)"):
        md.HarmonicBonds(indices=[[0, 1, 2]], r0=[0.3], k=[1.0])
    with pytest.raises(ValueError, match=r"\(n_terms, 4\)"):
        md.PeriodicTorsions(indices=[[0, 1, 2]], periodicity=[1], phase=[0.0], k=[1.0])
    with pytest.raises(ValueError, match="indices must have shape"):
        md.HarmonicBonds(indices=[0, 1], r0=[0.3], k=[1.0])
    with pytest.raises(ValueError, match="non-negative"):
        md.HarmonicBond(-1, 1, 0.3, 1.0)
    with pytest.raises(ValueError, match="scalar"):
        md.HarmonicBond(0, 1, [0.3, 0.4], 1.0)
    coords = np.zeros((3, 3))
    coords[:, 0] = [0.0, 0.3, 0.6]
    with pytest.raises(ValueError, match="out of range"):
        bonded_system([md.HarmonicBond(0, 5, 0.3, 1.0)], coords)
    with pytest.raises(TypeError, match="one type"):
        md.merge_terms([md.HarmonicBond(0, 1, 0.3, 1.0), md.HarmonicAngle(0, 1, 2, 1.0, 1.0)])


# ---------------------------------------------------------------------------------------------
# exclusions and 1-4 pairs against a brute-force sum


def test_exclusions_and_14_pairs_brute_force():
    n = 8
    atoms = random_atoms(n, 51)
    coords = random_coords(n, 3, 51)
    exclusions = [(1, 0), (1, 2), (0, 2), (5, 6)]  # unsorted on purpose
    pairs_14 = [(0, 3), (5, 2), (4, 7)]
    w_lj, w_c, w_rf = 0.5, 1 / 1.2, 0.7
    inters = [
        md.LennardJones(cutoff=md.ShiftedPotentialCutoff(RC), weight_14=w_lj),
        md.Coulomb(cutoff=md.PlainCutoff(RC), weight_14=w_c),
        md.CoulombReactionField(distance=RC, weight_14=w_rf, solvent_dielectric=50.0),
    ]
    system = md.System(atoms, coords, boundary_for("pbc", 3), pairwise_inters=inters,
                       exclusions=exclusions, pairs_14=pairs_14)

    a = as_np(atoms)
    q = a["charge"]
    k_rf = (50.0 - 1) / ((2 * 50.0 + 1) * RC**3)
    c_rf = 1 / RC + k_rf * RC**2
    skip = {tuple(sorted(p)) for p in exclusions + pairs_14}
    expected, n_inside = 0.0, 0
    for i in range(n):
        for j in range(i + 1, n):
            r = np.linalg.norm(min_image(coords[j] - coords[i], BOX))
            sig, eps = mixed(a, i, j)
            if (i, j) in {tuple(sorted(p)) for p in pairs_14}:
                expected += w_lj * lj(r, sig, eps) + (w_c + w_rf) * K_COULOMB * q[i] * q[j] / r
            elif (i, j) not in skip and r < RC:
                n_inside += 1
                expected += lj(r, sig, eps) - lj(RC, sig, eps)
                expected += K_COULOMB * q[i] * q[j] * (1 / r + (1 / r + k_rf * r**2 - c_rf))
    assert n_inside >= 3
    assert float(jit_energy(system)) == pytest.approx(expected, rel=1e-12)
    # removing the exclusions changes the energy (they really were excluded)
    plain = md.System(atoms, coords, boundary_for("pbc", 3), pairwise_inters=inters)
    assert float(jit_energy(plain)) != pytest.approx(expected, rel=1e-6)
    assert_forces_match_fd(system)


# ---------------------------------------------------------------------------------------------
# user-defined interactions


class OverlapRepulsion(md.PairwiseInteraction):
    """Energy-based user interaction declaring no cutoff/use_neighbors/weight_14: defaults apply."""

    k: float = 500.0
    atom_params = ("sigma",)

    def energy(self, r, p_i, p_j):
        reach = 1.5 * (p_i.sigma + p_j.sigma)
        return jnp.where(r < reach, 0.5 * self.k * (reach - r) ** 2, 0.0)


class CutoffGaussian(md.PairwiseInteraction):
    """A user interaction with its own fields, as the built-ins declare them."""

    height: float = 3.0
    width: float = 0.4
    cutoff: Cutoff = md.ShiftedPotentialCutoff(RC)
    use_neighbors: bool = eqx.field(static=True, default=False)
    weight_14: float = 0.25

    def energy(self, r, p_i, p_j):
        return self.height * jnp.exp(-((r / self.width) ** 2))


class LinearRepulsionForce(md.PairwiseForce):
    """Force-only: magnitude k (reach − r) along the pair axis, repulsive, zero beyond cutoff."""

    k: float = 500.0
    reach: float = 0.5
    cutoff: Cutoff = md.PlainCutoff(0.5)

    def force(self, r, p_i, p_j):
        return self.k * (self.reach - r)


class LinearRepulsionEnergy(md.PairwiseInteraction):
    k: float = 500.0
    reach: float = 0.5
    cutoff: Cutoff = md.PlainCutoff(0.5)

    def energy(self, r, p_i, p_j):
        return 0.5 * self.k * (self.reach - r) ** 2


class SpringForce(md.BondedForce):
    """Force-only bonded term (like the reference's NNBond): harmonic spring forces."""

    r0: float = 0.3
    k: float = 400.0

    def force(self, positions, boundary):
        d = boundary.vector(positions[:, 0], positions[:, 1])
        r = jnp.linalg.norm(d, axis=-1, keepdims=True)
        f0 = self.k * (r - self.r0) * d / r  # stretched: atom 0 pulled towards atom 1
        return jnp.stack([f0, -f0], axis=1)


class WrongShapeForce(md.BondedForce):
    def force(self, positions, boundary):
        return jnp.zeros(positions.shape[:1] + positions.shape[2:])


def test_user_pairwise_energy_interaction_with_defaults():
    n = 6
    atoms = random_atoms(n, 61)
    coords = random_coords(n, 3, 61)
    inter = OverlapRepulsion()
    assert isinstance(inter, md.PairwiseInteraction) and not isinstance(inter, md.PairwiseForce)
    assert inter.cutoff_distance == math.inf and inter.weight_14 == 1.0
    system = md.System(atoms, coords, boundary_for("pbc", 3), pairwise_inters=[inter], pairs_14=[(0, 1)])
    a = as_np(atoms)
    expected = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            r = np.linalg.norm(min_image(coords[j] - coords[i], BOX))
            reach = 1.5 * (a["sigma"][i] + a["sigma"][j])
            expected += 0.5 * 500.0 * (reach - r) ** 2 if r < reach else 0.0
    assert expected > 0
    assert float(jit_energy(system)) == pytest.approx(expected, rel=1e-12)
    assert_forces_match_fd(system)


def test_user_pairwise_interaction_with_cutoff_and_weight_14():
    n = 6
    atoms = random_atoms(n, 62)
    coords = random_coords(n, 2, 62)
    inter = CutoffGaussian()
    system = md.System(atoms, coords, boundary_for("pbc", 2), pairwise_inters=[inter], pairs_14=[(1, 4)])
    g = lambda r: 3.0 * np.exp(-((r / 0.4) ** 2))
    expected = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            r = np.linalg.norm(min_image(coords[j] - coords[i], BOX))
            if (i, j) == (1, 4):
                expected += 0.25 * g(r)
            elif r < RC:
                expected += g(r) - g(RC)
    assert float(jit_energy(system)) == pytest.approx(expected, rel=1e-12)
    assert_forces_match_fd(system)


@pytest.mark.parametrize("dims", [2, 3])
def test_user_force_only_pairwise_interaction(dims):
    n = 8
    atoms = random_atoms(n, 63)
    coords = random_coords(n, dims, 63, box=1.2, min_dist=0.15)  # dense corner of the box
    boundary = boundary_for("pbc", dims)
    force_only = LinearRepulsionForce()
    assert isinstance(force_only, md.PairwiseForce) and not isinstance(force_only, md.PairwiseInteraction)
    coulomb = md.Coulomb(coulomb_const=1.0)
    system = md.System(atoms, coords, boundary, pairwise_inters=[force_only, coulomb])
    lj_only = md.System(atoms, coords, boundary, pairwise_inters=[coulomb])
    # no energy from the force-only term
    assert float(jit_energy(system)) == pytest.approx(float(jit_energy(lj_only)), rel=1e-13)
    extra = np.asarray(jit_forces(system)) - np.asarray(jit_forces(lj_only))
    expected = np.zeros_like(coords)
    for i in range(n):
        for j in range(i + 1, n):
            d = min_image(coords[j] - coords[i], BOX)
            r = np.linalg.norm(d)
            if r < 0.5:
                expected[j] += 500.0 * (0.5 - r) * d / r  # pushes j away from i
                expected[i] -= 500.0 * (0.5 - r) * d / r
    assert np.abs(expected).max() > 1.0  # some pairs are inside the reach
    np.testing.assert_allclose(extra, expected, rtol=1e-10, atol=1e-9)
    # same forces as the energy-based version of the same potential
    as_energy = md.System(atoms, coords, boundary, pairwise_inters=[LinearRepulsionEnergy()])
    np.testing.assert_allclose(np.asarray(jit_forces(as_energy)), expected, rtol=1e-10, atol=1e-9)


def test_force_only_pairwise_interaction_with_14_pairs():
    """A 1-4 pair should feel weight_14 × the pair force, as it feels weight_14 × the energy of
    an energy-based interaction (compare the energy-based twin of the same potential; the
    1-2 pair at r = 0.3 is inside the reach 0.5, the 1-3 pair at 0.35 too)."""
    coords = np.array([[0.0, 0.0, 0.0], [0.3, 0.0, 0.0], [0.0, 0.35, 0.0]])
    atoms = md.Atoms(np.ones(3))
    force_only, with_energy = LinearRepulsionForce(), LinearRepulsionEnergy()  # weight_14 = 1 (default)
    pairs_14 = [(0, 1)]
    f_force_only = jit_forces(md.System(atoms, coords, md.NoBoundary(3), pairwise_inters=[force_only], pairs_14=pairs_14))
    f_energy = jit_forces(md.System(atoms, coords, md.NoBoundary(3), pairwise_inters=[with_energy], pairs_14=pairs_14))
    assert np.abs(np.asarray(f_energy)[1]).max() > 1.0  # the 1-4 pair does push in the energy version
    np.testing.assert_allclose(np.asarray(f_force_only), np.asarray(f_energy), rtol=1e-10, atol=1e-10)


def test_user_force_only_bonded_interaction():
    coords = chain_coords(3, 9)
    bonds = [[0, 1], [1, 2], [3, 5]]
    spring = SpringForce(indices=bonds)
    assert isinstance(spring, md.BondedForce) and not isinstance(spring, md.BondedInteraction)
    assert spring.n_terms == 3
    system = bonded_system([spring], coords)
    reference = bonded_system([md.HarmonicBonds(indices=bonds, r0=[0.3] * 3, k=[400.0] * 3)], coords)
    assert float(jit_energy(system)) == 0.0
    np.testing.assert_allclose(np.asarray(jit_forces(system)), np.asarray(jit_forces(reference)), rtol=1e-10, atol=1e-10)
    assert np.abs(np.asarray(jit_forces(reference))).max() > 1.0
    with pytest.raises(ValueError, match="expected"):
        jit_forces(bonded_system([WrongShapeForce(indices=bonds)], coords))
    with pytest.raises(ValueError, match="non-negative"):
        SpringForce(indices=[[0, -1]])


# ---------------------------------------------------------------------------------------------
# float32


def float64_avals(closed_jaxpr):
    """Strongly typed float64 values produced anywhere in a jaxpr (sub-jaxprs included)."""
    found = []

    def visit(jaxpr):
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                aval = var.aval
                if getattr(aval, "dtype", None) == jnp.float64 and not getattr(aval, "weak_type", False):
                    found.append(str(eqn.primitive))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    visit(closed_jaxpr.jaxpr)
    return found


def mixed_system(dims, dtype):
    n = 6
    coords = chain_coords(dims, 71, start=np.full(dims, 0.3))
    atoms = random_atoms(n, 71, dtype=dtype)
    f = lambda v: np.asarray(v, dtype)
    terms = [
        md.HarmonicBonds(indices=[[0, 1], [1, 2], [2, 3]], r0=f([0.3, 0.35, 0.4]), k=f([1000.0, 2000.0, 1500.0])),
        md.MorseBonds(indices=[[3, 4]], r0=f([0.3]), depth=f([300.0]), a=f([2.0])),
        md.HarmonicAngles(indices=[[0, 1, 2], [1, 2, 3]], theta0=f([1.9, 2.1]), k=f([300.0, 400.0])),
        md.CosineAngles(indices=[[2, 3, 4]], theta0=f([2.0]), k=f([50.0])),
    ]
    if dims == 3:
        terms += [
            md.PeriodicTorsions(indices=[[0, 1, 2, 3], [1, 2, 3, 4]], periodicity=f([1, 3]), phase=f([0.0, 0.3]), k=f([10.0, 5.0])),
            md.RBTorsions(indices=[[2, 3, 4, 5]], coefficients=f([[9.0, -3.0, 2.0, 1.5, -4.0, 0.7]])),
        ]
    inters = [
        md.LennardJones(cutoff=md.ShiftedForceCutoff(RC), force_cap=CAP, weight_14=0.5),
        md.LennardJones(cutoff=md.SwitchedCutoff(RC, RS), mixing="geometric"),
        md.Mie(n=10.0, m=5.0, cutoff=md.ShiftedPotentialCutoff(RC)),
        md.Coulomb(weight_14=0.8),
        md.CoulombReactionField(distance=RC),
    ]
    boundary = md.RectangularBoundary(np.full(dims, BOX, dtype))
    return md.System(atoms, coords.astype(dtype), boundary, pairwise_inters=inters, bonded_inters=terms,
                     exclusions=[(0, 1), (1, 2)], pairs_14=[(0, 3)])


@pytest.mark.parametrize("dims", [2, 3])
def test_float32_stays_float32(dims):
    s32 = mixed_system(dims, np.float32)
    e, f = jax.eval_shape(md.energy_and_forces, s32)
    assert e.dtype == jnp.float32 and f.dtype == jnp.float32
    # nothing inside is computed in float64 either (x64 is enabled: an upcast would show here)
    assert float64_avals(jax.make_jaxpr(md.energy_and_forces)(s32)) == []
    grad_atoms = lambda a: jax.grad(lambda x: md.potential_energy(eqx.tree_at(lambda s: s.atoms, s32, x)))(a)
    assert float64_avals(jax.make_jaxpr(grad_atoms)(s32.atoms)) == []
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(jax.eval_shape(grad_atoms, s32.atoms)))


def test_float32_agrees_with_float64():
    def smaller(system):  # (every interaction's float32 path is checked by the jaxpr test above)
        keep = (system.pairwise_inters[0],)  # capped, shifted-force LJ with 1-4 pairs
        bonded = (system.bonded_inters[0], system.bonded_inters[4])  # bonds, periodic torsions
        return eqx.tree_at(lambda s: (s.pairwise_inters, s.bonded_inters), system, (keep, bonded))

    s32, s64 = smaller(mixed_system(3, np.float32)), smaller(mixed_system(3, np.float64))
    e32, f32 = jit_ef(s32)
    e64, f64 = jit_ef(s64)
    assert e32.dtype == jnp.float32 and f32.dtype == jnp.float32 and e64.dtype == jnp.float64
    assert float(e32) == pytest.approx(float(e64), rel=1e-5)
    np.testing.assert_allclose(np.asarray(f32), np.asarray(f64), rtol=1e-4, atol=1e-5 * np.abs(np.asarray(f64)).max())


def test_float32_coordinates_with_default_float64_parameters():
    """Parameters given as Python lists are float64 under x64; float32 coordinates still give
    float32 per-term energies (parameters follow the coordinates' dtype)."""
    coords = chain_coords(3, 72).astype(np.float32)
    boundary = md.NoBoundary(3)
    for term in bonded_terms(3):
        assert term.r0.dtype == jnp.float64 if hasattr(term, "r0") else True
        positions = jnp.asarray(coords)[jnp.asarray(term.indices.array)]
        assert jax.eval_shape(term.energy, positions, boundary).dtype == jnp.float32, type(term).__name__
    system = md.System(random_atoms(6, 72, np.float32), coords, boundary, bonded_inters=bonded_terms(3))
    e, f = jax.eval_shape(md.energy_and_forces, system)
    assert e.dtype == jnp.float32 and f.dtype == jnp.float32
    assert float64_avals(jax.make_jaxpr(md.energy_and_forces)(system)) == []  # parameters cast on entry


def test_coincident_atoms_with_force_cap_give_finite_forces():
    """Two atoms on the same spot: with a force cap the energy is finite and the forces are
    finite (zero along an undefined direction) rather than NaN."""
    coords = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0.9, 0.5, 0.5]])
    atoms = md.Atoms(np.ones(3), sigma=np.full(3, 0.3), epsilon=np.ones(3))
    system = md.System(atoms, coords, md.NoBoundary(3), pairwise_inters=[md.LennardJones(force_cap=100.0)])
    energy = float(md.potential_energy(system))
    forces = np.asarray(md.forces(system))
    assert np.isfinite(energy) and energy > 0
    assert np.all(np.isfinite(forces))
    np.testing.assert_allclose(forces[0], forces[1])  # the coincident pair pushes neither


# ---------------------------------------------------------------------------------------------
# atom types: per-type tables gathered per atom


TYPES = np.array([0, 1, 2, 0, 1, 2, 0, 1])
TYPE_TABLES = {"mass": [12.0, 14.0, 16.0], "sigma": [0.30, 0.34, 0.27], "epsilon": [0.8, 1.2, 0.5]}


def typed_and_flat_systems():
    """The same LJ + Coulomb system with typed atoms and with the equivalent per-atom ones."""
    n = len(TYPES)
    charge = np.random.default_rng(81).uniform(-1.0, 1.0, n)
    coords = random_coords(n, 3, 81)
    typed = md.Atoms(types=TYPES, per_type={k: np.array(v) for k, v in TYPE_TABLES.items()}, charge=charge)
    flat = md.Atoms(np.take(TYPE_TABLES["mass"], TYPES), charge=charge, sigma=np.take(TYPE_TABLES["sigma"], TYPES),
                    epsilon=np.take(TYPE_TABLES["epsilon"], TYPES))
    inters = [md.LennardJones(cutoff=md.ShiftedPotentialCutoff(RC)), md.Coulomb(cutoff=md.ShiftedForceCutoff(RC))]
    make = lambda atoms: md.System(atoms, coords, boundary_for("pbc", 3), pairwise_inters=inters)  # noqa: E731
    return make(typed), make(flat)


def test_typed_atoms_give_the_energy_and_forces_of_per_atom_ones():
    typed, flat = typed_and_flat_systems()
    assert typed.atoms.types is not None and set(typed.atoms.per_type) == {"mass", "sigma", "epsilon"}
    for name in ("mass", "sigma", "epsilon", "charge"):  # gathered per atom
        np.testing.assert_array_equal(np.asarray(typed.atoms[name]), np.asarray(flat.atoms[name]))
    e_typed, f_typed = jit_ef(typed)
    e_flat, f_flat = jit_ef(flat)
    assert abs(float(e_flat)) > 1.0 and np.abs(np.asarray(f_flat)).max() > 1.0  # a non-trivial system
    assert float(e_typed) == pytest.approx(float(e_flat), rel=1e-12)
    np.testing.assert_allclose(np.asarray(f_typed), np.asarray(f_flat), rtol=1e-12, atol=1e-12 * np.abs(f_flat).max())
    # the compiled reverse-mode kernels give the same values
    e_rev, f_rev = jax.jit(lambda s: md.energy_and_forces(s, derivatives="reverse"))(typed)
    assert float(e_rev) == pytest.approx(float(e_flat), rel=1e-12)
    np.testing.assert_allclose(np.asarray(f_rev), np.asarray(f_flat), rtol=1e-10, atol=1e-10 * np.abs(f_flat).max())


def test_per_type_sigma_gradient_is_the_per_type_sum_of_per_atom_gradients():
    typed, flat = typed_and_flat_systems()
    g_typed = jax.jit(jax.grad(md.potential_energy))(typed).atoms.per_type["sigma"]
    g_atom = jax.jit(jax.grad(md.potential_energy))(flat).atoms.per_atom["sigma"]
    assert g_typed.shape == (3,) and g_atom.shape == (len(TYPES),)
    per_type_sum = np.bincount(TYPES, weights=np.asarray(g_atom), minlength=3)
    assert np.abs(per_type_sum).min() > 1e-2  # every type's σ matters
    np.testing.assert_allclose(np.asarray(g_typed), per_type_sum, rtol=1e-10)

    # and a central finite difference of the energy in each per-type σ (float64)
    energy_of = jax.jit(lambda s: md.potential_energy(eqx.tree_at(lambda x: x.atoms.per_type["sigma"], typed, s)))
    sigma, h = np.asarray(TYPE_TABLES["sigma"]), 1e-6
    fd = [(float(energy_of(sigma + h * e)) - float(energy_of(sigma - h * e))) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(np.asarray(g_typed), fd, rtol=1e-6)
    # the same gradient through the compiled kernels' reverse pass
    g_rev = jax.jit(jax.grad(lambda s: md.energy_and_forces(s, derivatives="reverse")[0]))(typed)
    np.testing.assert_allclose(np.asarray(g_rev.atoms.per_type["sigma"]), per_type_sum, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# a user pair potential reading per-atom parameters the library does not know


class GaussianBump(md.PairwiseInteraction):
    """V = √(h_i h_j) exp(−(r/w_ij)²), w_ij = (w_i + w_j)/2, from per-atom 'height' and 'width'."""

    atom_params = ("height", "width")

    def energy(self, r, p_i, p_j):
        width = 0.5 * (p_i.width + p_j.width)
        return jnp.sqrt(p_i.height * p_j.height) * jnp.exp(-((r / width) ** 2))


def gaussian_atoms(n, seed):
    rng = np.random.default_rng(seed)
    return md.Atoms(rng.uniform(10.0, 20.0, n), height=rng.uniform(1.0, 5.0, n), width=rng.uniform(0.2, 0.5, n))


def gaussian_energy_loop(atoms, coords, box):
    h, w = np.asarray(atoms.height), np.asarray(atoms.width)
    total = 0.0
    for i in range(len(coords)):
        for j in range(i + 1, len(coords)):
            r = np.linalg.norm(min_image(coords[j] - coords[i], box))
            total += math.sqrt(h[i] * h[j]) * math.exp(-((r / (0.5 * (w[i] + w[j]))) ** 2))
    return total


@pytest.mark.parametrize("geometry", ["pbc3", "open2"])
def test_user_pair_potential_with_its_own_per_atom_parameters(geometry):
    kind, dims = geometry[:-1], int(geometry[-1])
    n = 7
    atoms = gaussian_atoms(n, 91)
    coords = random_coords(n, dims, 91, box=BOX if kind == "pbc" else 1.2, periodic=kind == "pbc")
    system = md.System(atoms, coords, boundary_for(kind, dims), pairwise_inters=[GaussianBump()])
    expected = gaussian_energy_loop(atoms, coords, BOX if kind == "pbc" else None)
    assert expected > 0.1
    assert float(jit_energy(system)) == pytest.approx(expected, rel=1e-12)
    assert_forces_match_fd(system)
    # the user parameter is differentiable like a built-in one
    grad = jax.jit(jax.grad(md.potential_energy))(system).atoms.per_atom["height"]
    energy_of = jax.jit(lambda h: md.potential_energy(eqx.tree_at(lambda s: s.atoms.per_atom["height"], system, h)))
    for k in (0, 3):
        step = np.eye(n)[k] * 1e-6
        fd = (float(energy_of(atoms.height + step)) - float(energy_of(atoms.height - step))) / 2e-6
        assert abs(fd) > 1e-4
        assert float(grad[k]) == pytest.approx(fd, rel=1e-6)


def test_user_pair_potential_names_a_missing_parameter():
    n = 4
    coords = random_coords(n, 3, 92)
    rng = np.random.default_rng(92)
    no_width = md.Atoms(np.ones(n), height=rng.uniform(1.0, 2.0, n))
    with pytest.raises(ValueError, match=r"GaussianBump needs per-atom 'width'"):
        md.System(no_width, coords, boundary_for("pbc", 3), pairwise_inters=[GaussianBump()])
    with pytest.raises(ValueError, match=r"GaussianBump needs per-atom 'height', 'width'"):
        md.System(md.Atoms(np.ones(n), sigma=np.ones(n)), coords, boundary_for("pbc", 3),
                  pairwise_inters=[GaussianBump()])
    # with both given (per atom or per type) it builds
    typed = md.Atoms(np.ones(n), types=[0, 1, 0, 1], per_type={"width": [0.3, 0.4]}, height=rng.uniform(1.0, 2.0, n))
    system = md.System(typed, coords, boundary_for("pbc", 3), pairwise_inters=[GaussianBump()])
    assert float(jit_energy(system)) == pytest.approx(gaussian_energy_loop(typed, coords, BOX), rel=1e-12)


# ---------------------------------------------------------------------------------------------
# NonbondedExceptions: listed pairs get their own LJ + Coulomb instead of the ordinary terms


EXCEPTION_PAIRS = [(0, 3), (5, 1), (2, 7), (4, 6)]


def exception_system(kind, n=8, seed=101, neighbor_finder=None):
    atoms = random_atoms(n, seed)
    coords = random_coords(n, 3, seed)
    rng = np.random.default_rng(seed)
    qq = rng.uniform(-0.5, 0.5, len(EXCEPTION_PAIRS))
    sigma = rng.uniform(0.2, 0.4, len(EXCEPTION_PAIRS))
    epsilon = rng.uniform(0.1, 1.0, len(EXCEPTION_PAIRS))
    qq[-1] = epsilon[-1] = 0.0  # a zero row is a plain exclusion
    exceptions = md.NonbondedExceptions(indices=EXCEPTION_PAIRS, charge_prod=qq, sigma=sigma, epsilon=epsilon)
    use = neighbor_finder is not None
    if kind == "open":
        inters = [md.LennardJones(), md.Coulomb()]
    else:
        inters = [md.LennardJones(cutoff=md.ShiftedPotentialCutoff(RC), use_neighbors=use),
                  md.Coulomb(cutoff=md.PlainCutoff(RC), use_neighbors=use)]
    system = md.System(atoms, coords, boundary_for("pbc" if kind == "pbc" else "open", 3), pairwise_inters=inters,
                       bonded_inters=[exceptions], exclusions=[(1, 2)], neighbor_finder=neighbor_finder)
    return system, (qq, sigma, epsilon)


def exception_energy_loop(system, params, kind):
    qq, sigma, epsilon = params
    a = as_np(system.atoms)
    coords = np.asarray(system.coords)
    box = BOX if kind == "pbc" else None
    own = {tuple(sorted(p)): k for k, p in enumerate(EXCEPTION_PAIRS)}
    total, n_exceptions, n_ordinary = 0.0, 0, 0
    for i in range(len(coords)):
        for j in range(i + 1, len(coords)):
            r = np.linalg.norm(min_image(coords[j] - coords[i], box))
            if (i, j) in own:
                k = own[(i, j)]
                total += K_COULOMB * qq[k] / r + lj(r, sigma[k], epsilon[k])  # no cutoff
                n_exceptions += 1
            elif (i, j) == (1, 2):
                continue
            elif box is None:
                sig, eps = mixed(a, i, j)
                total += lj(r, sig, eps) + K_COULOMB * a["charge"][i] * a["charge"][j] / r
                n_ordinary += 1
            elif r < RC:
                sig, eps = mixed(a, i, j)
                total += lj(r, sig, eps) - lj(RC, sig, eps) + K_COULOMB * a["charge"][i] * a["charge"][j] / r
                n_ordinary += 1
    assert n_exceptions == len(EXCEPTION_PAIRS) and n_ordinary >= 3
    return total


@pytest.mark.parametrize("kind", ["open", "pbc"])
def test_nonbonded_exceptions_replace_the_ordinary_pair_terms(kind):
    system, params = exception_system(kind)
    if kind == "pbc":  # an exception pair beyond the cutoff still interacts (no cutoff for exceptions)
        coords = np.asarray(system.coords)
        r = [np.linalg.norm(min_image(coords[j] - coords[i], BOX)) for i, j in EXCEPTION_PAIRS[:-1]]
        assert max(r) > RC
    expected = exception_energy_loop(system, params, kind)
    energy = float(jit_energy(system))
    assert energy == pytest.approx(expected, rel=1e-12)
    assert_forces_match_fd(system)
    # the listed pairs really are replaced: without the term the ordinary sum includes them
    ordinary = md.System(system.atoms, system.coords, system.boundary, pairwise_inters=system.pairwise_inters,
                         exclusions=[(1, 2)])
    assert float(jit_energy(ordinary)) != pytest.approx(energy, rel=1e-6)
    # and their own charge products are differentiable: dE/dqq_e = k/r_e
    grad = jax.jit(jax.grad(md.potential_energy))(system).bonded_inters[0].charge_prod
    coords = np.asarray(system.coords)
    r = np.array([np.linalg.norm(min_image(coords[j] - coords[i], BOX if kind == "pbc" else None))
                  for i, j in EXCEPTION_PAIRS])
    np.testing.assert_allclose(np.asarray(grad), K_COULOMB / r, rtol=1e-12)


def test_nonbonded_exceptions_with_a_neighbor_list():
    finder = md.DistanceNeighborFinder(1.15)
    system, params = exception_system("pbc", neighbor_finder=finder)
    excluded = system.excluded_pairs().array
    assert {tuple(p) for p in excluded} == {(1, 2)} | {tuple(sorted(p)) for p in EXCEPTION_PAIRS}
    neighbors = finder.build(system.coords, system.boundary, excluded,
                             finder.initial_capacity(system.coords, system.boundary, excluded))
    listed = {tuple(p) for p in neighbors.pairs()}
    assert listed and not listed & {tuple(p) for p in excluded}  # exception pairs are not on the list
    energy = float(jax.jit(md.potential_energy)(system, None, neighbors))
    assert energy == pytest.approx(exception_energy_loop(system, params, "pbc"), rel=1e-12)
    assert_forces_match_fd(system, neighbors=neighbors)


def test_nonbonded_exceptions_validation():
    with pytest.raises(ValueError, match="charge_prod"):
        md.NonbondedExceptions(indices=[(0, 1), (1, 2)], charge_prod=[0.1], sigma=[0.3, 0.3], epsilon=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"\(n_terms, 2\)"):
        md.NonbondedExceptions(indices=[(0, 1, 2)], charge_prod=[0.1], sigma=[0.3], epsilon=[1.0])


# ---------------------------------------------------------------------------------------------
# global interactions


class UniformField(md.GlobalInteraction):
    """A uniform electric field: E = −Σ q_i field·x_i (open boundary)."""

    field: jax.Array

    def energy(self, coords, boundary, atoms):
        return -jnp.sum(atoms.charge[:, None] * coords * self.field)


class PointRestraint(md.GlobalInteraction):
    """Every atom tied to one point: E = ½ k Σ |x_i − c|² (minimum image)."""

    center: jax.Array
    k: jax.Array

    def energy(self, coords, boundary, atoms):
        d = boundary.vector(jnp.broadcast_to(self.center, coords.shape), coords)
        return 0.5 * self.k * jnp.sum(d * d)


@pytest.mark.parametrize("kind", ["open", "pbc"])
def test_global_interactions_forces_are_minus_gradient(kind):
    n = 5
    atoms = random_atoms(n, 111)
    coords = random_coords(n, 3, 111, box=1.6 if kind == "open" else BOX, periodic=kind == "pbc")
    field = np.array([3.0, -1.0, 2.0])
    center, k = np.array([0.8, 0.9, 0.7]), 250.0
    terms = [PointRestraint(center=jnp.asarray(center), k=jnp.asarray(k))]
    if kind == "open":
        terms.append(UniformField(field=jnp.asarray(field)))
    system = md.System(atoms, coords, boundary_for(kind, 3), pairwise_inters=[md.LennardJones()], global_inters=terms)
    assert isinstance(terms[0], md.GlobalInteraction) and system.global_inters == tuple(terms)
    q = np.asarray(atoms.charge)
    d = min_image(coords - center, BOX if kind == "pbc" else None)
    e_global = 0.5 * k * np.sum(d * d) - (np.sum(q[:, None] * coords * field) if kind == "open" else 0.0)
    f_global = -k * d + (q[:, None] * field if kind == "open" else 0.0)
    only_lj = md.System(atoms, coords, system.boundary, pairwise_inters=[md.LennardJones()])
    e, f = jit_ef(system)
    e_lj, f_lj = jit_ef(only_lj)
    assert float(e) - float(e_lj) == pytest.approx(e_global, rel=1e-12)
    np.testing.assert_allclose(np.asarray(f) - np.asarray(f_lj), f_global, rtol=1e-10, atol=1e-10)
    assert_forces_match_fd(system)


def restrained_particle(k, n_atoms=1):
    atoms = md.Atoms(np.full(n_atoms, 2.0), charge=np.zeros(n_atoms))
    coords = np.array([[1.3, 1.0, 0.9], [0.6, 1.2, 1.0]])[:n_atoms]
    velocities = np.array([[0.0, 0.5, 0.0], [0.2, 0.0, -0.3]])[:n_atoms]
    restraint = PointRestraint(center=jnp.array([1.0, 1.0, 1.0]), k=jnp.asarray(k))
    return md.System(atoms, coords, md.NoBoundary(3), velocities=velocities, global_inters=[restraint])


def velocity_verlet_numpy(x, v, m, k, center, dt, n_steps):
    f = -k * (x - center)
    for _ in range(n_steps):
        v = v + 0.5 * dt * f / m
        x = x + dt * v
        f = -k * (x - center)
        v = v + 0.5 * dt * f / m
    return x, v


def test_global_interaction_through_simulate_and_grad():
    k, dt, n_steps = 50.0, 0.002, 400
    system = restrained_particle(k, n_atoms=2)
    traj = md.simulate(system, md.VelocityVerlet(dt), n_steps)
    x_ref, v_ref = velocity_verlet_numpy(np.asarray(system.coords), np.asarray(system.velocities), 2.0, k,
                                         np.ones(3), dt, n_steps)
    np.testing.assert_allclose(np.asarray(traj.coords), x_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(traj.velocities), v_ref, rtol=1e-10, atol=1e-12)
    # and the exact harmonic oscillator, to the integrator's O(dt²) accuracy
    omega, t = math.sqrt(k / 2.0), dt * n_steps
    x0, v0 = np.asarray(system.coords) - 1.0, np.asarray(system.velocities)
    exact = 1.0 + x0 * math.cos(omega * t) + v0 / omega * math.sin(omega * t)
    np.testing.assert_allclose(np.asarray(traj.coords), exact, atol=1e-4)

    # d(final x)/dk through the run against central finite differences
    def final_x(k_value):
        s = eqx.tree_at(lambda s: s.global_inters[0].k, system, k_value)
        return md.simulate(s, md.VelocityVerlet(dt), n_steps).coords[0, 0]

    grad = float(jax.jit(jax.grad(final_x))(jnp.asarray(k)))
    h = 1e-4
    fd = (float(final_x(jnp.asarray(k + h))) - float(final_x(jnp.asarray(k - h)))) / (2 * h)
    assert abs(fd) > 1e-3
    assert grad == pytest.approx(fd, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# FixedAtoms and degrees of freedom


FIXED = [0, 3]
KB_OPENMM = 0.008314462618  # kJ/mol/K


def fixed_atoms_system(remove_com_motion=False, constraints=md.FixedAtoms(FIXED), dims=3):
    n = 6
    rng = np.random.default_rng(121)
    coords = random_coords(n, dims, 121, min_dist=0.33)
    atoms = md.Atoms(rng.uniform(10.0, 20.0, n), sigma=np.full(n, 0.3), epsilon=np.ones(n))
    return md.System(atoms, coords, boundary_for("pbc", dims), velocities=rng.normal(size=(n, dims)),
                     pairwise_inters=[md.LennardJones(cutoff=md.ShiftedPotentialCutoff(RC))],
                     constraints=constraints, remove_com_motion=remove_com_motion,
                     loggers={"t": md.TemperatureLogger(5), "v": md.VelocitiesLogger(5)})


def test_fixed_atoms_do_not_move():
    system = fixed_atoms_system()
    traj = md.simulate(system, md.VelocityVerlet(0.002), 20)
    start, end = np.asarray(system.coords), np.asarray(traj.coords)
    np.testing.assert_array_equal(end[FIXED], start[FIXED])  # exactly
    np.testing.assert_array_equal(np.asarray(traj.velocities)[FIXED], 0.0)
    np.testing.assert_array_equal(np.asarray(traj.logs["v"])[:, FIXED], 0.0)
    mobile = [i for i in range(6) if i not in FIXED]
    assert np.linalg.norm(end[mobile] - start[mobile], axis=-1).min() > 1e-3  # the others do move
    # the mobile atoms follow the same forces as without constraints, at first: one step agrees
    free = md.simulate(fixed_atoms_system(constraints=md.NoConstraints()), md.VelocityVerlet(0.002), 1)
    one = md.simulate(system, md.VelocityVerlet(0.002), 1)
    np.testing.assert_allclose(np.asarray(one.coords)[mobile], np.asarray(free.coords)[mobile], rtol=1e-12)


def test_fixed_atoms_stay_fixed_with_com_motion_removed():
    """FixedAtoms promises zero velocities for its atoms; removing the centre-of-mass motion must
    not hand them one (they would then carry kinetic energy into every temperature)."""
    system = fixed_atoms_system(remove_com_motion=True)
    traj = md.simulate(system, md.VelocityVerlet(0.002), 20)
    np.testing.assert_array_equal(np.asarray(traj.coords)[FIXED], np.asarray(system.coords)[FIXED])
    np.testing.assert_array_equal(np.asarray(traj.velocities)[FIXED], 0.0)


@pytest.mark.parametrize("dims", [2, 3])
def test_degrees_of_freedom(dims):
    n, f = 6, len(FIXED)
    assert fixed_atoms_system(constraints=md.NoConstraints(), dims=dims).degrees_of_freedom == n * dims
    assert fixed_atoms_system(dims=dims).degrees_of_freedom == n * dims - dims * f
    assert fixed_atoms_system(remove_com_motion=True, dims=dims).degrees_of_freedom == n * dims - dims * f - dims
    assert fixed_atoms_system(remove_com_motion=True, constraints=md.NoConstraints(),
                              dims=dims).degrees_of_freedom == n * dims - dims
    with pytest.raises(ValueError, match="listed twice"):
        md.FixedAtoms([1, 2, 1])


@pytest.mark.parametrize(("remove_com_motion", "n_dof"), [(False, 18 - 6), (True, 18 - 6 - 3)])
def test_temperature_logger_uses_the_degrees_of_freedom(remove_com_motion, n_dof):
    system = fixed_atoms_system(remove_com_motion=remove_com_motion)
    assert system.degrees_of_freedom == n_dof and system.units.boltzmann == KB_OPENMM
    traj = md.simulate(system, md.VelocityVerlet(0.002), 20)
    m = np.asarray(system.atoms.mass)
    v = np.asarray(traj.logs["v"])  # (4, N, 3)
    kinetic = 0.5 * np.sum(m[None, :, None] * v**2, axis=(1, 2))
    expected = 2 * kinetic / (n_dof * KB_OPENMM)
    assert expected.min() > 1.0
    np.testing.assert_allclose(np.asarray(traj.logs["t"]), expected, rtol=1e-12)
    # md.temperature with the same count agrees; the default N·D count does not
    t_last = md.temperature(system.atoms.mass, traj.velocities, KB_OPENMM, system.degrees_of_freedom)
    assert float(t_last) == pytest.approx(expected[-1], rel=1e-12)
    assert float(md.temperature(system.atoms.mass, traj.velocities, KB_OPENMM)) == pytest.approx(
        expected[-1] * n_dof / 18, rel=1e-12)
