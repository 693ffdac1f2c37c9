"""Local energy minimisation, as OpenMM's LocalEnergyMinimizer, and differentiable.

L-BFGS (optax's, with its zoom line search satisfying the strong Wolfe conditions) on the
potential energy, stopped when the root-mean-square of the force components is at most
`tolerance` (OpenMM's criterion, kJ/mol/nm), after `max_iterations` iterations, or after 10
iterations in a row that lowered the energy by no more than rounding. The neighbor list is
rebuilt inside the loop once an atom has moved a quarter of the skin, and a line-search trial
point farther than half the skin from the list's reference counts as +inf, so a stale list never
gives a wrong energy.

Constraints: the search minimises E(P(x)), P the projection onto the constraints (the same
SHAKE solve the integrators use, differentiated through), so every point it evaluates is on
them. (OpenMM's minimiser replaces constraints by a stiff harmonic penalty; with TIP3P, whose
hydrogens have no Lennard-Jones repulsion, a penalty too soft lets a hydrogen fall onto another
water's oxygen.)

Gradients, by the implicit function theorem. At the minimum x*(θ), ∇ₓE(x*, θ) = 0, so for a loss
L(x*): dL/dθ = −(∂²E/∂θ∂x) H⁻¹ ∂L/∂x*, H = ∂²E/∂x². The backward pass solves H λ = ∂L/∂x* by
conjugate gradients with Hessian-vector products (the compiled forward-mode force kernels),
then takes the gradient of F(x*, θ)·λ with respect to θ: no iteration is differentiated, the
memory is that of one force evaluation, and the result is exact to the solve's tolerance when
the minimisation has converged (a loose `tolerance` gives the derivative of a point that is not
yet the minimum).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..dynamics.constraints import FixedAtoms
from ..dynamics.distance_constraints import DistanceConstraints
from ..energy import energy_and_forces
from .checks import SimulationError
from .driver import list_builder
from .simulate import _choose_capacity

MAX_ITERATIONS = 100_000  # what max_iterations=0 (until converged) means


def _projection(system):
    """x ↦ x put on the system's distance constraints (along its own bond directions), or None."""
    constraints = system.constraints
    if not isinstance(constraints, DistanceConstraints) or not len(constraints.pairs):
        return None

    def project(coords):
        inv_mass = (1.0 / system.atoms.mass).astype(coords.dtype)[:, None]
        return constraints.positions(coords, coords, inv_mass, system.boundary)

    return project


def _pinned(system, coords):
    """Fixed atoms (zero mass in OpenMM) kept where they are."""
    if not isinstance(system.constraints, FixedAtoms):
        return coords
    frozen = jnp.asarray(system.constraints.frozen(system.n_atoms))[:, None]
    return jnp.where(frozen, jax.lax.stop_gradient(system.coords), coords)


def _energy_function(system, derivatives: str):
    """energy(coords, neighbors) = E(P(coords)), P the projection onto the constraints."""
    project = _projection(system)

    def energy(coords, neighbors):
        coords = _pinned(system, coords if project is None else project(coords))
        return energy_and_forces(system, coords, neighbors, derivatives=derivatives)[0]

    return energy


def _force_function(system, derivatives: str):
    """forces(coords, neighbors) = −∇ₓE(P(x)): the forces at P(x) pulled back through P."""
    project = _projection(system)

    def forces(coords, neighbors):
        placed, pull_back = jax.vjp(lambda x: _pinned(system, x if project is None else project(x)), coords)
        return pull_back(energy_and_forces(system, placed, neighbors, derivatives=derivatives)[1])[0]

    return forces


def _search(system, tolerance: float, max_iterations: int):
    """(coords at the minimum of E∘P, iterations, final RMS force). The list's capacity is sized
    here, from concrete coordinates; the descent is compiled once per System structure,
    capacity and settings (a loss that minimises again reuses it)."""
    capacity = _choose_capacity(system) if system.uses_neighbor_list() else None
    x, iterations, final_rms, overflowed = _descend(system, capacity, float(tolerance), int(max_iterations))
    if not isinstance(overflowed, jax.core.Tracer) and bool(overflowed):
        raise SimulationError("minimize: the neighbor list overflowed while the atoms moved (they crowded "
                              "together); give the finder a larger capacity")
    return x, iterations, final_rms


