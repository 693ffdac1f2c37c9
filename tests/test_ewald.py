"""Ewald summation, smooth PME and the Lennard-Jones dispersion correction against OpenMM's
NonbondedForce (Reference platform, double precision) on small random systems built with the
openmm API: energies and forces of EwaldDirect + PME (or EwaldSum) + NonbondedExceptions with
exceptions, exclusions and a net charge; OpenMM's choice of α, grid and kmax; the dispersion
correction with and without a switch, and its gradients per atom; gradients with respect to a
charge and a box side against finite differences; the compiled EwaldDirect kernel against the
pure-JAX one."""

from __future__ import annotations

import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md
from diffmd.forces.dispersion_correction import switch_integrals
from diffmd.kernels import build, compiled, pairs

jax.config.update("jax_enable_x64", True)

openmm = pytest.importorskip("openmm")
unit = pytest.importorskip("openmm.unit")

CUTOFF = 1.0  # nm
BOX = (2.6, 2.8, 3.0)  # nm
jit_ef = jax.jit(md.energy_and_forces)
jit_energy = jax.jit(md.potential_energy)


# ---- random charged systems, in OpenMM and in diffmd --------------------------------------------


def _charged(seed, n=120, net_charge=0.0):
    """n atoms as n/2 close pairs (0.1–0.15 nm apart, each pair an exception: a third plain
    exclusions, the rest scaled 1-4-like with Lennard-Jones parameters of their own) on a
    jittered lattice in BOX; charges in [−1, 1] summing to `net_charge`."""
    rng = np.random.default_rng(seed)
    box = np.asarray(BOX)
    m = int(np.ceil((n // 2) ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3)[: n // 2]
    first = (grid + 0.5) * box / m + rng.uniform(-0.08, 0.08, grid.shape)
    direction = rng.normal(size=first.shape)
    second = first + rng.uniform(0.1, 0.15, (len(first), 1)) * direction / np.linalg.norm(direction, axis=1)[:, None]
    coords = np.empty((n, 3))
    coords[0::2], coords[1::2] = first, second
    charges = rng.uniform(-1, 1, n)
    charges += (net_charge - charges.sum()) / n
    exceptions = []
    for k in range(n // 2):
        i, j = 2 * k, 2 * k + 1
        if k % 3 == 0:
            exceptions.append((i, j, 0.0, 0.3, 0.0))
        else:
            exceptions.append((i, j, charges[i] * charges[j] / 1.2, rng.uniform(0.08, 0.12), rng.uniform(0.1, 0.5)))
    return coords, charges, exceptions


def _openmm(coords, charges, exceptions, method, alpha=None, grid=None, tolerance=5e-4, box=BOX):
    """Energy (kJ/mol), forces (kJ/mol/nm) and the NonbondedForce's parameters in the Context."""
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in np.diag(box)))
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(method)
    force.setCutoffDistance(CUTOFF)
    force.setEwaldErrorTolerance(tolerance)
    force.setUseDispersionCorrection(False)
    if alpha is not None:
        force.setPMEParameters(alpha, *grid)
    for q in charges:
        system.addParticle(1.0)
        force.addParticle(float(q), 0.3, 0.0)
    for i, j, qq, sigma, epsilon in exceptions:
        force.addException(i, j, float(qq), float(sigma), float(epsilon))
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(unit.Quantity([openmm.Vec3(*x) for x in coords], unit.nanometer))
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = np.asarray(state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))
    return energy, forces, force, context


def _diffmd(coords, charges, exceptions, alpha, reciprocal, box=BOX):
    """EwaldDirect + the reciprocal term + NonbondedExceptions (whose pairs leave the direct sum
    and are the reciprocal term's `excluded`)."""
    pairs_ = np.array([e[:2] for e in exceptions])
    values = np.array([e[2:] for e in exceptions])
    exceptions_term = md.NonbondedExceptions(indices=pairs_, charge_prod=values[:, 0], sigma=values[:, 1],
                                             epsilon=values[:, 2])
    return md.System(
        md.Atoms(mass=np.ones(len(charges)), charge=jnp.asarray(charges)), jnp.asarray(coords),
        md.RectangularBoundary(jnp.asarray(box)),
        pairwise_inters=[md.EwaldDirect(alpha=alpha, distance=CUTOFF)], bonded_inters=[exceptions_term],
        global_inters=[reciprocal(pairs_)])


def _assert_agree(system, reference, e_rtol=1e-11, f_atol=1e-9):  # measured: 1e-13, 3e-12 kJ/mol/nm
    e_ref, f_ref = reference
    energy, forces = jit_ef(system)
    assert abs(e_ref) > 10.0 and np.abs(f_ref).max() > 10.0  # a real comparison
    assert float(energy) == pytest.approx(e_ref, rel=e_rtol, abs=0)
    np.testing.assert_allclose(np.asarray(forces), f_ref, rtol=0, atol=f_atol)
    return float(energy), np.asarray(forces)


# ---- OpenMM's parameters ----------------------------------------------------------------------


@pytest.mark.parametrize("cutoff, tolerance, box", [(1.0, 5e-4, (2.6, 2.8, 3.0)), (0.9, 1e-5, (3.1, 2.2, 4.7)),
                                                    (1.2, 2e-3, (5.0, 5.0, 5.0)), (0.8, 1e-6, (1.9, 7.3, 2.41))])
def test_pme_parameters_equal_openmm(cutoff, tolerance, box):
    """α and the grid equal NonbondedForce.getPMEParametersInContext exactly."""
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in np.diag(box)))
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.PME)
    force.setCutoffDistance(cutoff)
    force.setEwaldErrorTolerance(tolerance)
    for _ in range(2):
        system.addParticle(1.0)
        force.addParticle(0.0, 0.3, 0.0)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    alpha, nx, ny, nz = force.getPMEParametersInContext(context)
    got_alpha, got_grid = md.ewald_parameters("PME", cutoff, tolerance, box)
    assert got_alpha == alpha and got_grid == (nx, ny, nz)
    assert md.ewald_parameters("pme", cutoff, tolerance, md.RectangularBoundary(jnp.asarray(box))) == (alpha, got_grid)


