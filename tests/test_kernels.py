"""The compiled pair kernels (`diffmd.kernels`: C++ generated from each pair function's traced
energy, all pairwise terms that share rows fused into one kernel) equal the pure-JAX kernel:
energies, forces, reverse-mode cotangents (coordinates, per-atom parameters, the terms' float
fields, box) and forward-mode tangents, in 2-D and 3-D, float32 and float64, with every cutoff
and box, for the built-in pair potentials and user-defined ones, and through whole simulations.
The generated code's elementary functions (`_native/vmath.h`, reached through
`kernels.codegen`) agree with numpy, and a pair function the translation does not cover falls
back to the pure-JAX kernel with a warning."""

import ctypes
import hashlib
import re
import subprocess
import sys
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

import diffmd as md
from diffmd.energy import energy_and_forces
from diffmd.forces.base import Params
from diffmd.forces.lennard_jones import lennard_jones
from diffmd.kernels import build, codegen, compiled, pairs

CUTOFFS = [md.NoCutoff(), md.PlainCutoff(0.8), md.ShiftedPotentialCutoff(0.8), md.SwitchedCutoff(0.8, 0.6)]


def test_kernels_are_built_wherever_a_compiler_exists():
    """The test environment installs a toolchain (the `native` extra): a broken build must fail
    here rather than silently fall back to the slower kernel."""
    if build.compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    assert build.available()


needs_native = pytest.mark.skipif(not build.available(), reason="compiled kernels unavailable")

# Per-atom parameters, drawn uniformly (charges with a random sign).
PARAMETER_RANGES = {"sigma": (0.2, 0.3), "epsilon": (0.5, 1.5), "charge": (0.2, 0.6),
                    "A": (800.0, 1200.0), "B": (9.0, 11.0), "C": (5e-3, 1.5e-2)}


def _system(dtype, cutoff=None, n_dims=3, periodic=True, n=60, seed=0, terms=None, params=("sigma", "epsilon"),
            ranges=None):
    """A jittered lattice of `n` atoms with the per-atom `params`, and the pair `terms`
    (default: one LennardJones with `cutoff`)."""
    rng = np.random.default_rng(seed)
    side = (n / 10.0) ** (1 / n_dims)
    # jittered lattice: no near-coincident pairs, so forces stay O(1) and comparisons are sharp
    m = int(np.ceil(n ** (1 / n_dims)))
    grid = np.stack(np.meshgrid(*[np.arange(m)] * n_dims, indexing="ij"), -1).reshape(-1, n_dims)[:n]
    coords = (grid + 0.5) * (side / m) + rng.uniform(-0.05, 0.05, (n, n_dims))
    if not periodic:
        coords = coords + 5.0  # far from the origin: nothing relies on wrapping
    ranges = {**PARAMETER_RANGES, **(ranges or {})}
    values = {}
    for name in params:
        values[name] = rng.uniform(*ranges[name], n)
        if name == "charge":
            values[name] = values[name] * rng.choice([-1.0, 1.0], n)
    atoms = md.Atoms(mass=jnp.ones(n, dtype), **{k: jnp.asarray(v, dtype) for k, v in values.items()})
    boundary = md.RectangularBoundary(jnp.asarray(side * np.linspace(1.0, 1.1, n_dims), dtype)) if periodic \
        else md.NoBoundary(n_dims)
    terms = (md.LennardJones(cutoff=cutoff),) if terms is None else tuple(terms)
    return md.System(atoms=atoms, coords=jnp.asarray(coords, dtype), boundary=boundary, pairwise_inters=terms)


def _loss_and_values(system, derivatives):
    energy, forces = energy_and_forces(system, derivatives=derivatives)
    weights = jnp.linspace(-1.0, 1.0, forces.size).reshape(forces.shape)
    return 0.3 * energy + jnp.sum(weights * forces) + 1e-2 * jnp.sum(forces**2), (energy, forces)


def _loss(system, derivatives):
    return _loss_and_values(system, derivatives)[0]


def _tangent(tree, seed=1):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype) if eqx.is_inexact_array(a) else a, tree)


def _close(a, b, rtol, err_msg=""):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=rtol * float(np.max(np.abs(b))),
                               err_msg=err_msg)


def _leaves(tree):
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def _check_against_pure_jax(system, rtol):
    """Energy and forces, the gradient of a loss of both with respect to every float in the
    System (coordinates, per-atom parameters, the terms' float fields, box) and its jax.jvp:
    the compiled kernels (derivatives "reverse" and "forward") against the pure-JAX kernel
    ("any"). Values come with the derivatives (`has_aux`), and the jvp's reference is the
    pure-JAX gradient along the tangent: fewer reference passes (each compiles its own ops)."""
    value_and_grad = jax.value_and_grad(_loss_and_values, has_aux=True)
    (_, reference), grad_ref = value_and_grad(system, "any")
    (_, values), grad = value_and_grad(system, "reverse")
    tangent = _tangent(system)
    (_, forward_values), jvp = eqx.filter_jvp(lambda s: _loss_and_values(s, "forward"), (system,), (tangent,))
    for derivatives, got_values in (("reverse", values), ("forward", forward_values)):
        for got, want in zip(got_values, reference):
            assert got.dtype == want.dtype
            _close(got, want, rtol, err_msg=derivatives)
    for (path, got), (_, want) in zip(_leaves(grad), _leaves(grad_ref), strict=True):
        _close(got, want, rtol, err_msg=path)
    # the tangent's leaves that are arrays (float fields given as Python floats are constants)
    jvp_ref = sum(np.vdot(np.asarray(g, np.float64), np.asarray(t, np.float64))
                  for (_, g), (_, t) in zip(_leaves(grad_ref), _leaves(tangent), strict=True)
                  if eqx.is_inexact_array(t))
    _close(jvp[0], jvp_ref, rtol, err_msg="jvp")
    return grad_ref


def _kernel_of(system):
    """The compiled kernel `energy_and_forces(..., derivatives="reverse")` takes for the
    system's pairwise terms (None: the pure-JAX kernel)."""
    fused = pairs.fuse(system.pairwise_inters, system.atoms, system.coords.dtype)
    return pairs._kernel(fused, system.coords, system.boundary)


