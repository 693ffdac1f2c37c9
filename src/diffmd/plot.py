"""Plots used by the examples and `diffmd plot` (matplotlib, headless). Each function writes a file atomically
and returns its path."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from .animation import bond_lines  # noqa: E402
from .io import StateDataReporter, save_figure  # noqa: E402
from .observables import rdf_histogram  # noqa: E402
from .units import OPENMM_UNITS, UnitSystem  # noqa: E402


def plot_rdf(coords, boundary, path, r_max: float, target: float | None = None, n_bins: int = 60,
             label: str = "g(r)", title: str | None = None):
    """Histogram RDF of `coords` ((N, D) or (T, N, D)), with a vertical line at `target`."""
    r, g = (np.asarray(a) for a in rdf_histogram(coords, boundary, r_max, n_bins))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(r, g, color="tab:blue", label=label)
    if target is not None:
        ax.axvline(target, color="purple", linestyle="--", label=f"target distance {target:g}")
    ax.set_xlabel("r")
    ax.set_ylabel("g(r)")
    ax.set_title(title or "Radial distribution function")
    ax.legend()
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def plot_curve(x, y, path, xlabel: str, ylabel: str, title: str = "", hline: float | None = None,
               vline: float | None = None, marker: str = "o"):
    """A simple line plot (gradient scans, loss curves), with optional reference lines."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.asarray(x), np.asarray(y), marker=marker, markersize=3)
    if hline is not None:
        ax.axhline(hline, color="gray", linewidth=0.8)
    if vline is not None:
        ax.axvline(vline, color="purple", linestyle="--", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def plot_atoms(frames: dict, path, bonds=(), box=None, title: str = ""):
    """Side-by-side pictures of 2-D (or the x-y projection of 3-D) configurations.

    Args:
        frames: dict label → (N, D) coordinates, e.g. {"before": c0, "after": c1}.
        bonds: pairs (i, j) drawn as lines (along the minimum image when there is a box).
        box: (Lx, Ly) of the periodic box: the axes' limits; atoms are wrapped into it.
    """
    fig, axes = plt.subplots(1, len(frames), figsize=(4 * len(frames), 4), squeeze=False)
    for ax, (label, coords) in zip(axes[0], frames.items()):
        xy = np.asarray(coords)[:, :2]
        if len(bonds):
            ax.add_collection(LineCollection(bond_lines(xy, bonds, None if box is None else box[:2]),
                                             colors="gray", zorder=1))
        if box is not None:
            xy = np.mod(xy, box[:2])
        ax.scatter(xy[:, 0], xy[:, 1], s=300, c=np.arange(len(xy)) % 10, cmap="tab10", zorder=2, edgecolors="k")
        if box is not None:
            ax.set_xlim(0, box[0])
            ax.set_ylim(0, box[1])
        ax.set_aspect("equal")
        ax.set_title(label)
    if title:
        fig.suptitle(title)
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def plot_state_csv(csv_path, path, units: UnitSystem = OPENMM_UNITS, title: str | None = None):
    """Potential energy, total energy, temperature and (when it changes) the box volume against
    time, from the CSV of `diffmd.io.StateDataReporter`, as stacked panels sharing the time axis.
    Each energy has its own axis: on one, the total's drift or a thermostat's fluctuations would
    be flattened by the potential's offset (tens of thousands of kJ/mol for a protein in water);
    the kinetic energy is the temperature panel's, scaled.

    The CSV holds the System's units; `units` only names them on the axes (OPENMM_UNITS:
    ps, kJ/mol, K, nm³; pass REDUCED_UNITS for a reduced-units run).
    """
    csv_path = Path(csv_path)
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise ValueError(f"{csv_path}: empty file, not a state CSV")
        missing = [c for c in StateDataReporter.COLUMNS if c not in reader.fieldnames]
        if missing:
            raise ValueError(f"{csv_path}: not a state CSV: no column {', '.join(missing)}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{csv_path}: the state CSV has a header but no rows yet")
    data = {c: np.array([float(r[c]) for r in rows]) for c in StateDataReporter.COLUMNS}
    volume = data["volume"]
    show_volume = bool(np.isfinite(volume).all() and np.ptp(volume) > 0)
    panels = [("potential_energy", f"potential ({units.energy})", "tab:blue"),
              ("total_energy", f"total energy ({units.energy})", "tab:purple"),
              ("temperature", f"temperature ({units.temperature})", "tab:red")]
    if show_volume:
        panels.append(("volume", f"volume ({units.length}³)", "tab:green"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(6, 1.9 * len(panels) + 0.6), sharex=True, layout="constrained")
    time = data["time_ps"]
    for ax, (column, label, color) in zip(axes, panels):
        ax.plot(time, data[column], color=color)
        ax.set_ylabel(label)
    axes[-1].set_xlabel(f"time ({units.time})")
    fig.suptitle(title or csv_path.name)
    fig.align_ylabels(axes)
    out = save_figure(fig, path)
    plt.close(fig)
    return out