def test_ewald_parameters_refuse_bad_input():
    with pytest.raises(ValueError, match="'PME' or 'Ewald'"):
        md.ewald_parameters("LJPME", 1.0, 5e-4, BOX)
    with pytest.raises(ValueError, match="three box sides"):
        md.ewald_parameters("PME", 1.0, 5e-4, (3.0, 3.0))


# ---- PME and Ewald against OpenMM ---------------------------------------------------------------


@pytest.mark.parametrize("net_charge", [0.0, 2.5], ids=["neutral", "net-charge"])
def test_pme_equals_openmm(net_charge):
    """EwaldDirect + PME + NonbondedExceptions = NonbondedForce(PME) with the same α and grid
    (setPMEParameters), exceptions and exclusions included; and OpenMM's own choice for a
    tolerance."""
    coords, charges, exceptions = _charged(1, net_charge=net_charge)
    alpha, grid = 3.2, (24, 25, 27)
    reference = _openmm(coords, charges, exceptions, openmm.NonbondedForce.PME, alpha, grid)[:2]
    system = _diffmd(coords, charges, exceptions, alpha, lambda p: md.PME(alpha=alpha, grid=grid, excluded=p))
    _assert_agree(system, reference)
    # OpenMM's defaults for tolerance 5e-4, through ewald_parameters
    alpha, grid = md.ewald_parameters("PME", CUTOFF, 5e-4, BOX)
    reference = _openmm(coords, charges, exceptions, openmm.NonbondedForce.PME)[:2]
    system = _diffmd(coords, charges, exceptions, alpha, lambda p: md.PME(alpha=alpha, grid=grid, excluded=p))
    _assert_agree(system, reference)


def test_pme_terms_separately():
    """The reciprocal sum alone (OpenMM: the reciprocal-space force group, which holds the
    reciprocal sum, the self energy and the neutralising background; its excluded-pair
    correction is direct space)."""
    coords, charges, exceptions = _charged(2, net_charge=-1.0)
    alpha, grid = 2.9, (21, 22, 24)
    _, _, force, context = _openmm(coords, charges, exceptions, openmm.NonbondedForce.PME, alpha, grid)
    force.setReciprocalSpaceForceGroup(1)
    context.reinitialize(preserveState=True)
    state = context.getState(getEnergy=True, getForces=True, groups={1})
    e_ref = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    f_ref = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    system = md.System(md.Atoms(mass=np.ones(len(charges)), charge=jnp.asarray(charges)), jnp.asarray(coords),
                       md.RectangularBoundary(jnp.asarray(BOX)), global_inters=[md.PME(alpha=alpha, grid=grid)])
    _assert_agree(system, (e_ref, np.asarray(f_ref)))


