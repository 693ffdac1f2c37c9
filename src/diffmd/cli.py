"""The `diffmd` command: run a structure from the shell, plot its state CSV, animate a
trajectory, run a bundled example, describe the installation.

    diffmd simulate STRUCTURE --forcefield FILE... --steps N --dt PS --temperature K
                    [--pressure BAR] [--minimize] --out TRAJ [--report-every N] [--state CSV]
                    [--checkpoint FILE] [--resume FILE]
    diffmd plot STATE.csv --out FILE.png [--units reduced]
    diffmd animate TRAJ [--top TOP] --out FILE.gif [--stride N] [--fps N]
    diffmd example NAME [ARGS...]
    diffmd info

Errors print one line (`diffmd: error: …`) and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from ._optional import require

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffmd", description="Differentiable molecular dynamics on JAX.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("simulate", help="run a structure (PDB/PDBx) with an OpenMM force field",
                              description="Minimise (optionally) and run a structure under LangevinMiddle, "
                                          "writing a trajectory and a state CSV as it goes.")
    run.add_argument("structure", type=Path, help="PDB or PDBx/mmCIF file")
    run.add_argument("--forcefield", nargs="+", default=["amber14-all.xml", "amber14/tip3p.xml"], metavar="FILE",
                     help="OpenMM force-field XML files (default: amber14-all.xml amber14/tip3p.xml)")
    run.add_argument("--steps", type=int, required=True, help="number of steps")
    run.add_argument("--dt", type=float, default=0.002, help="time step in ps (default 0.002)")
    run.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    run.add_argument("--friction", type=float, default=1.0, help="Langevin friction, 1/ps (default 1)")
    run.add_argument("--pressure", type=float, default=None, help="bar: constant pressure (Monte Carlo barostat)")
    run.add_argument("--minimize", action="store_true", help="minimise the energy before the run")
    run.add_argument("--out", type=Path, required=True, help="trajectory file: .dcd, .xtc or .pdb")
    run.add_argument("--report-every", type=int, default=500, help="steps between frames and status lines (default 500)")
    run.add_argument("--state", type=Path, default=None, help="state CSV (energies, temperature, volume, speed)")
    run.add_argument("--checkpoint", type=Path, default=None,
                     help="save the run's state here (every --report-every steps, at chunk ends, and at the end; "
                          "diffmd.io.load_state reads it)")
    run.add_argument("--resume", type=Path, default=None,
                     help="continue from a --checkpoint file of the same structure and settings (bit-identical)")
    run.add_argument("--nonbonded-method", default=None,
                     help="NoCutoff, CutoffNonPeriodic, CutoffPeriodic, Ewald or PME (default: PME with a box, else NoCutoff)")
    run.add_argument("--cutoff", type=float, default=1.0, help="nonbonded cutoff, nm (default 1.0)")
    run.add_argument("--constraints", default="HBonds", help="None, HBonds, AllBonds or HAngles (default HBonds)")
    run.add_argument("--precision", choices=("float32", "float64"), default="float32")
    run.add_argument("--seed", type=int, default=0, help="seed of the velocities and the Langevin noise")

    plot = commands.add_parser("plot", help="plot a state CSV: energies, temperature, volume against time",
                               description="Draw the CSV of `simulate --state` (StateDataReporter) as stacked "
                                           "panels: potential energy, total energy, temperature, and the volume when it varies.")
    plot.add_argument("state", type=Path, help="state CSV")
    plot.add_argument("--out", type=Path, required=True, help="picture: .png, .pdf or .svg")
    plot.add_argument("--units", choices=("openmm", "reduced"), default="openmm",
                      help="names of the units on the axes (default openmm: ps, kJ/mol, K, nm³)")

    animate = commands.add_parser("animate", help="animate a trajectory file (mdtraj) as a GIF or MP4",
                                  description="Atoms as dots, bonds from the topology as lines, the first frame's "
                                              "unit cell as the box.")
    animate.add_argument("trajectory", type=Path, help="trajectory file mdtraj reads (.dcd, .xtc, .pdb, ...)")
    animate.add_argument("--top", type=Path, default=None, help="topology (e.g. the PDB the run started from)")
    animate.add_argument("--out", type=Path, required=True, help=".gif, or .mp4 where ffmpeg is installed")
    animate.add_argument("--stride", type=int, default=1, help="draw every N-th frame (default 1)")
    animate.add_argument("--fps", type=int, default=15, help="frames per second (default 15)")

    example = commands.add_parser("example", help="run a bundled example (examples/NAME.py)")
    example.add_argument("name", help="e.g. lj_sigma, triatomic_angle, nn_bond, protein_in_water")
    example.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the example")

    commands.add_parser("info", help="versions, JAX devices, and whether the compiled kernels are in use")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"simulate": _simulate, "plot": _plot, "animate": _animate, "example": _example,
                "info": _info}[args.command](args)
    except KeyboardInterrupt:
        print("diffmd: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one clear line, not a traceback
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"diffmd: error: {message}", file=sys.stderr)
        return 1


def _simulate(args) -> int:
    if args.steps < 1 or args.report_every < 1:
        raise ValueError("--steps and --report-every must be positive")
    if not args.structure.exists():
        raise FileNotFoundError(f"no such structure file: {args.structure}")
    import equinox as eqx
    import jax

    if args.precision == "float64":
        jax.config.update("jax_enable_x64", True)
    app = require("openmm.app", "diffmd simulate")

    import diffmd as md

    from .io.reporters import ConsoleReporter

    reader = app.PDBxFile if args.structure.suffix.lower() in (".cif", ".pdbx") else app.PDBFile
    structure = reader(str(args.structure))
    periodic = structure.topology.getPeriodicBoxVectors() is not None
    method = args.nonbonded_method or ("PME" if periodic else "NoCutoff")
    constraints = None if args.constraints == "None" else args.constraints
    print(f"diffmd: {args.structure.name}: {structure.topology.getNumAtoms()} atoms, {' + '.join(args.forcefield)}, "
          f"{method}, constraints {args.constraints}, {args.precision}", flush=True)
    system = md.ForceField(*args.forcefield).create_system(structure, nonbonded_method=method,
                                                           nonbonded_cutoff=args.cutoff, constraints=constraints,
                                                           dtype=args.precision)
    if args.minimize and args.resume is None:
        before = float(md.potential_energy(system))
        started = time.perf_counter()
        system = md.minimize(system)
        print(f"diffmd: minimised {before:.1f} → {float(md.potential_energy(system)):.1f} kJ/mol in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    velocities = md.random_velocities(jax.random.PRNGKey(args.seed), system.atoms.mass, args.temperature,
                                      dtype=system.coords.dtype)
    # On the constraints and at the temperature with their degrees of freedom (as OpenMM's
    # setVelocitiesToTemperature): drawn for 3N, projected, rescaled.
    inv_mass = (1.0 / system.atoms.mass)[:, None].astype(velocities.dtype)
    velocities = system.constraints.velocities(system.coords, velocities, inv_mass, system.boundary)
    current = md.temperature(system.atoms.mass, velocities, system.units.boltzmann, system.degrees_of_freedom)
    velocities = velocities * jax.numpy.sqrt(args.temperature / current).astype(velocities.dtype)
    system = eqx.tree_at(lambda s: s.velocities, system, velocities)
    coupling = () if args.pressure is None else md.MonteCarloBarostat(args.pressure, args.temperature)
    integrator = md.LangevinMiddle(args.dt, args.temperature, args.friction, coupling=coupling)
    start = None
    if args.resume is not None:
        start, meta = md.io.load_state(args.resume, system, integrator)
        print(f"diffmd: resuming from {args.resume} ({meta.get('steps_done', '?')} steps done)", flush=True)
    reporters = [md.io.TrajectoryReporter(args.out, args.report_every, topology=structure.topology),
                 ConsoleReporter(args.steps, args.report_every)]
    if args.state is not None:
        reporters.append(md.io.StateDataReporter(args.state, args.report_every))
    if args.checkpoint is not None:
        reporters.append(md.io.CheckpointReporter(args.checkpoint, args.report_every))
    started = time.perf_counter()
    run = md.simulate(system, integrator, args.steps, key=None if start is not None else jax.random.PRNGKey(args.seed + 1),
                      start=start, reporters=reporters)
    seconds = time.perf_counter() - started
    print(f"diffmd: done: {args.steps} steps ({args.steps * args.dt:g} ps) in {seconds:.1f} s, "
          f"{args.steps * args.dt * 86400 / 1000 / seconds:.2f} ns/day including compilation; final potential "
          f"energy {float(run.state.potential_energy):.1f} kJ/mol; trajectory {args.out}"
          + (f", state {args.state}" if args.state else "")
          + (f", checkpoint {args.checkpoint}" if args.checkpoint else ""), flush=True)
    return 0


def _plot(args) -> int:
    from .plot import plot_state_csv
    from .units import OPENMM_UNITS, REDUCED_UNITS

    if not args.state.exists():
        raise FileNotFoundError(f"no such state CSV: {args.state}")
    units = {"openmm": OPENMM_UNITS, "reduced": REDUCED_UNITS}[args.units]
    print(f"diffmd: wrote {plot_state_csv(args.state, args.out, units=units)}")
    return 0


def _animate(args) -> int:
    if args.stride < 1 or args.fps < 1:
        raise ValueError("--stride and --fps must be positive")
    for path in (args.trajectory, args.top):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"no such file: {path}")
    mdtraj = require("mdtraj", "diffmd animate")

    from .animation import animate

    trajectory = mdtraj.load(str(args.trajectory), top=None if args.top is None else str(args.top), stride=args.stride)
    bonds = [(a.index, b.index) for a, b in trajectory.topology.bonds]
    cell = trajectory.unitcell_lengths
    box = cell[0] if cell is not None and (cell[0] > 0).all() else None  # files without a cell store zeros
    size = min(40.0, max(2.0, 2000.0 / trajectory.n_atoms))  # dots shrink as atoms crowd the picture
    out = animate(trajectory.xyz, args.out, box=box, bonds=bonds, size=size, fps=args.fps,
                  title=args.trajectory.name,  # frame numbers: not every format stores times
                  captions=[f"frame {k * args.stride}" for k in range(trajectory.n_frames)])
    print(f"diffmd: wrote {out} ({trajectory.n_frames} frames, {trajectory.n_atoms} atoms, nm)")
    return 0


def _example(args) -> int:
    available = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")) if EXAMPLES.is_dir() else []
    if not available:
        raise FileNotFoundError(f"the examples ship with diffmd's source checkout ({EXAMPLES} not found)")
    if args.name not in available:
        raise ValueError(f"no example named {args.name!r}; available: {', '.join(available)}")
    return subprocess.call([sys.executable, str(EXAMPLES / f"{args.name}.py"), *args.args])


def _info(args) -> int:
    import jax

    import diffmd as md
    from diffmd.kernels import build

    lines = [f"diffmd {md.__version__} (python {platform.python_version()}, {platform.platform()})",
             f"jax {jax.__version__}; devices: {', '.join(str(d) for d in jax.devices())}"]
    for name in ("jaxlib", "equinox", "optax", "numpy", "openmm", "mdtraj"):
        try:
            module = __import__(name)
            lines.append(f"{name} {getattr(module, '__version__', getattr(module, 'version', '?'))}")
        except ImportError:
            lines.append(f"{name}: not installed")
    if build.available():
        lines.append(f"compiled pair kernels: in use ({build.mode()} build, cache {build.cache_dir()})")
    else:
        lines.append(f"compiled pair kernels: not in use ({build.unavailable_reason()}); the pure-JAX kernels run")
    lines.append(f"CPU cores: {os.cpu_count()}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