def _covering_cases():
    """Every cutoff in float64 3-D periodic, plus rows such that every pair of values of any two
    of (cutoff, dtype, n_dims, periodic) occurs (a pairwise covering of the 32-case product)."""
    no_cut, plain, shifted, switched = CUTOFFS
    f64, f32 = jnp.float64, jnp.float32
    rows = [(cutoff, f64, 3, True) for cutoff in CUTOFFS] + [
        (no_cut, f32, 2, False),
        (plain, f64, 2, False), (plain, f32, 3, True),
        (shifted, f32, 3, False), (shifted, f64, 2, True),
        (switched, f32, 2, False),
    ]
    axes = list(zip(*rows))
    for a in range(4):  # the covering holds: every pair of axes shows every combination of values
        for b in range(a + 1, 4):
            values_a = {id(v) if a == 0 else v for v in axes[a]}
            values_b = {id(v) if b == 0 else v for v in axes[b]}
            seen = {(id(r[a]) if a == 0 else r[a], id(r[b]) if b == 0 else r[b]) for r in rows}
            assert len(seen) == len(values_a) * len(values_b), (a, b)
    return [pytest.param(*row, id=f"{type(row[0]).__name__}-{row[3]}-{row[2]}-{np.dtype(row[1]).name}")
            for row in rows]


@needs_native
@pytest.mark.parametrize("cutoff, dtype, n_dims, periodic", _covering_cases())
def test_compiled_kernel_equals_pure_jax(dtype, n_dims, periodic, cutoff):
    """Energies, forces, reverse-mode cotangents of coordinates, σ, ε and box (and every other
    float of the System), forward-mode tangents."""
    system = _system(dtype, cutoff, n_dims, periodic)
    assert isinstance(_kernel_of(system), compiled.Kernel)
    grad_ref = _check_against_pure_jax(system, 1e-11 if dtype == jnp.float64 else 2e-4)
    must_move = [grad_ref.coords, grad_ref.atoms.sigma, grad_ref.atoms.epsilon]
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in must_move + ([grad_ref.boundary.sides] if periodic else []))


@needs_native
def test_compiled_kernel_under_vmap_equals_a_loop():
    systems = [_system(jnp.float64, md.ShiftedPotentialCutoff(0.8), seed=s) for s in range(3)]
    leaves = lambda s: (s.coords, s.atoms.per_atom["sigma"], s.atoms.per_atom["epsilon"])  # noqa: E731
    rebuild = lambda values: eqx.tree_at(leaves, systems[0], values)  # noqa: E731
    stacked = tuple(jnp.stack(parts) for parts in zip(*map(leaves, systems)))
    grads = jax.vmap(jax.grad(lambda values: _loss(rebuild(values), "reverse")))(stacked)
    tangents = jax.vmap(lambda values: jax.jvp(lambda v: _loss(rebuild(v), "forward"), (values,), (values,))[1])(stacked)
    for k, system in enumerate(systems):
        for got, want in zip(grads, leaves(jax.grad(_loss)(system, "any"))):
            _close(got[k], want, 1e-11)
        _close(tangents[k], jax.jvp(lambda v: _loss(rebuild(v), "any"), (leaves(system),), (leaves(system),))[1], 1e-11)


@needs_native
def test_every_lennard_jones_variant_is_compiled():
    """The variants the hand-written LJ kernel did not cover (shifted-force cutoff, force cap,
    geometric mixing, soft spheres) get compiled kernels too, with the same answers in every
    derivative mode."""
    system = _system(jnp.float64, md.ShiftedForceCutoff(0.8))
    others = [POTENTIALS[name][0][0] for name in ("lj-force-cap", "lj-geometric", "soft-sphere")]  # kernels shared
    for other in [system.pairwise_inters[0]] + others:
        variant = eqx.tree_at(lambda s: s.pairwise_inters, system, (other,))
        assert isinstance(_kernel_of(variant), compiled.Kernel), other
    for derivatives in ("reverse", "forward"):
        _close(energy_and_forces(system, derivatives=derivatives)[1], energy_and_forces(system)[1], 1e-12)


def test_unknown_derivatives_mode_is_refused():
    with pytest.raises(ValueError, match="derivatives must be one of"):
        energy_and_forces(_system(jnp.float64, md.NoCutoff()), derivatives="backward")


class _PureJaxLennardJones(md.LennardJones):
    """The same interaction under another type, which the reference run keeps on the pure-JAX
    kernel (see `test_gradients_through_simulations_equal_the_pure_jax_kernels`)."""


