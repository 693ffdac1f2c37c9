"""A neural-network bond: training a network, used as a bond force, through a 400-step simulation.

The third example ("Neural network potentials") of Molly.jl's differentiable-simulation chapter,
written to be read side by side with the reference's code (atom indices 0-based). Departures are
commented where they happen; docs/examples.md gives their measurements, examples/nn_bond_seeds.py
the distribution over seeds.

    .venv/bin/python examples/nn_bond.py --seed 0 --out results/nn_bond
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import diffmd as md
from diffmd.animation import animate
from diffmd.plot import plot_atoms, plot_curve

from _cli import example_parser, write_summary

dtype = jnp.float32  # Float32 as the reference (explicit, so it stays float32 when x64 is on)
dist_true = 1.0


def flux_chain(key) -> eqx.nn.MLP:
    """model = Chain(Dense(1, 5, relu), Dense(5, 1, tanh)), initialised as Flux does: Glorot-uniform
    weights (here U(−1, 1) for both layers), zero biases; drawn from `key` (not Julia's RNG)."""
    model_key, *layer_keys = jax.random.split(key, 3)
    model = eqx.nn.MLP(1, 1, width_size=5, depth=1, activation=jax.nn.relu, final_activation=jnp.tanh,
                       dtype=dtype, key=model_key)
    for i, k in enumerate(layer_keys):
        w = model.layers[i].weight  # (out, in)
        limit = np.sqrt(6.0 / sum(w.shape))
        model = eqx.tree_at(lambda m, i=i: (m.layers[i].weight, m.layers[i].bias), model,
                            (jax.random.uniform(k, w.shape, dtype, -limit, limit), jnp.zeros(w.shape[0], dtype)))
    return model


class NNBond(md.BondedForce):
    """The reference's NNBond: force on i = model(|ab|)·ab/|ab|, ab = vector(c_i, c_j); on j the opposite.

    The model is a field (the reference's force reads a global), so that it is an input of the loss;
    `force` works on a batch of bonds (indices (B, 2)), diffmd's force-only protocol."""

    model: eqx.Module

    def force(self, positions, boundary):
        ab = boundary.vector(positions[:, 0], positions[:, 1])
        dist = jnp.linalg.norm(ab, axis=-1, keepdims=True)
        f = jax.vmap(self.model)(dist) * ab / dist  # model([dist])[1] * normalize(ab)
        return jnp.stack([f, -f], axis=1)  # [f, -f]


n_steps = 400
mass = 10.0
box_size = 5.0
timestep = 0.02
temp = 0.0
thermostat = md.FrictionThermostat(0.98)
integrator = md.VelocityVerlet(timestep, coupling=thermostat)
neighbor_finder = md.NoNeighborFinder()
general_inters = (md.LennardJones(),)  # ignored due to atom parameters (σ = ε = 0), as in the reference
coords = jnp.array([[2.3, 2.07], [2.5, 2.93], [2.7, 2.07]], dtype=dtype)
n_atoms, n_dims = coords.shape
velocities = jnp.zeros_like(coords)
boundary = md.CubicBoundary(jnp.asarray(box_size, dtype), n_dims=n_dims)


def make_system(model) -> md.System:  # the reference builds this inside loss(); the pictures reuse it
    atoms = md.Atoms.uniform(n_atoms, mass=mass, sigma=0.0, epsilon=0.0, dtype=dtype)
    loggers = {"coords": md.CoordinatesLogger(10)}
    specific_inter_lists = ([NNBond(indices=[(0, 2)], model=model)],)
    return md.System(
        atoms=atoms,
        bonded_inters=specific_inter_lists,
        pairwise_inters=general_inters,
        coords=coords,
        velocities=velocities,
        boundary=boundary,
        neighbor_finder=neighbor_finder,
        loggers=loggers,
        units=md.REDUCED_UNITS,
    )


def loss(model):
    c = md.simulate(make_system(model), integrator, n_steps).coords  # final_coords
    dist_end = (jnp.linalg.norm(md.vector(c[0], c[1], boundary)) + jnp.linalg.norm(md.vector(c[1], c[2], boundary)) +
                jnp.linalg.norm(md.vector(c[2], c[0], boundary))) / 3
    loss_val = jnp.abs(dist_end - dist_true)
    return loss_val, dist_end  # Zygote.ignore printing → returned, printed by train()


optimizer = optax.adam(0.02, b1=0.9, b2=0.999)


@eqx.filter_jit
def train_step(model, opt_state):
    """Flux.train!(loss, ps, ((),), opt) with one data item: one gradient of every weight, one Adam update."""
    (loss_val, dist_end), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model)
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
    return eqx.apply_updates(model, updates), opt_state, loss_val, dist_end


def train(model, n_epochs=20, verbose=True):
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    history = []
    for epoch_n in range(1, n_epochs + 1):
        model, opt_state, loss_val, dist_end = train_step(model, opt_state)
        if verbose:
            print(f"Epoch {epoch_n:>2} | Dist end {float(dist_end):6.3f} | Loss {float(loss_val):6.3f}", flush=True)
        history.append({"epoch": epoch_n, "dist": float(dist_end), "loss": float(loss_val)})
    return model, history


def main(argv=None) -> dict:
    parser = example_parser(__doc__, default_out="results/nn_bond")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model0 = flux_chain(jax.random.PRNGKey(args.seed))
    model, history = train(model0, args.epochs)
    final_loss, final_dist = (float(v) for v in eqx.filter_jit(loss)(model))  # after the 20th update
    print(f"After training: mean distance {final_dist:.3f} | Loss {final_loss:.3f}")

    frames = eqx.filter_jit(lambda m: md.simulate(make_system(m), integrator, n_steps).logs["coords"])
    before, after = np.asarray(frames(model0)), np.asarray(frames(model))
    r = np.linspace(0.05, 1.6, 32, dtype=np.float32)
    plots = [
        plot_atoms({"start": coords, "end, before training": before[-1], "end, after training": after[-1]},
                   args.out / "atoms.png", bonds=[(0, 2)], box=(box_size, box_size),
                   title="Three pseudo-atoms and the neural-network bond (0–2)"),
        plot_curve([h["epoch"] for h in history], [h["loss"] for h in history], args.out / "loss_curve.png",
                   "epoch", "loss |mean distance − 1|", title="Training loss"),
        plot_curve(r, jax.vmap(model)(r[:, None])[:, 0], args.out / "network.png", "distance r between atoms 0 and 2",
                   "model(r) (force; > 0 attractive)", title="The trained neural-network bond", hline=0.0),
        animate(after, args.out / "animation.gif", box=box_size, bonds=[(0, 2)], title="After training",
                captions=[f"step {10 * (t + 1)}" for t in range(len(after))]),
    ]
    summary = {"mean_distance": final_dist, "final_loss": final_loss, "dtype": str(after.dtype), "seed": args.seed,
               "epochs": history, "seconds": time.perf_counter() - t0, "plots": [p.name for p in plots]}
    write_summary(args.out, summary)
    print(f"Wrote {args.out / 'summary.json'}, {', '.join(p.name for p in plots)} ({summary['seconds']:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
