"""Fixed distances between atom pairs: bonds to hydrogen, rigid water (SHAKE/RATTLE by Newton's
method on each cluster of coupled constraints).

Constraints c = (a, b, d_c) ask |x_a − x_b| = d_c. They fall into clusters that share no atom
(a heavy atom with its hydrogens; the three distances of a rigid water), and each cluster is
solved on its own, all clusters of one shape at once.

Positions (SHAKE). An update moved the atoms from x⁰ (on the constraints) to x'. The constrained
x moves each atom along the constraint directions at x⁰, weighted by its inverse mass:

    x_k = x'_k + w_k Σ_c λ_c S_ck r⁰_c,      r⁰_c = x⁰_a − x⁰_b,  S_ck = +1 (k = a), −1 (k = b),

so the bond vectors are r_c(λ) = r'_c + Σ_b K_cb λ_b r⁰_b with K = S diag(w) Sᵀ, and λ solves
g_c(λ) = |r_c(λ)|² − d_c² = 0. Newton's method on the whole cluster (M-SHAKE), with the Jacobian
J_cb = 2 K_cb r_c·r⁰_b, converges quadratically from λ = 0; a fixed number of iterations keeps
the loop's shape static. For rigid water these are SETTLE's equations (its analytic solution is
the same point), solved to rounding by the iteration.

Velocities (RATTLE). v_k ← v_k + w_k Σ_c μ_c S_ck r_c with μ from the linear system
Σ_b K_cb (r_c·r_b) μ_b = −r_c·(v_a − v_b): the relative velocity along every bond vanishes.

Large clusters (AllBonds: a whole protein chain, hundreds of coupled constraints) are solved
as CCMA does (Eastman & Pande, J. Chem. Theory Comput. 6, 434 (2010)): the Newton matrix J is
replaced by a constant approximation 2 D M D, M_cb = K_cb u_c·u_b from a reference geometry
(unit bond vectors u and masses given at construction), whose inverse is computed once; each
iteration is then one dense matrix-vector product, λ ← λ − ½ D⁻¹ M⁻¹ D⁻¹ g(λ), D = diag(d),
converging linearly (to rounding in 20 iterations in float64 and 10 in float32 from a 2 fs
step). RATTLE's linear system is solved by the same iteration.

Derivatives: the iterations are unrolled (a fixed-length loop that reverse and forward mode
differentiate like any other), so a gradient through a constrained run is the exact derivative
of what was computed; with the iteration converged it is the derivative of the projection.
The distances d_c are differentiable leaves.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .._static import StaticArray, as_static
from ..observables import pair_distances
from .constraints import Constraints

MAX_CLUSTER_CONSTRAINTS = 64  # a dense Newton solve per cluster: bonds to H, water, H angles
CCMA_ITERATIONS = {"float64": 20, "float32": 10}  # larger clusters: the preconditioned iteration


def solve_small(a: Array, b: Array) -> Array:
    """x with a x = b for a batch of small systems, a (G, C, C), b (G, C).

    Up to 6×6: Gaussian elimination unrolled over the static C, without pivoting (the matrices
    here are mass-weighted Gram matrices of independent bond vectors, diagonally dominant
    enough). These are elementwise operations over the batch that XLA fuses, where LAPACK's
    batched solve made one call per cluster (3 ms for 900 waters).
    """
    c = a.shape[-1]
    if c > 6:
        return jnp.linalg.solve(a, b[..., None])[..., 0]
    rows = [[a[..., i, j] for j in range(c)] for i in range(c)]
    rhs = [b[..., i] for i in range(c)]
    for p in range(c):
        inv = 1.0 / rows[p][p]
        for i in range(p + 1, c):
            factor = rows[i][p] * inv
            for j in range(p + 1, c):
                rows[i][j] = rows[i][j] - factor * rows[p][j]
            rhs[i] = rhs[i] - factor * rhs[p]
    x = [None] * c
    for i in reversed(range(c)):
        acc = rhs[i]
        for j in range(i + 1, c):
            acc = acc - rows[i][j] * x[j]
        x[i] = acc / rows[i][i]
    return jnp.stack(x, axis=-1)


class _Clusters(eqx.Module):
    """G clusters of one shape: A atoms joined by C constraints in the same pattern (static)."""

    atoms: StaticArray  # (G, A) atom indices
    ends: tuple  # C pairs (a, b) of positions in the cluster, shared by all G clusters
    index: StaticArray  # (G, C) each constraint's row in the pair list

    def coupling(self) -> dict:
        """{(c, b): [(k, sign)]}: K_cb = Σ sign·w_k over the atoms k that constraints c and b share."""
        out = {}
        for c, (a1, b1) in enumerate(self.ends):
            for b, (a2, b2) in enumerate(self.ends):
                terms = [(k, s1 * s2) for k, s1 in ((a1, 1.0), (b1, -1.0)) for kk, s2 in ((a2, 1.0), (b2, -1.0))
                         if k == kk]
                if terms:
                    out[c, b] = terms
        return out


class _LargeCluster(eqx.Module):
    """One cluster of more than MAX_CLUSTER_CONSTRAINTS constraints, solved by CCMA's iteration.

    atoms: (A,) atom indices; ia, ib: (C,) each constraint's ends as positions in `atoms`;
    index: (C,) rows in the pair list; inverse: (C, C) M⁻¹ of the reference geometry (static).
    """

    atoms: StaticArray
    ia: StaticArray
    ib: StaticArray
    index: StaticArray
    inverse: StaticArray

    @staticmethod
    def build(atoms, rows, pairs, masses, geometry) -> _LargeCluster:
        ia, ib = np.searchsorted(atoms, pairs[rows, 0]), np.searchsorted(atoms, pairs[rows, 1])
        u = geometry[pairs[rows, 0]] - geometry[pairs[rows, 1]]
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
        w = 1.0 / masses[atoms]
        # K_cb = Σ over shared atoms of ±w (S diag(w) Sᵀ), as a dense product of the incidence matrix.
        incidence = np.zeros((len(rows), len(atoms)))
        incidence[np.arange(len(rows)), ia] = 1.0
        incidence[np.arange(len(rows)), ib] = -1.0
        coupling = (incidence * w) @ incidence.T * (u @ u.T)
        return _LargeCluster(as_static(atoms), as_static(ia), as_static(ib), as_static(rows),
                             StaticArray(np.linalg.inv(coupling), dtype=np.float64))

    def _spread(self, amounts, vectors, w):
        """Per-atom changes (A, D): w_k Σ_c amount_c S_ck vector_c."""
        step = amounts[:, None] * vectors
        n = len(self.atoms.array)
        return w[:, None] * (jax.ops.segment_sum(step, self.ia.array, n) - jax.ops.segment_sum(step, self.ib.array, n))

    def shake(self, new, old, inv_mass, boundary, d, iterations):
        x1, x0 = new[self.atoms.array], old[self.atoms.array]
        r0 = boundary.vector(x0[self.ib.array], x0[self.ia.array])
        r1 = boundary.vector(x1[self.ib.array], x1[self.ia.array])
        w = inv_mass[self.atoms.array][:, 0].astype(new.dtype)
        inverse = jnp.asarray(self.inverse.array, new.dtype)

        def iteration(_, lam):
            delta = self._spread(lam, r0, w)
            r = r1 + delta[self.ia.array] - delta[self.ib.array]
            g = jnp.sum(r * r, axis=-1) - d * d
            return lam - 0.5 * (inverse @ (g / d)) / d

        lam = jax.lax.fori_loop(0, iterations, iteration, jnp.zeros_like(d))
        return self._spread(lam, r0, w)

    def rattle(self, coords, velocities, inv_mass, boundary, d, iterations):
        x = coords[self.atoms.array]
        r = boundary.vector(x[self.ib.array], x[self.ia.array])
        v = velocities[self.atoms.array]
        w = inv_mass[self.atoms.array][:, 0].astype(velocities.dtype)
        inverse = jnp.asarray(self.inverse.array, velocities.dtype)

        def iteration(_, mu):
            moved = v + self._spread(mu, r, w)
            residual = jnp.sum(r * (moved[self.ia.array] - moved[self.ib.array]), axis=-1)
            return mu - (inverse @ (residual / d)) / d

        mu = jax.lax.fori_loop(0, iterations, iteration, jnp.zeros_like(d))
        return self._spread(mu, r, w)


def _clusters(pairs: np.ndarray, masses=None, geometry=None) -> tuple[tuple[_Clusters, ...], tuple[_LargeCluster, ...]]:
    """Connected components of the constraint graph: the small ones grouped by their pattern,
    the large ones (CCMA's iteration; they need reference masses and geometry) one by one."""
    m = len(pairs)
    if m == 0:
        return (), ()
    n = int(pairs.max()) + 1
    graph = coo_matrix((np.ones(m), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    component = label[pairs[:, 0]]
    groups: dict[tuple, list] = {}
    large = []
    order = np.argsort(component, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(component[order]) != 0])
    for rows in np.split(order, starts[1:]):
        atoms = np.unique(pairs[rows])
        if len(rows) > MAX_CLUSTER_CONSTRAINTS:
            if masses is None or geometry is None:
                raise ValueError(f"DistanceConstraints: {len(rows)} constraints couple atoms {atoms[:6].tolist()}... "
                                 f"into one cluster (AllBonds); clusters of more than {MAX_CLUSTER_CONSTRAINTS} are "
                                 "solved by CCMA's iteration, which needs masses= and geometry= (reference "
                                 "coordinates); from_openmm and create_system pass them")
            large.append(_LargeCluster.build(atoms, rows, pairs, masses, geometry))
            continue
        ends = tuple(map(tuple, np.searchsorted(atoms, pairs[rows]).tolist()))
        groups.setdefault((len(atoms), ends), []).append((atoms, rows))
    small = tuple(_Clusters(atoms=as_static(np.stack([a for a, _ in members])), ends=ends,
                            index=as_static(np.stack([r for _, r in members])))
                  for (_, ends), members in sorted(groups.items()))
    return small, tuple(large)


class DistanceConstraints(Constraints):
    """|x_a − x_b| = d for each pair (see the module docstring for the method).

    Attributes:
        pairs: (M, 2) 0-based atom indices (static); no atom pair twice.
        distances: (M,) constrained distances (length units); a differentiable leaf.
        iterations: Newton iterations per position projection (each solves every cluster's
            C×C system once); 0 picks by precision (8 in float64, 5 in float32), enough to
            converge from a step of any stable time step to rounding.
        masses, geometry: (N,) masses and (N, D) reference coordinates, needed (and used) only
            for clusters of more than MAX_CLUSTER_CONSTRAINTS constraints (AllBonds), whose
            CCMA matrix they fix.
    """

    pairs: StaticArray = eqx.field(static=True)
    distances: Array
    iterations: int = eqx.field(static=True, default=0)
    clusters: tuple = eqx.field(static=True, default=None)
    large_clusters: tuple = eqx.field(static=True, default=())

    def __init__(self, pairs, distances, iterations: int = 0, *, masses=None, geometry=None):
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        distances = jnp.asarray(distances)
        if distances.shape != (len(pairs),):
            raise ValueError(f"DistanceConstraints: {len(pairs)} pairs but distances of shape {distances.shape}")
        if len(pairs) and pairs.min() < 0:
            raise ValueError("DistanceConstraints: atom indices must be non-negative (they are 0-based)")
        if np.any(pairs[:, 0] == pairs[:, 1]):
            raise ValueError("DistanceConstraints: a constraint joins an atom to itself")
        if len(np.unique(np.sort(pairs, axis=1), axis=0)) != len(pairs):
            raise ValueError("DistanceConstraints: an atom pair is constrained twice")
        if not isinstance(distances, jax.core.Tracer):
            values = np.asarray(distances)
            if not np.all(np.isfinite(values)) or np.any(values <= 0):
                raise ValueError("DistanceConstraints: distances must be positive and finite")
        self.pairs = as_static(pairs)
        self.distances = distances
        self.iterations = int(iterations)
        if masses is not None:
            masses, geometry = np.asarray(masses, np.float64), np.asarray(geometry, np.float64)
        self.clusters, self.large_clusters = _clusters(pairs, masses, geometry)

    def n_removed(self, n_dims: int) -> int:
        return len(self.pairs)

    def _iterations(self, dtype) -> int:
        return self.iterations or (8 if jnp.dtype(dtype) == jnp.float64 else 5)

    def positions(self, new, old, inv_mass, boundary):
        x = new
        for group in self.clusters:
            x = x.at[group.atoms.array].add(self._shake(group, new, old, inv_mass, boundary))
        for cluster in self.large_clusters:
            d = self.distances.astype(new.dtype)[cluster.index.array]
            x = x.at[cluster.atoms.array].add(cluster.shake(new, old, inv_mass, boundary, d, self._ccma_iterations(new.dtype)))
        return x

    def velocities(self, coords, velocities, inv_mass, boundary):
        v = velocities
        for group in self.clusters:
            v = v.at[group.atoms.array].add(self._rattle(group, coords, velocities, inv_mass, boundary))
        for cluster in self.large_clusters:
            d = self.distances.astype(velocities.dtype)[cluster.index.array]
            v = v.at[cluster.atoms.array].add(cluster.rattle(coords, velocities, inv_mass, boundary, d,
                                                             self._ccma_iterations(velocities.dtype)))
        return v

    def _ccma_iterations(self, dtype) -> int:
        return self.iterations or CCMA_ITERATIONS[jnp.dtype(dtype).name]

    @staticmethod
    def _bonds(group, x, boundary):
        """Bond vectors r_c = x_a − x_b of every cluster of a group, C arrays (G, D) (minimum image)."""
        xs = x[group.atoms.array]  # (G, A, D)
        return [boundary.vector(xs[:, b], xs[:, a]) for a, b in group.ends]

    @staticmethod
    def _weights(group, inv_mass, dtype):
        """({(c, b): K_cb (G,)}, w (G, A)) with K = S diag(w) Sᵀ."""
        w = inv_mass[group.atoms.array][..., 0].astype(dtype)
        return {cb: sum(sign * w[:, k] for k, sign in terms) for cb, terms in group.coupling().items()}, w

    @staticmethod
    def _move(group, w, amounts, vectors):
        """Per-atom changes (G, A, D): w_k Σ_c amount_c S_ck vector_c."""
        per_atom = [0.0] * group.atoms.shape[1]
        for (a, b), amount, vector in zip(group.ends, amounts, vectors):
            step = amount[:, None] * vector
            per_atom[a] = per_atom[a] + step
            per_atom[b] = per_atom[b] - step
        return w[..., None] * jnp.stack(jnp.broadcast_arrays(*per_atom), axis=1)

    def _shake(self, group, new, old, inv_mass, boundary):
        """Displacements (G, A, D) that put one group of clusters on its constraints."""
        dtype = new.dtype
        k, w = self._weights(group, inv_mass, dtype)
        r0, r1 = self._bonds(group, old, boundary), self._bonds(group, new, boundary)
        d2 = jnp.square(self.distances.astype(dtype)[group.index.array])  # (G, C)
        n_c = len(group.ends)

        def newton(_, lam):
            lam = [lam[:, c] for c in range(n_c)]
            r = [r1[c] + sum(k[c, b][:, None] * lam[b][:, None] * r0[b] for b in range(n_c) if (c, b) in k)
                 for c in range(n_c)]
            g = jnp.stack([jnp.sum(r[c] * r[c], axis=-1) for c in range(n_c)], axis=-1) - d2
            zero = jnp.zeros_like(d2[:, 0])
            jac = jnp.stack([jnp.stack([2.0 * k[c, b] * jnp.sum(r[c] * r0[b], axis=-1) if (c, b) in k else zero
                                        for b in range(n_c)], axis=-1) for c in range(n_c)], axis=-2)
            return jnp.stack(lam, axis=-1) - solve_small(jac, g)

        lam = jax.lax.fori_loop(0, self._iterations(dtype), newton, jnp.zeros(d2.shape, dtype))
        return self._move(group, w, [lam[:, c] for c in range(n_c)], r0)

    def _rattle(self, group, coords, velocities, inv_mass, boundary):
        """Velocity changes (G, A, D) that remove every bond's relative velocity along it."""
        dtype = velocities.dtype
        k, w = self._weights(group, inv_mass, dtype)
        r = self._bonds(group, coords, boundary)
        vs = velocities[group.atoms.array]
        n_c = len(group.ends)
        zero = jnp.zeros(vs.shape[0], dtype)
        a = jnp.stack([jnp.stack([k[c, b] * jnp.sum(r[c] * r[b], axis=-1) if (c, b) in k else zero
                                  for b in range(n_c)], axis=-1) for c in range(n_c)], axis=-2)
        rhs = jnp.stack([-jnp.sum(r[c] * (vs[:, a_] - vs[:, b_]), axis=-1) for c, (a_, b_) in enumerate(group.ends)],
                        axis=-1)
        mu = solve_small(a, rhs)
        return self._move(group, w, [mu[:, c] for c in range(n_c)], r)

    def violation(self, coords, boundary) -> Array:
        """max_c | |x_a − x_b| − d_c | / d_c: how far coords are from the constraints."""
        if not len(self.pairs):
            return jnp.zeros((), coords.dtype)
        r = pair_distances(coords, boundary, self.pairs.array)
        d = self.distances.astype(coords.dtype)
        return jnp.max(jnp.abs(r - d) / d)