def _fluid(sigma, lj_type=md.LennardJones):
    grid = (np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * 1.1
    coords = jnp.asarray(grid + np.random.default_rng(0).normal(0, 0.05, grid.shape))
    velocities = md.random_velocities(jax.random.PRNGKey(0), jnp.ones(64), 0.5, md.REDUCED_UNITS, dtype=jnp.float64)
    return md.System(
        md.Atoms.uniform(64, mass=1.0, sigma=sigma, epsilon=1.0), coords, md.CubicBoundary(4.4),
        velocities=velocities, units=md.REDUCED_UNITS,
        pairwise_inters=(lj_type(cutoff=md.ShiftedPotentialCutoff(1.5), use_neighbors=True),),
        neighbor_finder=md.DistanceNeighborFinder(1.8), loggers={"pe": md.PotentialEnergyLogger(4)},
    )


def _run_loss(sigma, grad_mode, lj_type=md.LennardJones):
    trajectory = md.simulate(_fluid(sigma, lj_type), md.VelocityVerlet(0.004), 30, grad_mode=grad_mode)
    return jnp.mean(trajectory.logs["pe"]) + 1e-2 * jnp.sum(trajectory.coords ** 2)


@pytest.mark.slow  # ~19 s; the default suite keeps the 7-minute budget
@needs_native
def test_gradients_through_simulations_equal_the_pure_jax_kernels(monkeypatch):
    """Value, jax.grad (reverse and checkpointed) and jax.jvp (forward) through a run with a
    neighbor list, with the compiled kernel and with the pure-JAX one."""
    assert isinstance(_kernel_of(_fluid(1.0)), compiled.Kernel)
    original, taken = pairs._kernel, []

    def kernel(fused, *args, **kwargs):  # the reference's type stays on the pure-JAX kernel
        chosen = None if "_PureJaxLennardJones" in fused.names else original(fused, *args, **kwargs)
        taken.append((fused.names, chosen))
        return chosen

    monkeypatch.setattr(pairs, "_kernel", kernel)
    compiled_runs = {mode: jax.value_and_grad(lambda s, m=mode: _run_loss(s, m))(1.0)
                     for mode in ("reverse", "checkpointed")}
    compiled_runs["forward"] = jax.jvp(lambda s: _run_loss(s, "forward"), (1.0,), (1.0,))
    assert all(isinstance(k, compiled.Kernel) for name, k in taken if name == "LennardJones")
    reference = jax.value_and_grad(lambda s: _run_loss(s, "reverse", _PureJaxLennardJones))(1.0)
    assert ("_PureJaxLennardJones", None) in taken
    for mode, (value, derivative) in compiled_runs.items():
        np.testing.assert_allclose(value, reference[0], rtol=1e-12, err_msg=mode)
        np.testing.assert_allclose(derivative, reference[1], rtol=1e-9, err_msg=mode)
    assert abs(float(reference[1])) > 1e-3


def test_failed_build_names_the_cause(tmp_path):
    """A compiler that fails gives a RuntimeError saying so, and DIFFMD_NATIVE=require turns
    an unavailable kernel into an error at first use (in a fresh process: availability is
    decided once per process)."""
    script = (
        "import diffmd as md, jax.numpy as jnp\n"
        "s = md.System(atoms=md.Atoms.uniform(2, mass=1.0, sigma=0.3, epsilon=1.0),"
        " coords=jnp.array([[0.0, 0, 0], [0.5, 0, 0]]), boundary=md.NoBoundary(3), pairwise_inters=(md.LennardJones(),))\n"
        "md.energy_and_forces(s, derivatives='reverse')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "CXX": "false", "DIFFMD_CACHE_DIR": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    strict = subprocess.run([sys.executable, "-c", script], env={**env, "DIFFMD_NATIVE": "require"},
                            capture_output=True, text=True)
    assert strict.returncode != 0 and "DIFFMD_NATIVE=require" in strict.stderr and "failed" in strict.stderr
    lenient = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert lenient.returncode == 0, lenient.stderr
    assert "using the pure-JAX kernels" in lenient.stderr


@needs_native
@pytest.mark.parametrize("cutoff", [md.ShiftedPotentialCutoff(0.8), md.SwitchedCutoff(0.8, 0.6)],
                         ids=lambda c: type(c).__name__)
def test_forward_mode_with_one_tangent_for_all_atoms_parameters(cutoff):
    """The JVP kernel's fast path for equal tangents of every atom's parameters: the usual case
    of one global parameter being differentiated. The kernel reads σ and √ε, so ε is the same
    for all atoms here (equal ε̇ then gives equal tangents of √ε)."""
    system = _system(jnp.float64, cutoff, ranges={"epsilon": (1.2, 1.2)})
    tangent = _tangent(system)
    tangent = eqx.tree_at(lambda s: (s.atoms.per_atom["sigma"], s.atoms.per_atom["epsilon"]), tangent,
                          (jnp.full_like(system.atoms.sigma, 0.7), jnp.full_like(system.atoms.epsilon, -0.3)))
    # the tangents of the kernel's per-atom inputs are uniform: the fast path is taken
    _, params_dot = jax.jvp(lambda a: pairs.fuse(system.pairwise_inters, a, jnp.float64).params,
                            (system.atoms,), (tangent.atoms,))
    for row in params_dot:
        assert np.all(np.asarray(row) == np.asarray(row)[0]) and np.asarray(row)[0] != 0
    _, want = eqx.filter_jvp(lambda s: _loss(s, "any"), (system,), (tangent,))
    _, got = eqx.filter_jvp(lambda s: _loss(s, "forward"), (system,), (tangent,))
    _close(got, want, 1e-11)


@needs_native
@pytest.mark.parametrize("cutoff", [md.NoCutoff(), md.ShiftedPotentialCutoff(0.8)], ids=lambda c: type(c).__name__)
def test_nan_coordinates_reach_energy_forces_and_gradients(cutoff):
    """The compiled kernels skip pairs beyond the cutoff, but a NaN distance is never skipped:
    a NaN coordinate gives a NaN energy and the pure-JAX kernel's NaN forces, in every mode."""
    system = _system(jnp.float64, cutoff)
    system = eqx.tree_at(lambda s: s.coords, system, system.coords.at[3, 1].set(jnp.nan))
    energy, forces = energy_and_forces(system)
    assert np.isnan(energy)
    for derivatives in ("reverse", "forward"):
        got_energy, got_forces = energy_and_forces(system, derivatives=derivatives)
        assert np.isnan(got_energy), derivatives
        np.testing.assert_array_equal(np.isnan(got_forces), np.isnan(forces), err_msg=derivatives)
    grad = jax.grad(_loss)(system, "reverse")
    assert np.isnan(grad.coords).any() and np.isnan(grad.atoms.sigma).any()
    _, tangent = eqx.filter_jvp(lambda s: _loss(s, "forward"), (system,), (_tangent(system),))
    assert np.isnan(tangent)


# ---- every kind of pair potential ------------------------------------------------------------


class Buckingham(md.PairwiseInteraction):
    """A user-defined potential with per-atom parameters of its own: A e^(−B r) − C/r⁶."""

    cutoff: md.Cutoff = md.NoCutoff()
    use_neighbors: bool = eqx.field(static=True, default=False)
    atom_params = ("A", "B", "C")

    def energy(self, r, p_i, p_j):
        a, b, c = jnp.sqrt(p_i.A * p_j.A), 0.5 * (p_i.B + p_j.B), jnp.sqrt(p_i.C * p_j.C)
        return a * jnp.exp(-b * r) - c / r**6


class SoftPush(md.PairwiseForce):
    """A user-defined force-only term: a repulsion that vanishes at the cutoff."""

    cutoff: md.Cutoff = md.PlainCutoff(0.8)
    strength: float = 2.0
    atom_params = ("sigma",)

    def force(self, r, p_i, p_j):
        s = 0.5 * (p_i.sigma + p_j.sigma)
        return self.strength * (s / r) ** 4 * (1.0 - r / 0.8)


class Elementary(md.PairwiseInteraction):
    """A pair function that uses the elementary functions of the generated code (exp, log, pow,
    expm1, log1p, logistic; tanh in `Tanh`) and a `where`."""

    cutoff: md.Cutoff = md.ShiftedPotentialCutoff(0.8)
    strength: float = 1.3
    power: float = 3.7
    atom_params = ("sigma", "epsilon")

    def energy(self, r, p_i, p_j):
        s, e = 0.5 * (p_i.sigma + p_j.sigma), jnp.sqrt(p_i.epsilon * p_j.epsilon)
        x = s / r
        v = (jnp.exp(-r / s) * jnp.log(1.0 + x) + jnp.power(x, self.power) + jnp.expm1(-r) * jnp.log1p(x * x)
             + jnp.where(r < 1.5 * s, x**2, jnp.sqrt(x)) + jax.nn.sigmoid(3.0 * (r - e)))
        return self.strength * e * v


class Tanh(md.PairwiseInteraction):
    """A pair function with a tanh: a smoothed step."""

    cutoff: md.Cutoff = md.ShiftedPotentialCutoff(0.8)
    width: float = 0.1
    atom_params = ("sigma", "epsilon")

    def energy(self, r, p_i, p_j):
        s, e = 0.5 * (p_i.sigma + p_j.sigma), jnp.sqrt(p_i.epsilon * p_j.epsilon)
        return e * (1.0 - jnp.tanh((r - 2.0 * s) / self.width))


# name: (terms, per-atom parameters, parameter ranges, gradients that must not vanish — besides
# the coordinates', the box's and those of the per-atom parameters: (term index, field)).
# LennardJones with Lorentz-Berthelot mixing: `test_compiled_kernel_equals_pure_jax`.
POTENTIALS = {
    "lj-geometric": ((md.LennardJones(cutoff=md.PlainCutoff(0.8), mixing="geometric"),), ("sigma", "epsilon"), {}, ()),
    "lj-force-cap": ((md.LennardJones(cutoff=md.ShiftedPotentialCutoff(0.8), force_cap=50.0),), ("sigma", "epsilon"),
                     {"sigma": (0.35, 0.45)}, ()),
    "coulomb": ((md.Coulomb(coulomb_const=1.7),), ("charge",), {}, ((0, "coulomb_const"),)),
    "coulomb-shifted": ((md.Coulomb(cutoff=md.ShiftedPotentialCutoff(0.8), coulomb_const=1.7),), ("charge",), {},
                        ((0, "coulomb_const"),)),
    "coulomb-plain": ((md.Coulomb(cutoff=md.PlainCutoff(0.8), coulomb_const=1.7),), ("charge",), {},
                      ((0, "coulomb_const"),)),
    "reaction-field": ((md.CoulombReactionField(distance=0.8, coulomb_const=1.7),), ("charge",), {},
                       ((0, "coulomb_const"), (0, "solvent_dielectric"))),
    "soft-sphere": ((md.SoftSphere(cutoff=md.SwitchedCutoff(0.8, 0.6)),), ("sigma", "epsilon"), {}, ()),
    "mie": ((md.Mie(n=10.0, m=5.5, cutoff=md.ShiftedForceCutoff(0.8)),), ("sigma", "epsilon"), {},
            ((0, "n"), (0, "m"))),
    "mie-shifted-potential": ((md.Mie(n=10.0, m=5.5, cutoff=md.ShiftedPotentialCutoff(0.8)),), ("sigma", "epsilon"),
                              {}, ((0, "n"), (0, "m"))),  # from r², as the shifted LJ of lj+coulomb
    "lj+coulomb": ((md.LennardJones(cutoff=md.ShiftedPotentialCutoff(0.7)),
                    md.Coulomb(cutoff=md.ShiftedPotentialCutoff(0.8), coulomb_const=1.7)),
                   ("sigma", "epsilon", "charge"), {}, ((1, "coulomb_const"),)),
    "buckingham": ((Buckingham(cutoff=md.ShiftedPotentialCutoff(0.8)),), ("A", "B", "C"), {}, ()),
    "pairwise-force": ((SoftPush(),), ("sigma",), {}, ((0, "strength"),)),
    "elementary-functions": ((Elementary(),), ("sigma", "epsilon"), {}, ((0, "strength"), (0, "power"))),
    "tanh": ((Tanh(),), ("sigma", "epsilon"), {}, ((0, "width"),)),
    # α r spans all three ranges of vmath's erfc (below 0.47, to 4, beyond)
    "ewald-direct": ((md.EwaldDirect(alpha=6.0, distance=0.8, coulomb_const=1.7),), ("charge",), {},
                     ((0, "alpha"), (0, "coulomb_const"))),
}


def _with_array_fields(terms, dtype):
    """The terms with their float fields as arrays of `dtype` (so forward mode reaches them too)."""
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf, dtype) if isinstance(leaf, float) else leaf, terms)