def test_ewald_sum_equals_openmm():
    """EwaldDirect + EwaldSum + NonbondedExceptions = NonbondedForce(Ewald), with α and kmax from
    ewald_parameters (OpenMM sets no others for Ewald); kmax − 2 and kmax + 2 do not agree, so
    the kmax rule is checked too."""
    coords, charges, exceptions = _charged(3, n=80, net_charge=1.0)
    tolerance = 2e-3
    alpha, kmax = md.ewald_parameters("Ewald", CUTOFF, tolerance, BOX)
    e_ref, f_ref = _openmm(coords, charges, exceptions, openmm.NonbondedForce.Ewald, tolerance=tolerance)[:2]
    build = lambda k: _diffmd(coords, charges, exceptions, alpha,  # noqa: E731
                              lambda p: md.EwaldSum(alpha=alpha, kmax=k, excluded=p))
    _assert_agree(build(kmax), (e_ref, f_ref))
    for other in (tuple(k - 2 for k in kmax), tuple(k + 2 for k in kmax)):
        assert abs(float(jit_energy(build(other))) - e_ref) > 1e-7 * abs(e_ref)


@pytest.mark.slow  # ~6 s: a converged Ewald sum
def test_pme_and_ewald_sum_agree_at_high_accuracy():
    """Two methods, one energy: at a tight tolerance PME and the plain sum agree closely."""
    coords, charges, _ = _charged(4, n=60)
    boundary = md.RectangularBoundary(jnp.asarray(BOX))
    atoms = md.Atoms(mass=np.ones(len(charges)), charge=jnp.asarray(charges))
    alpha = 2.5
    pme = md.PME(alpha=alpha, grid=(80, 84, 90)).energy(jnp.asarray(coords), boundary, atoms)
    ewald = md.EwaldSum(alpha=alpha, kmax=(12, 12, 13)).energy(jnp.asarray(coords), boundary, atoms)
    assert float(pme) == pytest.approx(float(ewald), rel=5e-8)  # measured 1.6e-8 (converged Ewald sum: 1e-14)


# ---- gradients ----------------------------------------------------------------------------------


def test_gradients_with_respect_to_a_charge_and_a_box_side():
    """d E / d q_k and d E / d L_x (coordinates fixed) of EwaldDirect + PME + exceptions by
    autodiff against central differences; and forces are −∇E (OpenMM's, above)."""
    coords, charges, exceptions = _charged(5, net_charge=0.7)
    alpha, grid = 3.0, (22, 24, 25)
    system = _diffmd(coords, charges, exceptions, alpha, lambda p: md.PME(alpha=alpha, grid=grid, excluded=p))

    def energy(q, sides):
        live = eqx.tree_at(lambda s: (s.atoms.per_atom["charge"], s.boundary.sides), system, (q, sides))
        return md.potential_energy(live)

    q0, sides0 = system.atoms.per_atom["charge"], system.boundary.sides
    grad_q, grad_sides = jax.jit(jax.grad(energy, argnums=(0, 1)))(q0, sides0)
    value = jax.jit(energy)
    k, h = 7, 1e-4
    dq = jnp.zeros_like(q0).at[k].set(h)
    fd_q = (value(q0 + dq, sides0) - value(q0 - dq, sides0)) / (2 * h)
    assert float(grad_q[k]) == pytest.approx(float(fd_q), rel=1e-9)  # measured 1.4e-11
    h = 1e-5
    for d in range(3):
        dl = jnp.zeros(3).at[d].set(h)
        fd_l = (value(q0, sides0 + dl) - value(q0, sides0 - dl)) / (2 * h)
        assert float(grad_sides[d]) == pytest.approx(float(fd_l), rel=2e-8)  # measured ≤ 2.4e-9
        assert abs(float(grad_sides[d])) > 1.0


def test_pme_float32():
    """In float32 the energy is float32 and close to float64's."""
    coords, charges, _ = _charged(6, n=60)
    term = md.PME(alpha=3.0, grid=(20, 20, 24))
    values = []
    for dtype in (jnp.float32, jnp.float64):
        atoms = md.Atoms(mass=jnp.ones(len(charges), dtype), charge=jnp.asarray(charges, dtype))
        boundary = md.RectangularBoundary(jnp.asarray(BOX, dtype))
        values.append(jax.jit(term.energy)(jnp.asarray(coords, dtype), boundary, atoms))
    assert values[0].dtype == jnp.float32
    assert float(values[0]) == pytest.approx(float(values[1]), rel=1e-5)


def test_reciprocal_terms_refuse_other_boxes():
    atoms = md.Atoms(mass=np.ones(2), charge=np.array([1.0, -1.0]), sigma=np.full(2, 0.3), epsilon=np.ones(2))
    coords = jnp.array([[0.0, 0, 0], [0.5, 0, 0]])
    for term in (md.PME(alpha=3.0, grid=(8, 8, 8)), md.EwaldSum(alpha=3.0, kmax=(3, 3, 3)),
                 md.DispersionCorrection.from_parameters(atoms.sigma, atoms.epsilon, 1.0)):
        with pytest.raises(ValueError, match="3-D rectangular periodic box"):
            term.energy(coords, md.NoBoundary(3), atoms)
        with pytest.raises(ValueError, match="3-D rectangular periodic box"):
            term.energy(coords[:, :2], md.RectangularBoundary(jnp.array([3.0, 3.0])), atoms)


