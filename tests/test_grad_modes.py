"""Gradient modes of `simulate`: reverse, checkpointed and forward give the same values and
derivatives; truncated backpropagation cuts the graph where it says."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffmd as md
from diffmd.run.modes import parse_grad_mode

N_STEPS = 37  # prime: segments and logger intervals do not divide it


def _system(sigma, loggers=None):
    grid = (np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * 1.2
    coords = jnp.asarray(grid + np.random.default_rng(0).normal(0, 0.05, grid.shape))
    velocities = md.random_velocities(jax.random.PRNGKey(0), jnp.ones(27), 0.5, md.REDUCED_UNITS, dtype=jnp.float64)
    atoms = md.Atoms.uniform(27, mass=1.0, sigma=sigma, epsilon=1.0)
    return md.System(
        atoms, coords, md.CubicBoundary(3.6), velocities=velocities,
        pairwise_inters=(md.LennardJones(cutoff=md.ShiftedForceCutoff(1.7), use_neighbors=True),),
        neighbor_finder=md.DistanceNeighborFinder(1.8, capacity=26), units=md.REDUCED_UNITS,
        loggers=loggers if loggers is not None else {"pe": md.PotentialEnergyLogger(3), "coords": md.CoordinatesLogger(5)},
    )


def _loss(sigma, grad_mode="reverse", n_steps=N_STEPS, **options):
    trajectory = md.simulate(_system(sigma), md.VelocityVerlet(0.005), n_steps, grad_mode=grad_mode, **options)
    return (jnp.mean(trajectory.logs["pe"]) + 1e-3 * jnp.sum(trajectory.logs["coords"][-1] ** 2)
            + 1e-3 * jnp.sum(trajectory.coords**2))


@pytest.fixture(scope="module")
def reverse_value_and_grad():
    return jax.jit(jax.value_and_grad(_loss))(1.0)


@pytest.mark.parametrize("segment_length", [1, 40])  # None: "checkpointed" in test_checkpointed_values_equal_reverse
def test_checkpointed_equals_reverse(reverse_value_and_grad, segment_length):
    value, grad = jax.jit(jax.value_and_grad(lambda s: _loss(s, md.Checkpointed(segment_length))))(1.0)
    np.testing.assert_allclose(value, reverse_value_and_grad[0], rtol=1e-12)
    np.testing.assert_allclose(grad, reverse_value_and_grad[1], rtol=1e-6)
    assert abs(float(grad)) > 1.0  # a real derivative, not zero


def test_forward_mode_equals_reverse_and_keeps_logs(reverse_value_and_grad):
    value, tangent = jax.jit(lambda s: jax.jvp(lambda x: _loss(x, "forward"), (s,), (1.0,)))(1.0)
    np.testing.assert_allclose(value, reverse_value_and_grad[0], rtol=1e-12)
    np.testing.assert_allclose(tangent, reverse_value_and_grad[1], rtol=1e-6)
    # jax.jacfwd is a vmap over tangents: the compiled JVP kernel's primal outputs stay unbatched
    jacobian = jax.jit(jax.jacfwd(lambda s: _loss(s[0], "forward")))(jnp.ones(1))
    np.testing.assert_allclose(jacobian, [reverse_value_and_grad[1]], rtol=1e-6)
    logs = md.simulate(_system(1.0), md.VelocityVerlet(0.005), N_STEPS, grad_mode="forward").logs
    reference = md.simulate(_system(1.0), md.VelocityVerlet(0.005), N_STEPS).logs
    for name in reference:
        assert logs[name].shape == reference[name].shape
        np.testing.assert_allclose(logs[name], reference[name], rtol=1e-12, atol=1e-12)


def test_forward_mode_refuses_reverse_differentiation():
    with pytest.raises(TypeError, match="grad_mode='reverse' or 'checkpointed'"):
        jax.grad(lambda s: _loss(s, "forward"))(1.0)


@pytest.mark.slow  # ~12 s: compiles three run lengths in two modes
def test_checkpointed_memory_grows_like_sqrt_of_steps():
    """XLA's own memory plan (compiled, not run): plain reverse grows ∝ T, checkpointed ∝ √T.
    (A scalar logger only: logged coordinates are O(T) by nature and would mask the trend.)"""
    def loss(sigma, mode, n_steps):
        system = _system(sigma, loggers={"pe": md.PotentialEnergyLogger(3)})
        return jnp.mean(md.simulate(system, md.VelocityVerlet(0.005), n_steps, grad_mode=mode).logs["pe"])

    def temp_bytes(mode, n_steps):
        compiled = jax.jit(jax.grad(lambda s: loss(s, mode, n_steps))).lower(1.0).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    reverse = [temp_bytes("reverse", t) for t in (400, 1600)]
    checkpointed = [temp_bytes("checkpointed", t) for t in (400, 1600)]
    assert reverse[1] > 3.0 * reverse[0]  # ∝ T: ×4
    assert checkpointed[1] < 2.5 * checkpointed[0]  # ∝ √T: ×2
    assert checkpointed[1] < 0.3 * reverse[1]


@pytest.mark.slow  # ~13 s; the default suite keeps the 7-minute budget
def test_backprop_steps_cuts_the_graph_before_the_last_steps():
    """Gradient through the last k steps only = run T−k steps, stop the gradient, run k more."""
    k = 20

    def manual(sigma):
        system = _system(sigma, loggers={})
        first = md.simulate(system, md.VelocityVerlet(0.005), N_STEPS - k)
        detached = jax.lax.stop_gradient(first.state)
        restarted = md.System(system.atoms, detached.coords, system.boundary, velocities=detached.velocities,
                              pairwise_inters=system.pairwise_inters, neighbor_finder=system.neighbor_finder,
                              units=system.units)
        return jnp.sum(md.simulate(restarted, md.VelocityVerlet(0.005), k).coords ** 2)

    def truncated(sigma, mode):
        trajectory = md.simulate(_system(sigma, loggers={}), md.VelocityVerlet(0.005), N_STEPS, grad_mode=mode,
                                 truncate=md.Truncate(last=k))
        return jnp.sum(trajectory.coords**2)

    full = jax.grad(lambda s: jnp.sum(md.simulate(_system(s, loggers={}), md.VelocityVerlet(0.005), N_STEPS).coords ** 2))(1.0)
    expected = jax.grad(manual)(1.0)
    for mode in ("reverse", "checkpointed"):
        np.testing.assert_allclose(jax.grad(truncated, argnums=0)(1.0, mode), expected, rtol=1e-6)
    assert abs(float(expected) - float(full)) > 1e-3 * abs(float(full))  # truncation changed something


def test_backprop_window_longer_than_run_is_exact(reverse_value_and_grad):
    grad = jax.grad(lambda s: _loss(s, truncate=md.Truncate(window=N_STEPS + 1)))(1.0)
    np.testing.assert_allclose(grad, reverse_value_and_grad[1], rtol=1e-10)
    windowed = jax.grad(lambda s: _loss(s, truncate=md.Truncate(window=10)))(1.0)
    assert np.isfinite(windowed) and abs(float(windowed) - float(reverse_value_and_grad[1])) > 1e-6


def test_bad_grad_options_are_refused():
    system = _system(1.0)
    with pytest.raises(ValueError, match="grad_mode"):
        md.simulate(system, md.VelocityVerlet(0.005), 5, grad_mode="adjoint")
    with pytest.raises(ValueError, match="Truncate: window must be a positive integer"):
        md.simulate(system, md.VelocityVerlet(0.005), 5, truncate=md.Truncate(window=0))


@pytest.mark.slow  # ~18 s; the default suite keeps the 7-minute budget
def test_reverse_passes_restore_lists_rebuilt_within_a_stretch():
    """The reverse modes store states without neighbor rows and restore the rows in the backward
    pass (`diffmd.run.state_scan`): lists rebuilt every 3 steps, several times inside one 25-step block
    between records, and within checkpointed segments, give the forward-mode derivative."""
    def loss(sigma, grad_mode, **options):
        system = _system(sigma, loggers={"pe": md.PotentialEnergyLogger(25)})
        system = eqx.tree_at(lambda s: s.neighbor_finder, system, md.DistanceNeighborFinder(1.8, capacity=26, every=3))
        trajectory = md.simulate(system, md.VelocityVerlet(0.005), 61, grad_mode=grad_mode, **options)
        return jnp.mean(trajectory.logs["pe"]) + 1e-3 * jnp.sum(trajectory.coords**2)

    value, tangent = jax.jvp(lambda s: loss(s, "forward"), (1.0,), (1.0,))
    for mode, options in (("reverse", {}), ("checkpointed", {}), (md.Checkpointed(7), {})):
        got_value, grad = jax.value_and_grad(lambda s: loss(s, mode, **options))(1.0)
        np.testing.assert_allclose(got_value, value, rtol=1e-12)
        np.testing.assert_allclose(grad, tangent, rtol=1e-7, err_msg=f"{mode} {options}")
    assert abs(float(tangent)) > 1e-2


@pytest.mark.slow  # ~15 s; the default suite keeps the 7-minute budget
def test_vmapped_replicas_rebuild_their_own_lists():
    """Under vmap a replica's list is rebuilt when that replica has moved half the skin: a
    cold and a hot replica (the hot one rebuilds, the cold one keeps its list) give, in every
    reverse mode, the values and gradients of separate runs."""
    def loss(sigma, scale, grad_mode):
        """The loss, and the coordinates the replica's last list was built at."""
        system = _system(sigma, loggers={"pe": md.PotentialEnergyLogger(4)})
        system = eqx.tree_at(lambda s: s.velocities, system, scale * system.velocities)
        trajectory = md.simulate(system, md.VelocityVerlet(0.005), 10, grad_mode=grad_mode)
        value = jnp.mean(trajectory.logs["pe"]) + 1e-3 * jnp.sum(trajectory.coords**2)
        return value, trajectory.state.neighbors.reference_coords

    def check_lists(references):  # the cold replica kept its first list, the hot one rebuilt
        assert np.array_equal(references[0], start) and not np.array_equal(references[1], start)

    scales, start = jnp.array([0.2, 4.0]), np.asarray(_system(1.0).coords)
    separate = [jax.value_and_grad(lambda s, c=scale: loss(s, c, "reverse"), has_aux=True)(1.0) for scale in scales]
    check_lists([reference for (_, reference), _ in separate])
    for mode in ("reverse", "checkpointed"):
        (values, references), grads = jax.vmap(jax.value_and_grad(lambda s, c: loss(s, c, mode), has_aux=True),
                                               in_axes=(None, 0))(1.0, scales)
        check_lists(references)
        for k, ((value, _), grad) in enumerate(separate):
            np.testing.assert_allclose(values[k], value, rtol=1e-12, err_msg=mode)
            np.testing.assert_allclose(grads[k], grad, rtol=1e-10, err_msg=mode)


