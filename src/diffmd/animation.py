"""Animations of trajectories (matplotlib, headless): atoms as dots, bonds as lines, the
periodic box as an outline, written to a GIF (Pillow) or an MP4 (ffmpeg) atomically.

    animate(trajectory.logs["coords"], "gas.gif", box=3.0)
"""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.animation as manimation  # noqa: E402
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from mpl_toolkits.mplot3d.art3d import Line3DCollection  # noqa: E402

from .io.files import atomic_path  # noqa: E402

FIGSIZE, DPI = 4.8, 100  # inches, dots per inch: a 480 × 480 pixel animation


def animate(frames, path, *, box=None, bonds=(), colors=None, size=40.0, fps=15, title=None,
            captions=None, dims=None) -> Path:
    """Write an animation of a trajectory to `path` (`.gif`, or `.mp4` where ffmpeg is installed).

    Draws each frame's atoms as dots, `bonds` as grey lines behind them, and the periodic box
    as an outline (a wireframe cube in 3-D, seen from a fixed direction). With a box, atoms
    are wrapped into it and each bond is drawn along its minimum-image vector from its first
    atom (see `bond_segments`), so a bond across a face sticks out of the box instead of
    spanning it; such a bond is drawn from its second atom too, out of the opposite face.

    Args:
        frames: (T, N, D) coordinates (numpy or JAX, e.g. a CoordinatesLogger's records), D = 2
            or 3, in the system's length unit.
        path: output file; the suffix picks the format.
        box: the periodic box's sides (D,) or one number (a cube), in the same length unit; None:
            no box, the axes fit the data.
        bonds: pairs (i, j) of atom indices.
        colors: one matplotlib colour, or one per atom (default: all "tab:blue").
        size: marker area in points² (matplotlib's scatter `s`).
        fps: frames per second.
        title: a title over every frame; captions: T strings, one under each frame (e.g. "step 120").
        dims: 2 or 3 (default: D); 2 with 3-D frames draws the x–y projection.

    Returns the path written. The file appears whole or not at all.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        writer = manimation.PillowWriter(fps=fps)
    elif suffix == ".mp4":
        if not manimation.writers.is_available("ffmpeg"):
            raise RuntimeError(f"animate: {path.name}: writing .mp4 needs ffmpeg, which was not found; "
                               "install it or write a .gif")
        writer = manimation.FFMpegWriter(fps=fps)
    else:
        raise ValueError(f"animate: {path.name}: unknown suffix {path.suffix!r}; use .gif or .mp4")

    coords, box, bonds, colors = _checked(frames, box, bonds, colors, captions, dims)
    n_dims = coords.shape[2]
    fig, ax = _axes(coords, box, title)
    caption = fig.text(0.5, 0.925, "", ha="center", va="top", fontsize=9, color="0.3")
    try:
        # The writers pick the format from the name, so the temporary file keeps the suffix.
        with atomic_path(path, suffix) as tmp, writer.saving(fig, tmp, DPI):
            for t, frame in enumerate(coords):
                drawn = _draw(ax, frame, box, bonds, colors, size, n_dims)
                if captions is not None:
                    caption.set_text(str(captions[t]))
                writer.grab_frame()
                for artist in drawn:
                    artist.remove()
    finally:
        plt.close(fig)
    return path


def bond_segments(coords, bonds, box=None) -> np.ndarray:
    """End points (B, 2, D) of the bonds' lines: from atom i (wrapped into the box) along the
    minimum-image vector to atom j; without a box, from atom i to atom j."""
    coords = np.asarray(coords, np.float64)
    bonds = np.asarray(bonds, np.int64).reshape(-1, 2)
    start, end = coords[bonds[:, 0]], coords[bonds[:, 1]]
    if box is None:
        return np.stack([start, end], axis=1)
    box = np.asarray(box, np.float64)
    d = end - start
    d -= box * np.round(d / box)
    start = np.mod(start, box)
    return np.stack([start, start + d], axis=1)


def bond_lines(coords, bonds, box=None) -> np.ndarray:
    """The lines that draw `bonds` in a picture: `bond_segments`, and, for a bond across a face
    of the box, the same bond drawn from its second atom too (a stub out of each side)."""
    segments = bond_segments(coords, bonds, box)
    if box is None:
        return segments
    across = ((segments[:, 1] < 0) | (segments[:, 1] > np.asarray(box))).any(axis=1)
    reversed_bonds = np.asarray(bonds, np.int64).reshape(-1, 2)[across, ::-1]
    return np.concatenate([segments, bond_segments(coords, reversed_bonds, box)])


def _checked(frames, box, bonds, colors, captions, dims):
    """The inputs as arrays, or a ValueError naming what is wrong."""
    coords = np.asarray(frames, np.float64)
    if coords.ndim != 3:
        raise ValueError(f"animate: frames must be (T, N, D) coordinates, got shape {coords.shape}")
    n_frames, n_atoms, n_dims = coords.shape
    if n_frames == 0 or n_atoms == 0:
        raise ValueError(f"animate: no frames or no atoms (shape {coords.shape})")
    if n_dims not in (2, 3):
        raise ValueError(f"animate: coordinates must be 2-D or 3-D, got D = {n_dims}")
    dims = n_dims if dims is None else dims
    if dims not in (2, 3) or dims > n_dims:
        raise ValueError(f"animate: dims must be 2 or 3 and at most D = {n_dims}, got {dims!r}")
    bad = ~np.isfinite(coords).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"animate: frame {int(np.argmax(bad))} has NaN or infinite coordinates "
                         f"({int(bad.sum())} such frames)")
    if box is not None:
        box = np.full(n_dims, box, np.float64) if np.ndim(box) == 0 else np.asarray(box, np.float64)
        if box.shape != (n_dims,) or not (np.isfinite(box) & (box > 0)).all():
            raise ValueError(f"animate: box must be one positive number or {n_dims} of them, got {box.tolist()}")
        box = box[:dims]
    bonds = np.asarray(bonds, np.int64)
    if bonds.size and (bonds.ndim != 2 or bonds.shape[1] != 2):
        raise ValueError(f"animate: bonds must be pairs (i, j), got shape {bonds.shape}")
    bonds = bonds.reshape(-1, 2)
    if bonds.size and (bonds.min() < 0 or bonds.max() >= n_atoms):
        raise ValueError(f"animate: bond index out of range for {n_atoms} atoms: "
                         f"{bonds[((bonds < 0) | (bonds >= n_atoms)).any(axis=1)][0].tolist()}")
    colors = mcolors.to_rgba_array("tab:blue" if colors is None else colors)
    if len(colors) not in (1, n_atoms):
        raise ValueError(f"animate: colors must be one colour or one per atom ({n_atoms}), got {len(colors)}")
    if captions is not None and len(captions) != n_frames:
        raise ValueError(f"animate: {len(captions)} captions for {n_frames} frames")
    return coords[:, :, :dims], box, bonds, colors


def _axes(coords, box, title):
    """The figure with fixed limits and the box outline drawn once."""
    n_dims = coords.shape[2]
    if box is None:
        low, high = coords.min(axis=(0, 1)), coords.max(axis=(0, 1))
        margin = 0.05 * max(float((high - low).max()), 1e-9) + 1e-9
        low, high = low - margin, high + margin
    else:  # in 2-D a margin, so that atoms on the edges are not cut in half
        margin = 0.03 * box.max() if n_dims == 2 else 0.0
        low, high = np.full(n_dims, -margin), box + margin
    fig = plt.figure(figsize=(FIGSIZE, FIGSIZE), dpi=DPI)
    if n_dims == 3:
        ax = fig.add_axes((0.0, 0.0, 1.0, 0.9), projection="3d")
        ax.computed_zorder = False  # bonds always behind the atoms, not sorted by depth
        ax.view_init(elev=20, azim=-60)
        ax.set_box_aspect(high - low, zoom=0.95)
        ax.tick_params(labelsize=8)
        if box is not None:
            for a, u, v in itertools.product(range(3), (0.0, 1.0), (0.0, 1.0)):  # 12 edges, 4 along each axis
                edge = np.zeros((2, 3))
                edge[1, a] = 1.0
                edge[:, (a + 1) % 3], edge[:, (a + 2) % 3] = u, v
                ax.plot(*(edge * box).T, color="0.4", linewidth=0.8)
        ax.set_zlim(low[2], high[2])
        ax.set_zlabel("z")
    else:
        ax = fig.add_axes((0.13, 0.09, 0.8, 0.78))
        ax.set_aspect("equal")
        if box is not None:
            ax.add_patch(plt.Rectangle((0, 0), box[0], box[1], fill=False, edgecolor="0.4", linewidth=1.0))
            ax.spines[:].set_visible(False)  # the box is the frame
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis) if n_dims == 3 else (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(4, steps=[1, 2, 5, 10]))  # few: the 3-D corners' labels do not collide
    if title:
        fig.suptitle(title, y=0.985, va="top")
    return fig, ax


def _draw(ax, frame, box, bonds, colors, size, n_dims):
    """Draw one frame's bonds and atoms; returns the artists, to remove before the next frame."""
    drawn = []
    positions = frame if box is None else np.mod(frame, box)
    if len(bonds):
        lines = (Line3DCollection if n_dims == 3 else LineCollection)(bond_lines(frame, bonds, box), colors="0.35",
                                                                        linewidths=2.0, zorder=1)
        ax.add_collection3d(lines) if n_dims == 3 else ax.add_collection(lines)
        drawn.append(lines)
    drawn.append(ax.scatter(*positions.T, s=size, c=colors, edgecolors="k", linewidths=0.5, zorder=2))
    return drawn
