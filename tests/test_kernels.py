"""The compiled Lennard-Jones kernels (diffmd.native) equal the pure-JAX kernel: energies,
forces, reverse-mode cotangents (coordinates, σ, ε, box) and forward-mode tangents, in 2-D and
3-D, float32 and float64, with every supported cutoff and box, and through whole simulations."""

import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md
from diffmd import native
from diffmd.energy import energy_and_forces

CUTOFFS = [md.NoCutoff(), md.PlainCutoff(0.8), md.ShiftedPotentialCutoff(0.8), md.SwitchedCutoff(0.8, 0.6)]


def test_kernels_are_built_wherever_a_compiler_exists():
    """The test environment installs a toolchain (the `native` extra): a broken build must fail
    here rather than silently fall back to the slower kernel."""
    if native._compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    assert native.available()


needs_native = pytest.mark.skipif(not native.available(), reason="compiled kernels unavailable")


def _system(dtype, cutoff, n_dims=3, periodic=True, n=60, seed=0):
    rng = np.random.default_rng(seed)
    side = (n / 10.0) ** (1 / n_dims)
    # jittered lattice: no near-coincident pairs, so forces stay O(1) and comparisons are sharp
    m = int(np.ceil(n ** (1 / n_dims)))
    grid = np.stack(np.meshgrid(*[np.arange(m)] * n_dims, indexing="ij"), -1).reshape(-1, n_dims)[:n]
    coords = (grid + 0.5) * (side / m) + rng.uniform(-0.05, 0.05, (n, n_dims))
    if not periodic:
        coords = coords + 5.0  # far from the origin: nothing relies on wrapping
    atoms = md.Atoms(mass=jnp.ones(n, dtype), sigma=jnp.asarray(rng.uniform(0.2, 0.3, n), dtype),
                     epsilon=jnp.asarray(rng.uniform(0.5, 1.5, n), dtype))
    boundary = md.RectangularBoundary(jnp.asarray(side * np.linspace(1.0, 1.1, n_dims), dtype)) if periodic \
        else md.NoBoundary(n_dims)
    return md.System(atoms=atoms, coords=jnp.asarray(coords, dtype), boundary=boundary,
                     pairwise_inters=(md.LennardJones(cutoff=cutoff),))


def _loss(system, derivatives):
    energy, forces = energy_and_forces(system, derivatives=derivatives)
    weights = jnp.linspace(-1.0, 1.0, forces.size).reshape(forces.shape)
    return 0.3 * energy + jnp.sum(weights * forces) + 1e-2 * jnp.sum(forces**2)


def _tangent(tree, seed=1):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(rng.normal(size=a.shape), a.dtype) if eqx.is_inexact_array(a) else a, tree)


def _close(a, b, rtol):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=rtol * float(np.max(np.abs(b))))


@needs_native
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("n_dims", [2, 3])
@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("cutoff", CUTOFFS, ids=lambda c: type(c).__name__)
def test_compiled_kernel_equals_pure_jax(dtype, n_dims, periodic, cutoff):
    system = _system(dtype, cutoff, n_dims, periodic)
    assert native.lj_config(system.pairwise_inters[0], system.boundary, system.coords) is not None
    rtol = 1e-11 if dtype == jnp.float64 else 2e-4
    reference = energy_and_forces(system)
    for derivatives in ("reverse", "forward"):
        for got, want in zip(energy_and_forces(system, derivatives=derivatives), reference):
            assert got.dtype == want.dtype
            _close(got, want, rtol)

    grad_ref = jax.grad(_loss)(system, "any")
    grad = jax.grad(_loss)(system, "reverse")
    for get in (lambda s: s.coords, lambda s: s.atoms.sigma, lambda s: s.atoms.epsilon):
        _close(get(grad), get(grad_ref), rtol)
    if periodic:
        _close(grad.boundary.sides, grad_ref.boundary.sides, rtol)

    tangent = _tangent(system)
    _, jvp_ref = eqx.filter_jvp(lambda s: _loss(s, "any"), (system,), (tangent,))
    _, jvp = eqx.filter_jvp(lambda s: _loss(s, "forward"), (system,), (tangent,))
    _close(jvp, jvp_ref, rtol)