# ---- each transformation meets the mode that serves it (issue point 6) ----------------------


def test_jvp_of_a_reverse_mode_and_grad_of_forward_name_the_mode_to_use(reverse_value_and_grad):
    """jax.jvp through the default (reverse) run, or a checkpointed one, with a neighbor list
    raises a TypeError pointing to grad_mode='forward'; jax.grad through grad_mode='forward'
    one pointing to 'reverse'/'checkpointed' (also under jit). With the right modes both work and
    agree with each other and with a central finite difference in float64."""
    for mode in ("reverse", md.Checkpointed(5)):
        with pytest.raises(TypeError, match=r"jax\.jvp.*grad_mode='forward'"):
            jax.jvp(lambda s, m=mode: _loss(s, m), (1.0,), (1.0,))
    with pytest.raises(TypeError, match=r"jax\.jvp.*grad_mode='forward'"):
        jax.jacfwd(_loss)(1.0)
    with pytest.raises(TypeError, match=r"grad_mode='reverse' or 'checkpointed'"):
        jax.grad(lambda s: _loss(s, "forward"))(1.0)
    with pytest.raises(TypeError, match=r"grad_mode='reverse' or 'checkpointed'"):
        jax.jit(jax.value_and_grad(lambda s: _loss(s, "forward")))(1.0)

    value, grad = reverse_value_and_grad
    forward_value, tangent = jax.jvp(lambda s: _loss(s, "forward"), (1.0,), (1.0,))  # eager, not jitted
    np.testing.assert_allclose(forward_value, value, rtol=1e-12)
    np.testing.assert_allclose(tangent, grad, rtol=1e-6)
    h = 1e-5
    central = (float(_loss(1.0 + h)) - float(_loss(1.0 - h))) / (2 * h)
    np.testing.assert_allclose(grad, central, rtol=1e-6)
    np.testing.assert_allclose(tangent, central, rtol=1e-6)
    assert abs(central) > 1.0