def _potential_system(name, dtype):
    terms, params, ranges, _ = POTENTIALS[name]
    return _system(dtype, terms=_with_array_fields(terms, dtype), params=params, ranges=ranges)


# float32 for every potential runs with -m slow; the default suite keeps the two whose float32
# code differs most (special functions; two fused terms), within its 7-minute budget.
F32_DEFAULT = ("elementary-functions", "lj+coulomb")


def _potential_cases():
    return [pytest.param(name, dtype, id=f"{name}-{np.dtype(dtype).name}",
                         marks=pytest.mark.slow if dtype == jnp.float32 and name not in F32_DEFAULT else ())
            for name in POTENTIALS for dtype in (jnp.float64, jnp.float32)]


@needs_native
@pytest.mark.parametrize("name, dtype", _potential_cases())
def test_pair_potentials_equal_pure_jax(name, dtype):
    """Energy, forces, the gradient of a loss of both with respect to every float in the System
    (coordinates, per-atom parameters, the terms' float fields, box) and its jax.jvp."""
    system = _potential_system(name, dtype)
    assert isinstance(_kernel_of(system), compiled.Kernel)
    grad_ref = _check_against_pure_jax(system, 1e-11 if dtype == jnp.float64 else 2e-4)
    must_move = [grad_ref.coords, grad_ref.boundary.sides] + [grad_ref.atoms[p] for p in POTENTIALS[name][1]]
    must_move += [getattr(grad_ref.pairwise_inters[k], field) for k, field in POTENTIALS[name][3]]
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in must_move)


