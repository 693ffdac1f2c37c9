"""Training loop: optax optimiser over any pytree of parameters, with progress, clipping,
history, a NaN/inf guard and safe, atomic checkpoint/resume."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from .io.checkpoint import load_checkpoint, save_checkpoint


class TrainingError(RuntimeError):
    """Training stopped: the loss or gradient became NaN/inf."""


@dataclasses.dataclass
class TrainResult:
    """Outcome of `train`.

    Attributes:
        params: final parameters (those of the last good epoch if training stopped early).
        opt_state: final optimiser state.
        history: one dict per epoch: epoch, loss, grad_norm, seconds, plus scalar aux values.
    """

    params: object
    opt_state: object
    history: list


@jax.custom_vjp
def clip_gradient(x, max_norm):
    """Identity in the forward pass; in the backward pass the cotangent of `x` is scaled down
    to at most `max_norm` (its global norm over the pytree `x`).

    Applied to one copy of the parameters per replica inside a vmapped loss, it bounds what
    any one chaotic trajectory contributes to an ensemble-averaged gradient — per-sample
    clipping without computing per-sample gradients explicitly. The copies must be batched
    (e.g. `jnp.broadcast_to(sigma, (n_replicas,))` mapped over): an unbatched parameter
    receives the replicas' cotangents already summed, and the sum is clipped instead.
    """
    return x


def _clip_gradient_fwd(x, max_norm):
    return x, max_norm


def _clip_gradient_bwd(max_norm, cotangent):
    leaves = jax.tree_util.tree_leaves(cotangent)
    norm = jnp.sqrt(sum(jnp.sum(jnp.abs(g) ** 2) for g in leaves))
    scale = jnp.where(norm > max_norm, max_norm / jnp.where(norm > 0, norm, 1.0), 1.0)
    return jax.tree_util.tree_map(lambda g: (g * scale).astype(g.dtype), cotangent), jnp.zeros_like(max_norm)


clip_gradient.defvjp(_clip_gradient_fwd, _clip_gradient_bwd)


def _scalars(aux) -> dict:
    if isinstance(aux, dict):
        out = {}
        for name, value in aux.items():
            array = np.asarray(value)
            if array.ndim == 0:
                out[str(name)] = float(array)
        return out
    return {}


def train(loss_fn: Callable, params, optimizer: optax.GradientTransformation, n_epochs: int, *,
          key=None, has_aux: bool = False, clip_norm: float | None = None, checkpoint: str | Path | None = None,
          checkpoint_every: int = 1, progress: bool = True, callback: Callable | None = None) -> TrainResult:
    """Minimise `loss_fn` over `params` with an optax optimiser.

    Args:
        loss_fn: `loss_fn(params)` or, if `key` is given, `loss_fn(params, key)` with a fresh
            key each epoch (new random starts per epoch). Returns the scalar loss, or
            `(loss, aux)` with `has_aux=True`; scalar entries of an aux dict go into the history.
        params: any pytree (floats, arrays, equinox modules); non-array leaves are left alone.
        optimizer: e.g. `optax.adam(1e-2)` or `optax.sgd(1e-2)`.
        n_epochs: total number of epochs (including those already done when resuming).
        key: PRNG key; epoch e uses `jax.random.fold_in(key, e)`, so a resumed run draws
            exactly the keys an uninterrupted run would.
        clip_norm: clip the gradient to this global norm before the optimiser.
        checkpoint: path of a checkpoint file. If it exists, training resumes from it; it is
            rewritten atomically every `checkpoint_every` epochs and at the end.
        progress: show a progress bar with the loss and gradient norm.
        callback: called as `callback(epoch, params, record)` after each epoch.

    Raises:
        TrainingError: if the loss or the gradient is NaN/inf; the message names the epoch.
            The parameters are not updated with the bad gradient, and the checkpoint keeps the
            last good epoch.
    """
    if clip_norm is not None:
        optimizer = optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)
    # Python floats become arrays so that they train too (e.g. a scalar σ); strongly typed, or
    # the first update (which returns a strong type) would compile the step a second time.
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=float) if isinstance(x, float) else x, params)
    params_array, params_static = eqx.partition(params, eqx.is_inexact_array)
    opt_state = optimizer.init(params_array)
    history: list = []
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        (params_array, opt_state), meta = load_checkpoint(checkpoint, (params_array, opt_state))
        history = list(meta.get("history", []))
        start = int(meta["epoch"])

    def objective(p_array, *args):
        return loss_fn(eqx.combine(p_array, params_static), *args)

    @eqx.filter_jit
    def step(p_array, opt_state, *args):
        value, grads = eqx.filter_value_and_grad(objective, has_aux=has_aux)(p_array, *args)
        loss, aux = value if has_aux else (value, None)
        grad_norm = jnp.sqrt(sum(jnp.sum(g.astype(jnp.float32) ** 2) for g in jax.tree_util.tree_leaves(grads)))
        updates, new_state = optimizer.update(grads, opt_state, p_array)
        return eqx.apply_updates(p_array, updates), new_state, loss, grad_norm, aux

    def save(epoch):
        if checkpoint is not None:
            save_checkpoint(checkpoint, (params_array, opt_state), {"epoch": epoch, "history": history})

    bar = tqdm(range(start, n_epochs), disable=not progress, desc="training", unit="epoch",
               initial=start, total=n_epochs)
    for epoch in bar:
        t0 = time.perf_counter()
        args = () if key is None else (jax.random.fold_in(key, epoch),)
        new_params, new_state, loss, grad_norm, aux = step(params_array, opt_state, *args)
        loss, grad_norm = float(loss), float(grad_norm)
        if not (np.isfinite(loss) and np.isfinite(grad_norm)):
            save(epoch)
            bar.close()
            raise TrainingError(
                f"epoch {epoch + 1}: non-finite {'loss' if not np.isfinite(loss) else 'gradient'} "
                f"(loss={loss}, grad_norm={grad_norm}); parameters kept from epoch {epoch}. Try a smaller "
                "learning rate, clip_norm=..., a thermostat or a shorter horizon"
            )
        params_array, opt_state = new_params, new_state
        record = {"epoch": epoch + 1, "loss": loss, "grad_norm": grad_norm,
                  "seconds": time.perf_counter() - t0, **_scalars(aux)}
        history.append(record)
        bar.set_postfix(loss=f"{loss:.4g}", grad=f"{grad_norm:.3g}")
        if callback is not None:
            callback(epoch + 1, eqx.combine(params_array, params_static), record)
        if (epoch + 1) % checkpoint_every == 0:
            save(epoch + 1)
    bar.close()
    save(n_epochs if n_epochs > start else start)
    return TrainResult(eqx.combine(params_array, params_static), opt_state, history)
