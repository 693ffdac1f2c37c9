"""Atomic file output and pickle-free checkpoints."""

import os
import stat
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffmd.io import atomic_write_bytes, write_json
from diffmd.io.checkpoint import load_checkpoint, save_checkpoint


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    path = tmp_path / "sub" / "out.json"
    write_json(path, {"a": jnp.arange(3), "b": np.float32(1.5)})
    assert path.read_text().replace(" ", "").replace("\n", "") == '{"a":[0,1,2],"b":1.5}'
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & 0o044  # group/other can read (mkstemp alone would give 0600)
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]  # no temporary left behind


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.bin"
    atomic_write_bytes(path, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "s": 0.5, "key": jax.random.PRNGKey(3), "n": 7}
    path = save_checkpoint(tmp_path / "ck.zip", tree, {"epoch": 4})
    restored, meta = load_checkpoint(path, tree)
    assert meta == {"epoch": 4}
    np.testing.assert_array_equal(restored["w"], tree["w"])
    assert restored["s"] == 0.5 and isinstance(restored["s"], float) and restored["n"] == 7
    np.testing.assert_array_equal(restored["key"], tree["key"])
    with zipfile.ZipFile(path) as archive:  # plain .npy members, nothing pickled
        assert all(name.endswith((".npy", ".json")) for name in archive.namelist())
    with pytest.raises(ValueError, match="leaves"):
        load_checkpoint(path, {"w": tree["w"]})
    with pytest.raises(ValueError, match="shape"):
        load_checkpoint(path, {**tree, "w": jnp.zeros(3)})
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a diffmd checkpoint"):
        load_checkpoint(tmp_path / "bad.zip", tree)