# ---- the dispersion correction --------------------------------------------------------------------


def _lj_atoms(seed, n=100):
    """σ, ε of n atoms: four kinds (classes of many atoms), some with ε = 0, and a few atoms of
    their own."""
    rng = np.random.default_rng(seed)
    kinds = np.array([[0.32, 0.65], [0.25, 0.2], [0.1, 0.0], [0.4, 1.1]])
    sigma, epsilon = kinds[rng.integers(0, 4, n)].T.copy()
    sigma[:5], epsilon[:5] = rng.uniform(0.2, 0.4, 5), rng.uniform(0.1, 1.0, 5)
    return sigma, epsilon


@pytest.mark.parametrize("switch", [None, 0.85, 0.3], ids=["plain", "switch-0.85", "switch-0.3"])
def test_dispersion_correction_equals_openmm(switch):
    """OpenMM's energy of atoms farther apart than the cutoff, without charges, is the
    correction alone (C/V); diffmd's within 2e-10 (measured: 2e-15 without a switch; with one,
    5e-11, OpenMM's closed form of the switched integral cancelling terms ~1/(rc − rs)⁵ apart —
    diffmd's quadrature is checked against exact arithmetic below)."""
    sigma, epsilon = _lj_atoms(7)
    n = len(sigma)
    spacing = 1.05 * CUTOFF
    shape = (5, 5, 4)
    box = np.array(shape) * spacing
    coords = (np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3) + 0.5) * spacing
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row) for row in np.diag(box)))
    force = openmm.NonbondedForce()
    force.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(CUTOFF)
    force.setUseDispersionCorrection(True)
    if switch is not None:
        force.setUseSwitchingFunction(True)
        force.setSwitchingDistance(switch)
    for k in range(n):
        system.addParticle(1.0)
        force.addParticle(0.0, float(sigma[k]), float(epsilon[k]))
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(unit.Quantity([openmm.Vec3(*x) for x in coords], unit.nanometer))
    e_ref = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    term = md.DispersionCorrection.from_parameters(sigma, epsilon, CUTOFF, switch)
    assert int(term.classes.array.max()) + 1 == 9  # four kinds, five atoms of their own
    atoms = md.Atoms(mass=np.ones(n), sigma=sigma, epsilon=epsilon)
    energy = term.energy(jnp.asarray(coords), md.RectangularBoundary(jnp.asarray(box)), atoms)
    assert e_ref < -0.05
    assert float(energy) == pytest.approx(e_ref, rel=2e-10, abs=0)


def test_switch_integrals_against_closed_forms():
    """The quadrature of the switched integrals against the closed form of ∫ r^p (1 − S) dr
    in exact rational arithmetic (p = −10; p = −4 has a logarithm: compared with a fine
    quadrature instead)."""
    from fractions import Fraction
    rs, rc = Fraction(17, 20), Fraction(1)
    h = rc - rs
    # 1 − S = Σ_k c_k t^k, t = (r − rs)/h: ∫ r^-10 t^k dr by the binomial expansion of (r − rs)^k
    coefficients = {3: 10, 4: -15, 5: 6}
    total = Fraction(0)
    for k, c in coefficients.items():
        for m in range(k + 1):
            binom = math.comb(k, m) * (-rs) ** (k - m)  # (r − rs)^k = Σ_m C(k,m) r^m (−rs)^(k−m)
            p = m - 10
            total += c * binom / h**k * (rc ** (p + 1) - rs ** (p + 1)) / (p + 1)
    i12, i6 = switch_integrals(float(rs), float(rc))
    assert i12 == pytest.approx(float(total), rel=1e-13)
    x, w = np.polynomial.legendre.leggauss(200)
    r = 0.85 + 0.15 * (x + 1) / 2
    t = (r - 0.85) / 0.15
    assert i6 == pytest.approx(float(np.sum(0.075 * w * t**3 * (10 - 15 * t + 6 * t * t) / r**4)), rel=1e-13)