@needs_native
def test_force_cap_is_active():
    """The force-cap case above compares something: pairs on the capped wall exist."""
    capped = _potential_system("lj-force-cap", jnp.float64)
    plain = md.LennardJones(cutoff=md.ShiftedPotentialCutoff(0.8))
    uncapped = eqx.tree_at(lambda s: s.pairwise_inters, capped, (plain,))
    for derivatives in ("any", "reverse"):
        forces = energy_and_forces(capped, derivatives=derivatives)[1]
        assert float(jnp.max(jnp.abs(forces - energy_and_forces(uncapped)[1]))) > 1.0


@needs_native
def test_pairwise_terms_are_fused_into_one_kernel():
    """LennardJones and Coulomb over the same rows: one pass of one compiled kernel, whatever
    derivative is taken."""
    system = _potential_system("lj+coulomb", jnp.float64)
    assert isinstance(_kernel_of(system), compiled.Kernel)

    def loss(coords, derivatives):
        return _loss(eqx.tree_at(lambda s: s.coords, system, coords), derivatives)

    calls = lambda f: re.findall(r"@(diffmd_pair_\w+)\(", jax.jit(f).lower(system.coords).as_text())  # noqa: E731
    assert sorted(calls(jax.grad(lambda c: loss(c, "reverse")))) == ["diffmd_pair_forward_f64", "diffmd_pair_vjp_f64"]
    assert calls(lambda c: jax.jvp(lambda x: loss(x, "forward"), (c,), (c,))[1]) == ["diffmd_pair_jvp_f64"]


@pytest.mark.parametrize("term", [
    md.LennardJones(cutoff=md.ShiftedPotentialCutoff(1.0)),
    md.LennardJones(mixing="geometric", cutoff=md.PlainCutoff(1.0)),
    md.Mie(n=10.0, m=5.0), md.SoftSphere(cutoff=md.ShiftedPotentialCutoff(1.0)),
    md.TabulatedLennardJones(acoef=[[2e-6, 3e-6], [3e-6, 5e-6]], bcoef=[[2e-3, 2.5e-3], [2.5e-3, 3e-3]],
                             cutoff=md.PlainCutoff(1.0)),
])
def test_squared_distance_forms_equal_the_distance_forms(term):
    """`energy_r2` (what the compiled kernels evaluate, no square root) gives the same V and
    s = V'(r)/r, and the same parameter gradients, as `energy` of r, inside and beyond the cutoff."""
    r = jnp.linspace(0.25, 1.2, 40, dtype=jnp.float64)
    p_i = Params({"sigma": jnp.full_like(r, 0.3), "sqrt_epsilon": jnp.full_like(r, 0.8),
                                 "lj_type": jnp.zeros_like(r)})
    p_j = Params({"sigma": jnp.full_like(r, 0.36), "sqrt_epsilon": jnp.full_like(r, 0.6),
                                 "lj_type": jnp.ones_like(r)})
    assert term.energy_r2(r * r, p_i, p_j) is not None
    via_r = term.value_and_scale(r, p_i, p_j)
    via_r2 = term.value_and_scale_r2(r * r, p_i, p_j)
    for a, b in zip(via_r, via_r2):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=1e-12)
    grad = lambda f: jax.grad(lambda t: jnp.sum(f(t)[0] + f(t)[1]))(term)  # noqa: E731
    g_r = grad(lambda t: t.value_and_scale(r, p_i, p_j))
    g_r2 = grad(lambda t: t.value_and_scale_r2(r * r, p_i, p_j))
    for a, b in zip(jax.tree_util.tree_leaves(g_r), jax.tree_util.tree_leaves(g_r2)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-10, atol=1e-12)


def _forward_source(system) -> str:
    fused = pairs.fuse(system.pairwise_inters, system.atoms, system.coords.dtype)
    programs = codegen.trace_programs(fused.vs_r2, len(fused.params), len(fused.globals), system.coords.dtype)
    return codegen.kernel_sources(programs, system.coords.dtype, 3, fused.cutoff)[1]["forward"]


def test_generated_code_takes_square_roots_and_cutoff_tests_only_where_needed():
    """LJ under a shifted cutoff runs from r² alone (no √, one division per pair), and its own
    cutoff test, implied by the kernel's, is folded away; Coulomb needs r, and a shorter cutoff
    of one term among longer ones keeps its test."""
    lj = _potential_system("lj-geometric", jnp.float32)
    shifted = eqx.tree_at(lambda s: s.pairwise_inters, lj,
                          (md.LennardJones(use_neighbors=True, cutoff=md.ShiftedPotentialCutoff(1.0)),))
    source = _forward_source(shifted)
    value = source[source.index("T V, sc;"):source.index("nan_if_nan")]
    assert "Sqrt" not in value and len(re.findall(r"float\(1\) / (?!float\()", value)) == 1  # 1/u (and constants)
    assert "< float(1.0)" not in value  # no comparison with the cutoff (1 nm: u < 1 and r < 1)
    with_coulomb = _forward_source(_potential_system("lj+coulomb", jnp.float32))
    assert "Sqrt" in with_coulomb[with_coulomb.index("T V, sc;"):]
    mixed = eqx.tree_at(lambda s: s.pairwise_inters, lj,
                        (md.LennardJones(use_neighbors=True, cutoff=md.ShiftedPotentialCutoff(0.8)),
                         md.SoftSphere(use_neighbors=True, cutoff=md.PlainCutoff(1.0))))
    source = _forward_source(mixed)
    assert "us < float(0.63999" in source  # the LJ's 0.8 nm cutoff within the kernel's 1 nm


# ---- the generated code's elementary functions ----------------------------------------------

