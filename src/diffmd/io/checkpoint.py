"""Pytree checkpoints in a safe, pickle-free format.

A checkpoint is a zip archive holding one `.npy` file per array leaf (read back with
`allow_pickle=False`) and `meta.json` (epoch, history, free-form metadata). Loading needs a
template pytree of the same structure (e.g. the freshly initialised parameters and optimiser
state); every leaf's shape and dtype are checked against it. Writes are atomic.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .files import _to_builtin, atomic_write_bytes

FORMAT = "diffmd-checkpoint-v1"


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic, float, int, bool, complex)) and not isinstance(x, str)


def _leaves(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return leaves, treedef


def save_checkpoint(path, tree, meta: dict | None = None) -> Path:
    """Save the array leaves of `tree` and a JSON-serialisable `meta` dict to `path` (atomic)."""
    leaves, _ = _leaves(tree)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        kinds = []
        for index, leaf in enumerate(leaves):
            if not _is_array(leaf):
                kinds.append("skip")
                continue
            if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf, kind = jax.random.key_data(leaf), "key"
            else:
                kind = type(leaf).__name__ if isinstance(leaf, (float, int, bool)) else "array"
            kinds.append(kind)
            array_buffer = io.BytesIO()
            np.save(array_buffer, np.asarray(leaf), allow_pickle=False)
            archive.writestr(f"leaves/{index:06d}.npy", array_buffer.getvalue())
        header = {"format": FORMAT, "n_leaves": len(leaves), "kinds": kinds, "meta": _to_builtin(meta or {})}
        archive.writestr("meta.json", json.dumps(header, allow_nan=True))
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path, template):
    """Load a checkpoint written by `save_checkpoint` into the structure of `template`.

    Returns:
        (tree, meta): the restored pytree and the metadata dict.

    Raises:
        ValueError: if the file is not a diffmd checkpoint or does not match `template`.
    """
    path = Path(path)
    leaves, treedef = _leaves(template)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is not a diffmd checkpoint (not a zip archive)") from error
    with archive:
        header = json.loads(archive.read("meta.json"))
        if header.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown checkpoint format {header.get('format')!r}")
        if header["n_leaves"] != len(leaves):
            raise ValueError(
                f"{path}: checkpoint has {header['n_leaves']} leaves but the template has {len(leaves)}; "
                "was it written for a different model or optimiser?"
            )
        restored = []
        for index, (leaf, kind) in enumerate(zip(leaves, header["kinds"])):
            if kind == "skip":
                restored.append(leaf)
                continue
            with archive.open(f"leaves/{index:06d}.npy") as handle:
                value = np.load(io.BytesIO(handle.read()), allow_pickle=False)
            if kind == "key":
                restored.append(jax.random.wrap_key_data(jnp.asarray(value)))
                continue
            expected = np.asarray(jax.random.key_data(leaf) if kind == "key" else leaf)
            if value.shape != expected.shape or value.dtype != expected.dtype:
                raise ValueError(
                    f"{path}: leaf {index} has shape {value.shape} {value.dtype}, template has "
                    f"{expected.shape} {expected.dtype}"
                )
            if kind in ("float", "int", "bool"):
                restored.append(type(leaf)(value.item()))
            elif isinstance(leaf, np.ndarray):
                restored.append(value)
            else:
                restored.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, restored), header["meta"]