def test_dispersion_correction_gradients_are_exact_per_atom():
    """The gradient with respect to every atom's σ and ε, and the box, equals that of the same
    energy written as a mean over all atom pairs i ≤ j (which the class formula equals while the
    atoms of a class agree)."""
    sigma, epsilon = _lj_atoms(8, n=40)
    box = jnp.array([3.1, 3.3, 3.6])
    term = md.DispersionCorrection.from_parameters(sigma, epsilon, CUTOFF, 0.9)
    i12, i6 = switch_integrals(0.9, CUTOFF)

    def per_pair(sig, eps, sides):
        n = sig.shape[0]
        s = 0.5 * (sig[:, None] + sig[None, :])
        e = jnp.where(jnp.eye(n, dtype=bool), eps[:, None], jnp.sqrt(eps[:, None] * eps[None, :] + 1e-300))
        s6 = s**6
        f = e * (s6 * s6 / (9 * CUTOFF**9) - s6 / (3 * CUTOFF**3) + s6 * s6 * i12 - s6 * i6)
        mean = jnp.sum(jnp.triu(f)) / (n * (n + 1) / 2)
        return 8 * math.pi * n**2 * mean / jnp.prod(sides)

    def classes(sig, eps, sides):
        atoms = md.Atoms(mass=jnp.ones(len(sig)), sigma=sig, epsilon=eps)
        return term.energy(jnp.zeros((len(sig), 3)), md.RectangularBoundary(sides), atoms)

    args = (jnp.asarray(sigma), jnp.asarray(epsilon), box)
    value, grads = jax.value_and_grad(classes, argnums=(0, 1, 2))(*args)
    want_value, want = jax.value_and_grad(per_pair, argnums=(0, 1, 2))(*args)
    assert float(value) == pytest.approx(float(want_value), rel=1e-12)
    keep = epsilon > 0  # √ε has no finite derivative at 0 (both forms: zero, or huge)
    np.testing.assert_allclose(grads[0], want[0], rtol=1e-10, atol=1e-12 * float(jnp.max(jnp.abs(want[0]))))
    np.testing.assert_allclose(grads[1][keep], want[1][keep], rtol=1e-10)
    np.testing.assert_allclose(grads[2], want[2], rtol=1e-12)
    np.testing.assert_allclose(grads[2], -float(value) / box, rtol=1e-12)


# ---- the compiled EwaldDirect kernel ---------------------------------------------------------------


@pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")
def test_ewald_direct_runs_compiled_and_equals_pure_jax():
    """No fallback: the pair function (erfc and its derivative) is translated; energies, forces,
    reverse-mode gradients (coordinates, charges, α, box) and a forward-mode tangent equal the
    pure-JAX kernel's, over a neighbor list."""
    coords, charges, exceptions = _charged(9, n=200)
    system = md.System(md.Atoms(mass=np.ones(len(charges)), charge=jnp.asarray(charges)), jnp.asarray(coords),
                       md.RectangularBoundary(jnp.asarray(BOX)),
                       pairwise_inters=[md.EwaldDirect(alpha=jnp.asarray(3.1), distance=CUTOFF)],
                       exclusions=[e[:2] for e in exceptions], neighbor_finder=md.DistanceNeighborFinder(cutoff=1.2))
    excluded = system.excluded_pairs().array
    finder = system.neighbor_finder
    neighbors = finder.build(system.coords, system.boundary, excluded,
                             finder.initial_capacity(system.coords, system.boundary, excluded))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused = pairs.fuse(system.pairwise_inters, system.atoms, system.coords.dtype)
        assert isinstance(pairs._kernel(fused, system.coords, system.boundary), compiled.Kernel)

    def loss(s, derivatives):
        energy, forces = md.energy_and_forces(s, s.coords, neighbors, derivatives=derivatives)
        return energy + 1e-2 * jnp.sum(forces**2)

    leaves = lambda s: (s.coords, s.atoms.per_atom["charge"], s.pairwise_inters[0].alpha, s.boundary.sides)  # noqa
    grad = lambda derivatives: leaves(jax.jit(jax.grad(lambda s: loss(s, derivatives)))(system))  # noqa: E731
    want = grad("any")
    for got, ref in zip(grad("reverse"), want):
        np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11 * float(jnp.max(jnp.abs(ref))))
    tangent = jax.tree_util.tree_map(lambda x: jnp.ones_like(x) if eqx.is_inexact_array(x) else x, system)

    def jvp(derivatives):
        return eqx.filter_jit(lambda s, t: eqx.filter_jvp(lambda u: loss(u, derivatives), (s,), (t,)))(system, tangent)

    (value, tangent_out), (value_ref, tangent_ref) = jvp("forward"), jvp("any")
    assert float(value) == pytest.approx(float(value_ref), rel=1e-12)
    assert float(tangent_out) == pytest.approx(float(tangent_ref), rel=1e-11)