_UNARY = {"exp": (jnp.exp, np.exp), "log": (jnp.log, np.log), "expm1": (jnp.expm1, np.expm1),
          "log1p": (jnp.log1p, np.log1p), "tanh": (jnp.tanh, np.tanh),
          "logistic": (jax.nn.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
          "erf": (jax.lax.erf, scipy.special.erf), "erfc": (jax.lax.erfc, scipy.special.erfc)}
_CTYPE = {np.float32: "float", np.float64: "double"}


@pytest.fixture(scope="module")
def vmath_library():
    """The elementary functions as `codegen.emit` translates them (each a one-primitive jaxpr),
    in vectorised loops, compiled with the kernels' flags; cached like the kernels."""
    if build.compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    parts = ['#include <cmath>\n#include <cstdint>\n#include <limits>\n#include "vmath.h"\n'
             "namespace vm = diffmd::vmath;\nextern \"C\" {"]
    functions = {name: (f, 1) for name, (f, _) in _UNARY.items()} | {"pow": (jnp.power, 2)}
    for dtype, ctype in _CTYPE.items():
        for name, (f, arity) in functions.items():
            lines, (out,) = codegen.emit(jax.make_jaxpr(f)(*[jax.ShapeDtypeStruct((), dtype)] * arity),
                                         ["x0", "x1"][:arity], "v")
            body = "\n".join("    " + line for line in lines)
            parts.append(f"void {name}_{ctype}(const {ctype}* a, const {ctype}* b, {ctype}* out, int64_t n) {{\n"
                         "#pragma omp simd\n  for (int64_t i = 0; i < n; ++i) {\n"
                         f"    const {ctype} x0 = a[i];\n    const {ctype} x1 = b[i];\n{body}\n    out[i] = {out};\n"
                         "  }\n}")
    source = "\n".join(parts + ["}"]) + "\n"
    command = build.compiler() + list(build._flags(tuple(build.compiler()))) + [f"-I{build.NATIVE_DIR}"]
    key = hashlib.sha256((source + " ".join(command)).encode() + (build.NATIVE_DIR / "vmath.h").read_bytes())
    path = build.cache_dir() / f"vmath_test-{key.hexdigest()[:16]}.so"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        source_path = path.with_suffix(".cc")
        source_path.write_text(source)
        tmp = path.with_suffix(f".{np.random.randint(1 << 30)}.tmp")
        result = subprocess.run(command + [str(source_path), "-o", str(tmp)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        tmp.replace(path)
    library = ctypes.CDLL(str(path))

    def call(name, dtype, x, y=None):
        x = np.ascontiguousarray(x, dtype)
        y = np.ascontiguousarray(x if y is None else y, dtype)
        out = np.empty_like(x)
        fn = getattr(library, f"{name}_{_CTYPE[dtype]}")
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64]
        fn(x.ctypes.data, y.ctypes.data, out.ctypes.data, x.size)
        return out

    return call


def _ulps(got, exact, dtype):
    """|got − exact| in units in the last place of the exact value rounded to `dtype`;
    results below the smallest normal number may be flushed to zero (as XLA's CPU code)."""
    exact = np.asarray(exact, np.longdouble)
    spacing = np.spacing(np.abs(exact.astype(dtype))).astype(np.longdouble)
    with np.errstate(invalid="ignore", over="ignore"):
        error = np.abs(np.asarray(got, np.longdouble) - exact) / spacing
    flushed = (np.abs(exact) < np.finfo(dtype).tiny) & (got == 0)
    return np.where(flushed | (got == exact), 0.0, error)


def _wide(name, dtype, rng, size=200_000):
    """Inputs over the whole range where the result is a normal number, dense near 0 and 1."""
    fi = np.finfo(dtype)
    top = float(np.log(fi.max))  # ≈ 88.7 (float32), 709.8 (float64)
    bottom = float(np.log(fi.tiny))
    sign = rng.choice([-1.0, 1.0], size)
    tiny = sign * 10.0 ** rng.uniform(np.log10(fi.tiny), -1, size)  # down to the smallest normal
    near = rng.uniform(-1, 1, size)
    if name in ("exp", "logistic"):
        return np.concatenate([rng.uniform(bottom, top, size), near, tiny])
    if name == "expm1":
        return np.concatenate([rng.uniform(-60, 0.9 * top, size), near, tiny])  # overflow: below
    if name == "log":
        return np.concatenate([10.0 ** rng.uniform(np.log10(fi.tiny), np.log10(fi.max), size),
                               1 + 10.0 ** rng.uniform(-7, -1, size) * sign, rng.uniform(0.5, 2, size)])
    if name == "log1p":
        return np.concatenate([10.0 ** rng.uniform(-3, 0.9 * np.log10(fi.max), size),  # overflow: below
                               -(10.0 ** rng.uniform(np.log10(fi.tiny), -1e-3, size)), near, tiny])
    if name == "tanh":
        return np.concatenate([rng.uniform(-25, 25, size), near, tiny])
    raise ValueError(name)


# Largest error allowed (ulp; measured on ~10^6 points): exp and log 2 (as vmath.h says); the functions built
# on them compound their errors (measured: logistic 2.3, expm1 and log1p 3.5, tanh 4.5 — XLA's own
# tanh is 4.2 (float32) and 3.5 (float64)).
ULPS = {"exp": 2.0, "log": 2.0, "logistic": 2.5, "expm1": 4.0, "log1p": 4.0, "tanh": 5.0}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(ULPS))
def test_elementary_functions_agree_with_numpy(vmath_library, name, dtype):
    """Over the whole range of arguments with a normal result, near 0 and 1, and tiny ones."""
    rng = np.random.default_rng(7)
    x = _wide(name, dtype, rng).astype(dtype)
    got = vmath_library(name, dtype, x)
    exact = _UNARY[name][1](x.astype(np.longdouble))
    error = _ulps(got, exact, dtype)
    worst = int(np.argmax(error))
    assert error[worst] <= ULPS[name], \
        f"{name}({x[worst]!r}) = {got[worst]!r}, exact {exact[worst]!r}: {error[worst]} ulp"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_pow_agrees_with_numpy(vmath_library, dtype):
    """x^y = exp(y log x): the rounding of y·log x is amplified by |y log x| (as in any pow
    without extra precision), so the bound grows with it; within 2.5 ulp where it is ≲ 1."""
    rng = np.random.default_rng(8)
    x = (10.0 ** rng.uniform(-3, 3, 10**6)).astype(dtype)
    y = rng.uniform(-10, 10, 10**6).astype(dtype)
    x[:1000] *= -1  # negative bases with integral exponents: ±|x|^y
    y[:1000] = np.round(y[:1000])
    got = vmath_library("pow", dtype, x, y)
    exact = np.power(x.astype(np.longdouble), y.astype(np.longdouble))
    error = _ulps(got, exact, dtype)
    z = np.abs(y.astype(np.float64) * np.log(np.abs(x.astype(np.float64))))
    assert np.max(error / (1 + z)) <= 2.5
    assert np.max(error[z < 1]) <= 2.5


# erf and erfc (Cody's rational approximations, selected by range, e^(−x²) from an exact split):
# largest error allowed, in ulp of the correctly rounded result. Measured on 5·10⁴ (float64) and
# 5·10⁶ (float32) points: erf 3.1 and 3.0, erfc 4.8 and 5.5 (99.9 % of points within 2.5 and 3.2);
# scipy's and XLA's float64 erfc are 20 ulp off at 9.194 and 100 at 26.543.
ERF_ULPS = {"erf": 3.5, "erfc": 6.0}


def _erf_arguments(name, dtype, rng, size):
    """Every range of the approximation (|x| ≤ 0.46875, to 4, beyond), their edges, tiny
    arguments, and for erfc the tail down to the smallest normal result, both signs."""
    fi = np.finfo(dtype)
    top = 27.0 if dtype == np.float64 else 9.3  # erfc(top) is below the smallest normal number
    edges = np.concatenate([e * (1 + rng.uniform(-1e-6, 1e-6, size // 50)) for e in (0.46875, 4.0)])
    tiny = 10.0 ** rng.uniform(np.log10(fi.tiny), -1, size // 10)
    positive = np.concatenate([rng.uniform(0, 0.5, size // 4), rng.uniform(0.45, 4.1, size // 4),
                               rng.uniform(3.9, 6.5, size // 4), edges, tiny]
                              + ([rng.uniform(6, top, size // 4)] if name == "erfc" else []))
    return np.concatenate([positive, -positive[: size // 2]]).astype(dtype)


def _mp_reference(name, x):
    """erf or erfc of each float64 in x to 30 digits (mpmath), as long doubles."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    fn = mpmath.erf if name == "erf" else mpmath.erfc
    return np.array([np.longdouble(mpmath.nstr(fn(mpmath.mpf(float(v))), 25)) for v in x])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["erf", "erfc"])
def test_erf_and_erfc_agree_with_exact_values(vmath_library, name, dtype):
    """Within a few ulp of the correctly rounded value over every range, the tails included:
    float64 against mpmath (30 digits, 24,000 points), float32 against scipy's float64 values
    (10⁶ points); results below the smallest normal number may be flushed to zero."""
    rng = np.random.default_rng(11)
    x = _erf_arguments(name, dtype, rng, 8000 if dtype == np.float64 else 400_000)
    got = vmath_library(name, dtype, x)
    exact = _mp_reference(name, x) if dtype == np.float64 else _UNARY[name][1](x.astype(np.float64))
    error = _ulps(got, exact, dtype)
    worst = int(np.argmax(error))
    assert error[worst] <= ERF_ULPS[name], \
        f"{name}({x[worst]!r}) = {got[worst]!r}, exact {exact[worst]!r}: {error[worst]} ulp"
    if name == "erfc":  # the tail is reached: results down to the smallest normal number are kept
        kept = (exact > np.finfo(dtype).tiny) & (x > 0)
        assert float(np.min(got[kept])) < 1e4 * np.finfo(dtype).tiny


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["erf", "erfc"])
def test_erf_and_erfc_special_values(vmath_library, name, dtype):
    """0, −0, ±∞, NaN, the smallest normal and subnormal numbers, the largest number, and the
    ends of each range: as mpmath (float64) or scipy (float32), or XLA, within the accuracy
    above."""
    fi = np.finfo(dtype)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, fi.tiny, -fi.tiny, fi.smallest_subnormal,
                        -fi.smallest_subnormal, fi.max, -fi.max, 0.46875, -0.46875, 0.5, -0.5, 4.0, -4.0, 9.194, 9.1946,
                        9.3, 26.5, 26.543, 26.5433, 27.0, -27.0, 1e-30, 1.0, -1.0, 100.0, -100.0], dtype)
    got = vmath_library(name, dtype, special)
    with np.errstate(all="ignore"):
        want = _UNARY[name][1](special.astype(np.float64)).astype(dtype)
    if dtype == np.float64:  # scipy's own float64 erfc is tens of ulp off in the tail
        finite = np.abs(special) < 1e3  # beyond, erf and erfc are 0, ±1 or 2 to the last bit
        want[finite] = _mp_reference(name, special[finite]).astype(dtype)
    xla = np.asarray(jax.jit(_UNARY[name][0])(special))
    bad = ~(_same(got, want, ERF_ULPS[name]) | _same(got, xla, ERF_ULPS[name]))
    assert not bad.any(), "(argument, vmath, scipy, XLA): " + ", ".join(
        f"({a}, {g}, {w}, {j})" for a, g, w, j, b in zip(special, got, want, xla, bad) if b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["expm1", "log1p"])
def test_elementary_functions_do_not_overflow_below_the_largest_number(vmath_library, name, dtype):
    """expm1(x) is finite up to log(max) and log1p(x) for every finite x."""
    fi = np.finfo(dtype)
    if name == "expm1":
        x = np.linspace(0.95 * np.log(fi.max), np.log(fi.max) * (1 - 4 * fi.eps), 10001).astype(dtype)
    else:
        with np.errstate(over="ignore"):
            x = np.geomspace(float(fi.max) ** 0.95, float(fi.max), 10001).astype(dtype)
    got = vmath_library(name, dtype, x)
    exact = _UNARY[name][1](x.astype(np.longdouble))
    assert np.all(np.isfinite(x)) and np.all(np.isfinite(exact.astype(dtype)))
    bad = ~np.isfinite(got)
    assert not bad.any(), f"{name} overflows from x = {x[bad].min()!r} (exact result {exact[bad][0]!r})"
    assert np.max(_ulps(got, exact, dtype)) <= ULPS[name]


def _same(got, want, ulps):
    """Equal values (NaN equals NaN, zeros of the same sign), or finite and nonzero within
    `ulps`; a result below the smallest normal number may be flushed to zero."""
    got, want = np.asarray(got), np.asarray(want)
    exact = (got == want) & (np.signbit(got) == np.signbit(want))
    with np.errstate(all="ignore"):
        close = (np.isfinite(want) & (want != 0) & (np.sign(got) == np.sign(want))
                 & (np.abs(got.astype(np.float64) - want) <= ulps * np.spacing(np.abs(want))))
    with np.errstate(all="ignore"):
        flushed = (np.abs(want) - ulps * np.spacing(np.abs(want)) < np.finfo(want.dtype).tiny) & (got == 0)
    return exact | (np.isnan(got) & np.isnan(want)) | close | flushed


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(ULPS) + ["pow"])
def test_elementary_functions_special_values(vmath_library, name, dtype):
    """0, ±1, ±∞, NaN, the smallest normal and subnormal numbers, the largest number, and
    arguments beyond the range: as numpy or the pure-JAX kernel (XLA, which reads subnormal
    arguments as zero), within the accuracy of the tests above."""
    fi = np.finfo(dtype)
    special = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, np.inf, -np.inf, np.nan, fi.tiny, -fi.tiny,
                        fi.smallest_subnormal, -fi.smallest_subnormal, fi.max, -fi.max, 1e-30, -1e-30, 100.0,
                        -100.0, 1000.0, -1000.0, 3.0, -3.0], dtype)
    if name == "pow":
        x, y = (a.ravel() for a in np.meshgrid(special, special))
        got = vmath_library(name, dtype, x, y)
        with np.errstate(all="ignore"):
            want = np.power(x, y)
        xla = np.asarray(jax.jit(jnp.power)(x, y))
        args = list(zip(x, y))
        with np.errstate(all="ignore"):
            ulps = 2.5 * (1 + np.abs(y.astype(np.float64) * np.log(np.abs(x.astype(np.float64)))))
    else:
        got = vmath_library(name, dtype, special)
        with np.errstate(all="ignore"):
            want = _UNARY[name][1](special).astype(dtype)
        xla = np.asarray(jax.jit(_UNARY[name][0])(special))
        args = list(special)
        ulps = ULPS[name]
    bad = ~(_same(got, want, ulps) | _same(got, xla, ulps))
    assert not bad.any(), "(argument, vmath, numpy, XLA): " + ", ".join(
        f"({a}, {g}, {w}, {j})" for a, g, w, j, b in zip(args, got, want, xla, bad) if b)


# ---- what the translation does not cover ------------------------------------------------------


class _WithWhileLoop(md.PairwiseInteraction):
    """σ_ij by three Newton steps for √(σ_i σ_j) in a while loop (no reverse mode in JAX)."""

    cutoff: md.Cutoff = md.ShiftedPotentialCutoff(0.8)
    atom_params = ("sigma", "epsilon")

    def energy(self, r, p_i, p_j):
        product = p_i.sigma * p_j.sigma
        sigma = jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, 0.5 * (c[1] + product / c[1])),
                                   (0, 0.5 * (p_i.sigma + p_j.sigma)))[1]
        return lennard_jones(r, sigma, jnp.sqrt(p_i.epsilon * p_j.epsilon))


class _WithForLoop(md.PairwiseInteraction):
    """The same with a fixed number of steps (a scan: reverse mode works)."""

    cutoff: md.Cutoff = md.ShiftedPotentialCutoff(0.8)
    atom_params = ("sigma", "epsilon")

    def energy(self, r, p_i, p_j):
        product = p_i.sigma * p_j.sigma
        sigma = jax.lax.fori_loop(0, 3, lambda k, s: 0.5 * (s + product / s), 0.5 * (p_i.sigma + p_j.sigma))
        return lennard_jones(r, sigma, jnp.sqrt(p_i.epsilon * p_j.epsilon))


class _WithErfInv(md.PairwiseInteraction):
    """A primitive without a C++ translation (erf_inv)."""

    cutoff: md.Cutoff = md.ShiftedPotentialCutoff(0.8)
    atom_params = ("sigma", "epsilon")

    def energy(self, r, p_i, p_j):
        sigma = 0.5 * (p_i.sigma + p_j.sigma)
        return jnp.sqrt(p_i.epsilon * p_j.epsilon) * jax.scipy.special.erfinv(0.9 * jnp.exp(-r / sigma))


class _WithSort(md.PairwiseInteraction):
    """The smaller σ of the two atoms by sorting (an array inside the pair function)."""

    cutoff: md.Cutoff = md.ShiftedPotentialCutoff(0.8)
    atom_params = ("sigma", "epsilon")

    def energy(self, r, p_i, p_j):
        sigma = jnp.sort(jnp.stack(jnp.broadcast_arrays(p_i.sigma, p_j.sigma)), axis=0)[0]
        return lennard_jones(r, sigma, jnp.sqrt(p_i.epsilon * p_j.epsilon))


@needs_native
@pytest.mark.parametrize("term, named, reverse", [
    (_WithWhileLoop(), "while", False), (_WithForLoop(), "scan", True), pytest.param(_WithErfInv(), "erf_inv", True, marks=pytest.mark.slow),
    pytest.param(_WithSort(), "sort|non-scalar", True, marks=pytest.mark.slow),  # ~6 s; the scan case stays default
], ids=lambda v: type(v).__name__ if isinstance(v, md.PairwiseInteraction) else None)
def test_unsupported_pair_function_falls_back_to_pure_jax(monkeypatch, term, named, reverse):
    """A pair function with a primitive the translation does not cover runs on the pure-JAX
    kernel, with a RuntimeWarning naming the term and the primitive, and gives the same values
    and derivatives."""
    monkeypatch.setattr(pairs, "_WARNED", set())  # warned once per process: here, every time
    system = _system(jnp.float64, terms=(term,))
    with pytest.warns(RuntimeWarning, match=f"{type(term).__name__} runs on the pure-JAX pair kernel.*({named})"):
        assert _kernel_of(system) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = energy_and_forces(system)
        for derivatives in ("reverse", "forward"):
            for got, want in zip(energy_and_forces(system, derivatives=derivatives), reference):
                _close(got, want, 1e-12, err_msg=derivatives)
        tangent = _tangent(system)
        _, jvp_ref = eqx.filter_jvp(lambda s: _loss(s, "any"), (system,), (tangent,))
        _, jvp = eqx.filter_jvp(lambda s: _loss(s, "forward"), (system,), (tangent,))
        _close(jvp, jvp_ref, 1e-11)
        if reverse:
            grad_ref = jax.grad(_loss)(system, "any")
            grad = jax.grad(_loss)(system, "reverse")
            for (path, got), (_, want) in zip(_leaves(grad), _leaves(grad_ref), strict=True):
                _close(got, want, 1e-11, err_msg=path)
