"""Pictures: animations of trajectories (bonds along the minimum image, the box drawn, written
atomically) and the state CSV's plot; errors name what is wrong."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib.animation as manimation
import numpy as np
import pytest
from PIL import Image

import diffmd as md
from diffmd.animation import animate, bond_segments
from diffmd.plot import plot_state_csv


def _walk(n_frames, n_atoms, n_dims, side=2.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, side, (1, n_atoms, n_dims)) + np.cumsum(rng.normal(0, 0.1, (n_frames, n_atoms, n_dims)), 0)


def test_a_3d_gif_with_bonds_reads_back_with_its_frames(tmp_path):
    frames = jnp.asarray(_walk(4, 6, 3))  # JAX arrays are accepted as they come from a logger
    out = animate(frames, tmp_path / "sub" / "mol.gif", box=2.0, bonds=[(0, 1), (1, 2), (3, 4)],
                  colors=["tab:blue"] * 3 + ["tab:orange"] * 3, captions=[f"step {k}" for k in range(4)], title="t")
    assert out == tmp_path / "sub" / "mol.gif"
    with Image.open(out) as image:
        assert image.n_frames == 4 and image.size == (480, 480)
    assert [p.name for p in out.parent.iterdir()] == ["mol.gif"]  # no temporary file left


def test_a_2d_gif_and_the_xy_projection_of_3d_frames(tmp_path):
    out = animate(_walk(3, 3, 2), tmp_path / "flat.gif", box=(5.0, 4.0), bonds=[(0, 2)], size=200)
    with Image.open(out) as image:
        assert image.n_frames == 3
    out = animate(_walk(2, 5, 3), tmp_path / "projected.gif", dims=2)  # no box: the axes fit the data
    with Image.open(out) as image:
        assert image.n_frames == 2


def test_a_bond_across_the_boundary_is_drawn_along_the_minimum_image():
    coords = np.array([[3.1, 1.0], [2.9, 1.2], [2.0, 1.0]])  # atom 0 is outside the box: wrapped to x = 0.1
    segments = bond_segments(coords, [(0, 1), (1, 0), (2, 1)], box=np.array([3.0, 3.0]))
    np.testing.assert_allclose(segments[0], [[0.1, 1.0], [-0.1, 1.2]], atol=1e-12)  # out of the left face
    np.testing.assert_allclose(segments[1], [[2.9, 1.2], [3.1, 1.0]], atol=1e-12)   # and from the other end
    np.testing.assert_allclose(segments[2], [[2.0, 1.0], [2.9, 1.2]], atol=1e-12)   # an inner bond as it is
    np.testing.assert_allclose(bond_segments(coords, [(0, 1)]), [[[3.1, 1.0], [2.9, 1.2]]])  # no box: no images


@pytest.mark.parametrize("frames, kwargs, error, match", [
    (_walk(2, 3, 3), {"path": "a.png"}, ValueError, r"unknown suffix '\.png'"),
    (_walk(2, 3, 3)[0], {}, ValueError, r"\(T, N, D\).*\(3, 3\)"),
    (_walk(2, 3, 4), {}, ValueError, "2-D or 3-D, got D = 4"),
    (np.where(np.arange(2)[:, None, None] == 1, np.nan, _walk(2, 3, 3)), {}, ValueError, "frame 1 has NaN"),
    (_walk(2, 3, 3), {"bonds": [(0, 3)]}, ValueError, r"bond index out of range for 3 atoms: \[0, 3\]"),
    (_walk(2, 3, 3), {"captions": ["one"]}, ValueError, "1 captions for 2 frames"),
    (_walk(2, 3, 3), {"box": (1.0, 2.0)}, ValueError, "box must be one positive number or 3"),
    (_walk(2, 3, 3), {"colors": ["red", "blue"]}, ValueError, r"one per atom \(3\), got 2"),
    (_walk(2, 3, 2), {"dims": 3}, ValueError, "dims must be 2 or 3 and at most D = 2"),
])
def test_errors_name_the_problem(tmp_path, frames, kwargs, error, match):
    path = tmp_path / kwargs.pop("path", "a.gif")
    with pytest.raises(error, match=match):
        animate(frames, path, **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not manimation.writers.is_available("ffmpeg"), reason="no ffmpeg on this machine")
def test_an_mp4_where_ffmpeg_exists(tmp_path):
    out = animate(_walk(5, 6, 3), tmp_path / "walk.mp4", box=2.0, bonds=[(0, 1)])
    data = out.read_bytes()
    assert data[4:8] == b"ftyp" and len(data) > 1000  # an ISO media file
    assert [p.name for p in tmp_path.iterdir()] == ["walk.mp4"]


def test_mp4_without_ffmpeg_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(manimation.writers, "is_available", lambda name: False)
    with pytest.raises(RuntimeError, match=r"needs ffmpeg.*\.gif"):
        animate(_walk(2, 3, 3), tmp_path / "a.mp4")


def test_a_failed_render_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "a.gif"
    path.write_bytes(b"old")

    grab = manimation.PillowWriter.grab_frame

    def interrupted_after_one_frame(self, **kwargs):
        if getattr(self, "_frames", None):
            raise KeyboardInterrupt
        grab(self, **kwargs)

    monkeypatch.setattr(manimation.PillowWriter, "grab_frame", interrupted_after_one_frame)
    with pytest.raises(KeyboardInterrupt):
        animate(_walk(3, 3, 2), path)
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]


def _write_state(path, volume):
    rows = ["step,time_ps,potential_energy,kinetic_energy,total_energy,temperature,volume,speed_ns_per_day"]
    for k in range(1, 6):
        rows.append(f"{10 * k},{0.02 * k},{-100 - k},{50 + k % 2},{-50 - k},{300 + 3 * k % 2},{volume(k)},12.5")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_plot_state_csv_draws_the_volume_only_when_it_varies(tmp_path):
    fixed = plot_state_csv(_write_state(tmp_path / "nvt.csv", lambda k: "inf"), tmp_path / "nvt.png")
    varying = plot_state_csv(_write_state(tmp_path / "npt.csv", lambda k: 27 + 0.1 * k), tmp_path / "npt.png",
                             units=md.REDUCED_UNITS)
    with Image.open(fixed) as three, Image.open(varying) as four:
        assert four.size[1] > 1.2 * three.size[1]  # a fourth panel


def test_plot_state_csv_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "other.csv").write_text("step,time_ps,potential_energy\n1,0.1,3\n")
    (tmp_path / "header.csv").write_text(_write_state(tmp_path / "x.csv", lambda k: 1).read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="empty file"):
        plot_state_csv(tmp_path / "empty.csv", tmp_path / "a.png")
    with pytest.raises(ValueError, match="no column kinetic_energy, total_energy, temperature, volume"):
        plot_state_csv(tmp_path / "other.csv", tmp_path / "a.png")
    with pytest.raises(ValueError, match="no rows"):
        plot_state_csv(tmp_path / "header.csv", tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def test_plot_state_csv_of_a_real_run(tmp_path):
    boundary = md.CubicBoundary(2.0)
    system = md.System(
        atoms=md.Atoms.uniform(8, mass=10.0, sigma=0.4, epsilon=0.2), boundary=boundary, units=md.REDUCED_UNITS,
        coords=md.random_coords(jax.random.PRNGKey(0), 8, boundary, min_distance=0.45),
        velocities=md.random_velocities(jax.random.PRNGKey(1), jnp.full(8, 10.0), 1.0, md.REDUCED_UNITS),
        pairwise_inters=[md.LennardJones()],
    )
    csv = tmp_path / "state.csv"
    md.simulate(system, md.VelocityVerlet(0.01), 20, reporters=[md.io.StateDataReporter(csv, 5)])
    with Image.open(plot_state_csv(csv, tmp_path / "state.png", units=md.REDUCED_UNITS)) as image:
        assert image.format == "PNG" and image.size[0] > 300
