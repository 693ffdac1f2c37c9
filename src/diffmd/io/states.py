"""Simulation checkpoints: an `MDState` (coordinates, velocities, forces, step, PRNG key,
neighbor list, box, barostat and thermostat variables) to a file and back, pickle-free.

The file is `save_checkpoint`'s zip of `.npy` arrays plus JSON; the neighbor list's static
capacity goes in the JSON, so `load_state` rebuilds a template of the same shapes from the
System and integrator the run used. A run continued from a loaded state
(`simulate(..., start=state)`) is bit-identical to one that never stopped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import equinox as eqx
import jax

from ..neighbors import Capacity
from .checkpoint import load_checkpoint, save_checkpoint

STATE_FORMAT = "diffmd-state-v1"


def save_state(path, state, meta: dict | None = None) -> Path:
    """Write `state` (a run's `trajectory.state`) to `path` atomically, with `meta`."""
    capacity = None if state.neighbors is None else dataclasses.asdict(state.neighbors.capacity)
    return save_checkpoint(path, state, {"format": STATE_FORMAT, "capacity": capacity, **(meta or {})})


def load_state(path, system, integrator, key=None):
    """(state, meta) from a file written by `save_state` for this System and integrator (the same
    structure: atoms, terms, neighbor finder, couplings). `key`: a key of the kind the run used
    (`jax.random.PRNGKey(0)` by default; its value is replaced by the saved one)."""
    from ..run import simulate

    if key is None and integrator.needs_any_key:
        key = jax.random.PRNGKey(0)
    template = simulate(system, integrator, 0, key=key).state
    meta = _meta(path)
    if meta.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: not a diffmd simulation state (format {meta.get('format')!r})")
    saved = meta.get("capacity")
    if (saved is None) != (template.neighbors is None):
        raise ValueError(f"{path}: saved {'without' if saved is None else 'with'} a neighbor list, but this System "
                         f"{'uses' if template.neighbors is not None else 'does not use'} one")
    if saved is not None:
        capacity = Capacity(saved["slots"], saved["cell_slots"], None if saved["grid"] is None else tuple(saved["grid"]))
        if capacity != template.neighbors.capacity:
            neighbors = system.neighbor_finder.build(template.coords, template.box(system),
                                                     system.excluded_pairs().array, capacity)
            template = eqx.tree_at(lambda s: s.neighbors, template, neighbors)
    return load_checkpoint(path, template)


def _meta(path) -> dict:
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("meta.json")).get("meta", {})
    except (zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{path} is not a diffmd checkpoint") from error