@eqx.filter_jit
def _descend(system, capacity, tolerance: float, max_iterations: int):
    """The L-BFGS loop (see the module docstring): (x, iterations, RMS force, list overflowed)."""
    uses_list = system.uses_neighbor_list()
    build = list_builder(system, capacity) if uses_list else None
    half_skin = system.neighbor_skin() / 2 if uses_list else 0.0
    energy = _energy_function(system, "reverse")
    project = _projection(system)
    solver = optax.lbfgs(linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=20))
    x0 = system.coords
    n_components = x0.size
    limit = max_iterations if max_iterations > 0 else MAX_ITERATIONS

    def displacement2(x, neighbors):
        moved = system.boundary.vector(neighbors.reference_coords, x)
        return jnp.max(jnp.sum(moved * moved, axis=-1))

    def refresh(x, neighbors):
        """A list valid for trial points up to half the skin away: rebuilt once x has moved a
        quarter of it, so each line search has at least that much room."""
        if not uses_list:
            return None
        far = displacement2(x, neighbors) > (half_skin / 2) ** 2
        return jax.lax.cond(far, lambda: build(jax.lax.stop_gradient(x), neighbors), lambda: neighbors)

    def trial_energy(y, neighbors):
        """The energy where the list is valid, +inf beyond (the line search then steps back)."""
        e = energy(y, neighbors)
        if not uses_list:
            return e
        return jnp.where(displacement2(jax.lax.stop_gradient(y), neighbors) > half_skin**2, jnp.inf, e)

    def rms(grad):
        return jnp.sqrt(jnp.sum(grad * grad) / n_components)

    def step(carry):
        x, opt_state, neighbors, value, grad, count, stalled = carry
        value_fn = lambda y: trial_energy(y, neighbors)  # noqa: E731
        updates, opt_state = solver.update(grad, opt_state, x, value=value, grad=grad, value_fn=value_fn)
        x = optax.apply_updates(x, updates)
        if project is not None:  # E∘P ignores moves off the constraints: keep x on them
            x = project(x)
        neighbors = refresh(x, neighbors)
        new_value, grad = jax.value_and_grad(energy)(x, neighbors)
        # Rounding ends the descent before a tolerance below it is met: stop after 10
        # iterations in a row that lowered the energy by no more than rounding.
        idle = new_value >= value - 4 * jnp.finfo(x.dtype).eps * jnp.abs(value)
        return x, opt_state, neighbors, new_value, grad, count + 1, jnp.where(idle, stalled + 1, 0)

    def going(carry):
        *_, value, grad, count, stalled = carry
        return (count < limit) & (rms(grad) > tolerance) & jnp.isfinite(value) & (stalled < 10)

    neighbors = build(x0) if uses_list else None
    value, grad = jax.value_and_grad(energy)(x0, neighbors)
    carry = jax.lax.while_loop(going, step, (x0, solver.init(x0), neighbors, value, grad, jnp.int32(0),
                                             jnp.int32(0)))[:-1]
    overflowed = carry[2].overflowed if uses_list else jnp.zeros((), bool)
    return carry[0], carry[-1], rms(carry[-2]), overflowed


def minimize(system, tolerance: float = 10.0, max_iterations: int = 0):
    """The System with its coordinates moved to a local minimum of the potential energy.

    Args:
        system: the System (its velocities are kept).
        tolerance: stop once the root-mean-square force component is at most this (energy per
            length: kJ/mol/nm), OpenMM's criterion and default.
        max_iterations: at most this many L-BFGS iterations; 0 runs until converged.
    Returns:
        A System on its constraints at the minimum; differentiable with respect to every
        parameter of `system` (see the module docstring), the coordinates excepted (a local
        minimum does not move with its starting point).
    """
    params, static = eqx.partition(system, eqx.is_inexact_array)
    params = eqx.tree_at(lambda s: s.coords, params, replace_fn=jax.lax.stop_gradient)
    settings = (float(tolerance), int(max_iterations))

    @jax.custom_vjp
    def argmin(p):
        return _search(eqx.combine(p, static), *settings)[0]

    def forward(p):
        x = argmin(p)
        return x, (p, x)

    def backward(residuals, x_bar):
        p, x = residuals
        live = eqx.combine(p, static)
        neighbors = list_builder(live, _choose_capacity(live))(x) if live.uses_neighbor_list() else None
        forces = _force_function(live, "forward")

        def hessian_times(v):  # H v = −(d/dε) F(x + ε v)
            return -jax.jvp(lambda y: forces(y, neighbors), (x,), (v,))[1]

        lam, _ = jax.scipy.sparse.linalg.cg(hessian_times, x_bar, tol=1e-10, maxiter=10 * x.size)

        def work(q):  # F(x*, θ)·λ, whose θ-gradient is dL/dθ
            return jnp.vdot(_force_function(eqx.combine(q, static), "reverse")(x, neighbors), lam)

        return (jax.grad(work)(p),)

    argmin.defvjp(forward, backward)
    coords = argmin(params)
    project = _projection(system)
    if project is not None:
        coords = project(coords)
    return eqx.tree_at(lambda s: s.coords, system, coords)
