"""Atomic file output: write to a temporary file in the same directory, then rename.

A crash or Ctrl-C mid-write leaves the previous file intact, never a truncated one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """A temporary file's name beside `path` to write to; renamed onto `path` when the block
    completes, removed if it fails (parent directories are created). The suffix is the
    temporary's (writers that pick a format from the name need the real one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` atomically (parent directories are created)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def _to_builtin(value):
    if isinstance(value, dict):
        return {str(k): _to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_builtin(v) for v in value]
    if hasattr(value, "shape") or isinstance(value, np.generic):
        array = np.asarray(value)
        return array.item() if array.ndim == 0 else array.tolist()
    return value


def write_json(path, obj, indent: int = 2) -> Path:
    """Write `obj` (dicts, lists, numbers, numpy/JAX arrays) as JSON, atomically."""
    text = json.dumps(_to_builtin(obj), indent=indent, allow_nan=True) + "\n"
    return atomic_write_bytes(path, text.encode())


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically; the format comes from the file suffix."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())
