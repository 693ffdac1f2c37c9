"""Reporters: what a long run writes as it goes, in OpenMM's spirit.

`simulate(system, integrator, n_steps, key=…, reporters=[...])` runs eagerly in chunks (the
compiled loop of `EAGER_CHUNK_STEPS`, a multiple of every reporter's interval); each reporter
adds the loggers it needs, is handed each chunk's records, and writes them out, so memory does
not grow with the run and its records are not kept in the returned Trajectory.

Files are never left half-written under their own name: a reporter writes to
`.<name>.partial` beside the target and renames it when the run ends (a crashed run leaves
the partial file, and any earlier file of that name intact); the state CSV is rewritten
atomically after every chunk, so it can be watched during the run.

* `StateDataReporter(path, every)`: step, time (ps), potential, kinetic and total energy,
  temperature, box volume and speed (ns/day), as CSV.
* `TrajectoryReporter(path, every, topology=None)`: coordinates and box as DCD, XTC or PDB
  (by the suffix), written by mdtraj; read back by mdtraj, OpenMM and VMD.
* `ConsoleReporter(total_steps, every)`: a progress bar and status lines (the `diffmd` command's).
* `CheckpointReporter(path, every)`: the run's state, to continue it bit-identically.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .._optional import require
from ..loggers import (CoordinatesLogger, KineticEnergyLogger, ObservableLogger, PotentialEnergyLogger,
                       TemperatureLogger, VolumeLogger)
from .files import atomic_write_bytes


class Reporter:
    """Base class: `loggers(system)` names what to record every `every` steps; `open`, `report`
    (each chunk's records, stacked) and `close` write it."""

    every: int = 1

    def loggers(self, system) -> dict:
        """The loggers (name → Logger) whose records this reporter writes."""
        raise NotImplementedError

    def open(self, system, dt: float) -> None:
        """Called once before the run, with the System and the time step (ps)."""

    def report(self, records: dict, first_step: int, seconds: float) -> None:
        """Write one chunk's records (name → stacked array), the first of them taken at
        step `first_step`; `seconds` is the chunk's wall time."""
        raise NotImplementedError

    def after_chunk(self, state, steps_done: int, last: bool) -> None:
        """Called with the state at the end of each chunk (a checkpoint's moment)."""

    def close(self, completed: bool) -> None:
        """Called once after the run; `completed` is False when it failed (keep earlier files)."""


def _check_every(every) -> int:
    if not (isinstance(every, int) and every >= 1):
        raise ValueError(f"reporter: every must be a positive integer, got {every!r}")
    return every


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


class StateDataReporter(Reporter):
    """A CSV of the run's state every `every` steps (the k-th row after step k·every):

        step, time_ps, potential_energy, kinetic_energy, total_energy, temperature, volume,
        speed_ns_per_day

    in the System's units (kJ/mol, K, nm³ for OpenMM units; volume is inf without a periodic
    box); speed is the wall-clock rate of the chunk the row was written in.
    """

    COLUMNS = ("step", "time_ps", "potential_energy", "kinetic_energy", "total_energy", "temperature", "volume",
               "speed_ns_per_day")

    def __init__(self, path, every: int):
        self.path, self.every = Path(path), _check_every(every)
        self._lines: list[str] = []
        self._dt = 0.0

    def loggers(self, system) -> dict:
        return {"potential": PotentialEnergyLogger(self.every), "kinetic": KineticEnergyLogger(self.every),
                "temperature": TemperatureLogger(self.every), "volume": VolumeLogger(self.every)}

    def open(self, system, dt: float) -> None:
        self._dt = float(dt)
        self._lines = [",".join(self.COLUMNS)]
        atomic_write_bytes(self.path, (self._lines[0] + "\n").encode())

    def report(self, records, first_step, seconds):
        potential, kinetic = (np.asarray(records[k], np.float64) for k in ("potential", "kinetic"))
        temperature, volume = (np.asarray(records[k], np.float64) for k in ("temperature", "volume"))
        rows = len(potential)
        speed = _ns_per_day(rows * self.every, self._dt, seconds)
        for k in range(rows):
            step = first_step + (k + 1) * self.every
            values = (step, step * self._dt, potential[k], kinetic[k], potential[k] + kinetic[k], temperature[k],
                      volume[k], speed)
            self._lines.append(",".join(str(v) if isinstance(v, int) else f"{v:.10g}" for v in values))
        atomic_write_bytes(self.path, ("\n".join(self._lines) + "\n").encode())


class TrajectoryReporter(Reporter):
    """Coordinates (and the box) every `every` steps, as DCD, XTC or PDB by the path's suffix,
    written by mdtraj. `topology`: an openmm.app Topology or mdtraj Topology (needed for PDB;
    without one, every molecule of the System is a residue and elements are guessed from the
    masses)."""

    FORMATS = (".dcd", ".xtc", ".pdb")

    def __init__(self, path, every: int, topology=None):
        self.path, self.every = Path(path), _check_every(every)
        if self.path.suffix.lower() not in self.FORMATS:
            raise ValueError(f"TrajectoryReporter: {self.path.name}: the format comes from the suffix, one of "
                             f"{', '.join(self.FORMATS)}")
        self.topology = topology
        self._file = None
        self._frames = 0
        self._dt = 0.0

    def loggers(self, system) -> dict:
        return {"coords": CoordinatesLogger(self.every),
                "box": ObservableLogger(lambda state, s: _box_sides(state.box(s), s.n_dims), self.every)}

    def open(self, system, dt: float) -> None:
        formats = _mdtraj_formats()
        if system.n_dims != 3:
            raise ValueError("TrajectoryReporter: trajectory files hold 3-D coordinates")
        self._dt = float(dt)
        self._mdtraj_topology = _mdtraj_topology(self.topology, system)
        partial = _partial(self.path)
        partial.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists():
            partial.unlink()
        kind = self.path.suffix.lower()
        opener = {".dcd": formats.DCDTrajectoryFile, ".xtc": formats.XTCTrajectoryFile,
                  ".pdb": formats.PDBTrajectoryFile}[kind]
        self._file = opener(str(partial), "w")
        self._frames = 0

    def report(self, records, first_step, seconds):
        coords = np.asarray(records["coords"], np.float64)
        sides = np.asarray(records["box"], np.float64)
        kind = self.path.suffix.lower()
        steps = first_step + self.every * (np.arange(len(coords)) + 1)
        if kind == ".dcd":  # Å
            self._file.write((10.0 * coords).astype(np.float32), cell_lengths=10.0 * sides,
                             cell_angles=np.full_like(sides, 90.0))
        elif kind == ".xtc":  # nm
            boxes = np.stack([np.diag(s) for s in sides]) if len(sides) else np.zeros((0, 3, 3))
            self._file.write(coords.astype(np.float32), time=(steps * self._dt).astype(np.float32),
                             step=steps.astype(np.int32), box=boxes.astype(np.float32))
        else:
            for frame, side in zip(coords, sides):
                self._file.write(10.0 * frame, self._mdtraj_topology, modelIndex=self._frames + 1,
                                 unitcell_lengths=None if not np.all(np.isfinite(side)) else tuple(10.0 * side),
                                 unitcell_angles=None if not np.all(np.isfinite(side)) else (90.0, 90.0, 90.0))
                self._frames += 1

    def close(self, completed: bool) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if completed:
            os.replace(_partial(self.path), self.path)


class CheckpointReporter(Reporter):
    """The run's state (`diffmd.io.save_state`, pickle-free, atomic) at the first chunk end
    after every `every` steps and at the end; `diffmd.io.load_state` reads it back and
    `simulate(..., start=state)` continues the run bit-identically."""

    def __init__(self, path, every: int):
        self.path, self.every = Path(path), _check_every(every)
        self._saved_at = 0

    def loggers(self, system) -> dict:
        return {}

    def report(self, records, first_step, seconds):
        pass

    def after_chunk(self, state, steps_done, last):
        from .states import save_state

        if last or steps_done // self.every > self._saved_at // self.every:
            save_state(self.path, state, {"steps_done": steps_done})
            self._saved_at = steps_done


class ConsoleReporter(Reporter):
    """A progress bar (tqdm) over `total_steps` and a status line every `every` steps: step,
    simulated time, potential energy, temperature and speed (ns/day)."""

    def __init__(self, total_steps: int, every: int, stream=None):
        self.total, self.every, self.stream = int(total_steps), _check_every(every), stream
        self._bar = None
        self._dt = 0.0

    def loggers(self, system) -> dict:
        return {"potential": PotentialEnergyLogger(self.every), "temperature": TemperatureLogger(self.every)}

    def open(self, system, dt: float) -> None:
        from tqdm.auto import tqdm

        self._dt = float(dt)
        self._bar = tqdm(total=self.total, unit="step", file=self.stream, dynamic_ncols=True, leave=False)
        self._bar.write(f"{'step':>10} {'time (ps)':>10} {'potential':>14} {'T (K)':>8} {'ns/day':>8}", file=self.stream)

    def report(self, records, first_step, seconds):
        potential, temperature = np.asarray(records["potential"]), np.asarray(records["temperature"])
        steps = len(potential) * self.every
        speed = _ns_per_day(steps, self._dt, seconds)
        for k in range(len(potential)):
            step = first_step + (k + 1) * self.every
            self._bar.write(f"{step:>10d} {step * self._dt:>10.3f} {float(potential[k]):>14.2f} "
                            f"{float(temperature[k]):>8.1f} {speed:>8.2f}", file=self.stream)
        self._bar.update(min(steps, self.total - self._bar.n))

    def close(self, completed: bool) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _ns_per_day(steps: int, dt: float, seconds: float) -> float:
    """Simulated ns per wall-clock day for `steps` of `dt` ps taking `seconds`."""
    return steps * dt / 1000 / max(seconds, 1e-12) * 86400


def _box_sides(boundary, n_dims):
    sides = getattr(boundary, "sides", None)
    return jnp.full((n_dims,), jnp.inf) if sides is None else sides


def _mdtraj_formats():
    return require("mdtraj.formats", "TrajectoryReporter (DCD, XTC and PDB files)")


def _mdtraj_topology(topology, system):
    import mdtraj

    if topology is not None:
        if isinstance(topology, mdtraj.Topology):
            result = topology
        else:  # an openmm.app Topology
            result = mdtraj.Topology.from_openmm(topology)
        if result.n_atoms != system.n_atoms:
            raise ValueError(f"TrajectoryReporter: the topology has {result.n_atoms} atoms, the System {system.n_atoms}")
        return result
    result = mdtraj.Topology()
    chain = result.add_chain()
    masses = np.asarray(system.atoms.mass, np.float64)
    elements = [e for e in mdtraj.element.Element._elements_by_symbol.values() if e.mass > 0]
    by_mass = np.array([e.mass for e in elements])
    residue = None
    for atom, molecule in enumerate(system.molecules()):
        if residue is None or molecule != current:
            residue, current = result.add_residue("MOL", chain), molecule
        element = elements[int(np.argmin(np.abs(by_mass - masses[atom])))]
        result.add_atom(element.symbol.upper(), element, residue)
    return result


def open_reporters(reporters, system, dt) -> dict:
    """{reporter index: its loggers (renamed so they do not collide with the System's)} after
    opening every reporter."""
    merged = {}
    for index, reporter in enumerate(reporters):
        if not isinstance(reporter, Reporter):
            raise TypeError(f"simulate: reporters must be Reporter objects, got {type(reporter).__name__}")
        reporter.open(system, dt)
        for name, logger in reporter.loggers(system).items():
            merged[f"_reporter{index}_{name}"] = logger
    return merged


def hand_out(reporters, logs: dict, first_step: int, seconds: float) -> dict:
    """Give each reporter its records of a chunk; the System's own logs are returned."""
    for index, reporter in enumerate(reporters):
        prefix = f"_reporter{index}_"
        reporter.report({k[len(prefix):]: v for k, v in logs.items() if k.startswith(prefix)}, first_step, seconds)
    return {k: v for k, v in logs.items() if not k.startswith("_reporter")}


def after_chunk(reporters, state, steps_done: int, last: bool) -> None:
    for reporter in reporters:
        reporter.after_chunk(state, steps_done, last)


def close_reporters(reporters, completed: bool) -> None:
    for reporter in reporters:
        reporter.close(completed)


__all__ = ["CheckpointReporter", "ConsoleReporter", "Reporter", "StateDataReporter", "TrajectoryReporter"]