# ---- gradient-mode values (issue point 8) ----------------------------------------------------


@pytest.mark.parametrize("make, message", [
    (lambda: md.Truncate(), "give window=…, last=… or both"),
    (lambda: md.Truncate(window=0), "Truncate: window must be a positive integer, got 0"),
    (lambda: md.Truncate(window=-5), "Truncate: window must be a positive integer, got -5"),
    (lambda: md.Truncate(window=2.5), "Truncate: window must be a positive integer, got 2.5"),
    (lambda: md.Truncate(window=True), "Truncate: window must be a positive integer, got True"),
    (lambda: md.Truncate(last=0), "Truncate: last must be a positive integer, got 0"),
    (lambda: md.Truncate(window=10, last=-1), "Truncate: last must be a positive integer, got -1"),
    (lambda: md.Truncate(last="3"), "Truncate: last must be a positive integer, got '3'"),
    (lambda: md.Checkpointed(0), "Checkpointed: segment_length must be a positive integer, got 0"),
    (lambda: md.Checkpointed(-2), "Checkpointed: segment_length must be a positive integer, got -2"),
    (lambda: md.Checkpointed(1.5), "Checkpointed: segment_length must be a positive integer, got 1.5"),
    (lambda: md.Checkpointed(False), "Checkpointed: segment_length must be a positive integer, got False"),
])
def test_truncate_and_checkpointed_refuse_bad_values(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


def test_good_grad_mode_values_and_what_simulate_refuses():
    assert md.Truncate(window=3) == md.Truncate(window=3, last=None)
    assert md.Truncate(window=4, last=7).last == 7
    assert md.Checkpointed() == md.Checkpointed(None) and md.Checkpointed(12).segment_length == 12
    # Checkpointed() is the run grad_mode="checkpointed" makes (test_checkpointed_values_equal_reverse)
    assert parse_grad_mode(md.Checkpointed()) == parse_grad_mode("checkpointed") == ("checkpointed", None)
    system, integrator = _system(1.0, loggers={}), md.VelocityVerlet(0.005)
    with pytest.raises(TypeError, match="truncate must be a Truncate"):
        md.simulate(system, integrator, 5, truncate=10)
    with pytest.raises(ValueError, match="grad_mode must be one of"):
        md.simulate(system, integrator, 5, grad_mode="Checkpointed(10)")
    with pytest.raises(ValueError, match="grad_mode must be one of"):
        md.simulate(system, integrator, 5, grad_mode=10)


@pytest.mark.parametrize("grad_mode", ["checkpointed", pytest.param(md.Checkpointed(7), marks=pytest.mark.slow)],
                         ids=["string", "segment-7"])
def test_checkpointed_values_equal_reverse(reverse_value_and_grad, grad_mode):
    """grad_mode="checkpointed" and Checkpointed(k) with k dividing neither the run (37 steps)
    nor the logger intervals: the value and the gradient of "reverse"."""
    value, grad = jax.jit(jax.value_and_grad(lambda s: _loss(s, grad_mode)))(1.0)
    np.testing.assert_allclose(value, reverse_value_and_grad[0], rtol=1e-12)
    np.testing.assert_allclose(grad, reverse_value_and_grad[1], rtol=1e-6)


def test_jvp_of_a_reverse_mode_under_jit_names_the_mode_to_use():
    """The same refusal when the jvp is inside jax.jit (the usual way to run it): the TypeError
    names grad_mode='forward' rather than JAX's bare custom_vjp message."""
    with pytest.raises(TypeError, match=r"jax\.jvp.*grad_mode='forward'"):
        jax.jit(lambda s: jax.jvp(lambda x: _loss(x), (s,), (1.0,)))(1.0)
    with pytest.raises(TypeError, match=r"jax\.jvp.*grad_mode='forward'"):
        jax.jit(jax.jacfwd(lambda s: _loss(s, "checkpointed")))(1.0)