@needs_native
def test_compiled_kernel_under_vmap_equals_a_loop():
    systems = [_system(jnp.float64, md.ShiftedPotentialCutoff(0.8), seed=s) for s in range(3)]
    leaves = lambda s: (s.coords, s.atoms.sigma, s.atoms.epsilon)  # noqa: E731
    rebuild = lambda values: eqx.tree_at(leaves, systems[0], values)  # noqa: E731
    stacked = tuple(jnp.stack(parts) for parts in zip(*map(leaves, systems)))
    grads = jax.vmap(jax.grad(lambda values: _loss(rebuild(values), "reverse")))(stacked)
    tangents = jax.vmap(lambda values: jax.jvp(lambda v: _loss(rebuild(v), "forward"), (values,), (values,))[1])(stacked)
    for k, system in enumerate(systems):
        for got, want in zip(grads, leaves(jax.grad(_loss)(system, "any"))):
            _close(got[k], want, 1e-11)
        _close(tangents[k], jax.jvp(lambda v: _loss(rebuild(v), "any"), (leaves(system),), (leaves(system),))[1], 1e-11)


def test_unsupported_interactions_use_the_pure_jax_kernel():
    system = _system(jnp.float64, md.ShiftedForceCutoff(0.8))
    inter = system.pairwise_inters[0]
    assert native.lj_config(inter, system.boundary, system.coords) is None
    for other in (md.LennardJones(force_cap=100.0), md.LennardJones(mixing="geometric"), md.SoftSphere()):
        assert native.lj_config(other, system.boundary, system.coords) is None
    # and they still give the same answers in every derivative mode
    for derivatives in ("reverse", "forward"):
        _close(energy_and_forces(system, derivatives=derivatives)[1], energy_and_forces(system)[1], 1e-12)


def test_unknown_derivatives_mode_is_refused():
    with pytest.raises(ValueError, match="derivatives must be one of"):
        energy_and_forces(_system(jnp.float64, md.NoCutoff()), derivatives="backward")


class _PureJaxLennardJones(md.LennardJones):
    """The same interaction under another type: the compiled kernel does not claim it."""


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


@needs_native
def test_gradients_through_simulations_equal_the_pure_jax_kernels():
    """Value, jax.grad (reverse and checkpointed) and jax.jvp (forward) through a run with a
    neighbor list, with the compiled kernel and with the pure-JAX one."""
    compiled = {mode: jax.value_and_grad(lambda s, m=mode: _run_loss(s, m))(1.0) for mode in ("reverse", "checkpointed")}
    compiled["forward"] = jax.jvp(lambda s: _run_loss(s, "forward"), (1.0,), (1.0,))
    assert native.lj_config(_PureJaxLennardJones(), md.CubicBoundary(4.4), jnp.zeros((2, 3))) is None
    reference = jax.value_and_grad(lambda s: _run_loss(s, "reverse", _PureJaxLennardJones))(1.0)
    for mode, (value, derivative) in compiled.items():
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
    assert "using the pure-JAX pair kernel" in lenient.stderr


@needs_native
@pytest.mark.parametrize("cutoff", [md.ShiftedPotentialCutoff(0.8), md.SwitchedCutoff(0.8, 0.6)],
                         ids=lambda c: type(c).__name__)
def test_forward_mode_with_one_tangent_for_all_atoms_parameters(cutoff):
    """The JVP kernel's fast path for equal σ̇ (and ε̇) on every atom: the usual case of one
    global parameter being differentiated."""
    system = _system(jnp.float64, cutoff)
    tangent = _tangent(system)
    tangent = eqx.tree_at(lambda s: (s.atoms.sigma, s.atoms.epsilon), tangent,
                          (jnp.full_like(system.atoms.sigma, 0.7), jnp.full_like(system.atoms.epsilon, -0.3)))
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
