"""NVE throughput of a Lennard-Jones argon fluid: diffmd, JAX MD and OpenMM (CPU) side by side.

Physics (the same for every engine but for the smoothing, see below; units nm, ps, amu, kJ/mol, K):
- σ 0.34 nm, ε 0.996 kJ/mol, m 39.948 amu, 21 atoms/nm³ (ρ* = 0.825) in a cubic periodic box
  of side (N/21)^(1/3) nm; no charges, no dispersion correction.
- Cutoff 1.0 nm with the potential smoothed from 0.9 nm to 1.0 nm. The smoothing functions
  are not all the same: diffmd's `SwitchedCutoff` is OpenMM's switch (S = 1 − 10x³ + 15x⁴ −
  6x⁵, x = (r − 0.9)/(1.0 − 0.9)), so diffmd and OpenMM integrate the same potential; JAX MD's
  `multiplicative_isotropic_cutoff` is a polynomial in r² (HOOMD's form) and differs in the
  0.9–1.0 nm shell (≈1e-5 relative in the total energy, ≈7e-5 kJ/mol per atom at the start).
- dt 2 fs, NVE velocity Verlet (OpenMM's VerletIntegrator is the leap-frog form of the same
  scheme: the same positions, velocities offset by half a step).
- One start per N shared by every engine: a simple-cubic lattice (a random N of ⌈N^⅓⌉³ sites)
  jittered by ±0.02 nm, minimised with OpenMM's LocalEnergyMinimizer (tolerance 10 kJ/mol/nm,
  ≤ 200 iterations), Maxwell–Boltzmann velocities at 120 K with zero total momentum. It is made
  once and cached as .npz (written atomically) under results/lj_fluid_cache.

Engines (each engine × N × dtype runs in its own process, so peak RSS is that run's own):
- diffmd: `md.System` with `LennardJones(use_neighbors=True, cutoff=SwitchedCutoff(1.0, 0.9))`,
  a neighbor finder with a list cutoff of 1.0 nm + skin (`--finder cell` =
  CellListNeighborFinder, the default where it exists; `--finder distance` =
  DistanceNeighborFinder, O(N²) per build, skipped above 16,000 atoms), rebuilt whenever an
  atom has moved half the skin; `md.simulate(system, md.VelocityVerlet(0.002), C)` called
  repeatedly with the same C (compiled once), each call starting from the previous call's final
  coordinates and velocities. float32 is diffmd's default; the benchmark runs float32 and
  float64 (`--dtypes`; `--quick` runs float64 at N = 1000 only) to report both drifts.
- JAX MD (its best format on this machine, see the anchors): OrderedSparse neighbor list, skin
  0.2 nm, float32, `simulate.nve` with `nbrs.update` after every step inside `lax.fori_loop`
  (a rebuild happens when an atom has moved half the skin), buffer overflow checked after every
  chunk (reallocate, recompile and redo the chunk).
- OpenMM: CPU platform, 2 threads, NonbondedForce CutoffPeriodic with the switching function,
  VerletIntegrator.

Timing: after a warm-up, chunks are timed until the window holds at least `--seconds` seconds
and `--min-steps` steps (several rebuild intervals: at skin 0.2 nm the lists are rebuilt about
every 70–90 steps, so a rebuild costs what it really costs). Reported throughput is the
amortised mean over the window (total steps / total time). Each diffmd call continues from the
previous call's final state (`simulate(..., start=state)`: the same neighbor list, one force
evaluation at the start of the call, no extra build). Skins: each engine its best — JAX MD
0.2 nm (the anchors' sweep), diffmd 0.1 nm by default (`--diffmd-skin`: its builds are cheap, and
a thinner skin means fewer listed pairs per step; at 8,000 atoms 0.1 and 0.2 tie). Compile time is kept
out of the window: JAX MD's from `lower().compile()`, diffmd's as its first call minus a
steady call of the same length. Energy drift is the slope of a least-squares line through the
total energy per atom over the window (every step for diffmd, at chunk boundaries for the
others), in kJ/mol per atom per ns; short windows measure mostly the energy fluctuation.

Output: a markdown table, and with `--json PATH` (written atomically) {"benchmark", "settings",
"machine", "records", "skipped"}; one record per engine × N (diffmd: per dtype too) with
`engine` ("diffmd", "jax-md", "openmm"), `n_atoms`, `atom_steps_per_s`, `steps_per_s`, `dtype`,
`compile_s`, `rebuilds`, `pe_start_per_atom`, `drift_per_atom_per_ns`, `peak_rss_mib` (MiB),
`ratio_to_<peer>` and more.

    .venv/bin/python benchmarks/lj_fluid.py --quick                 # N = 1k, 8k (under 3 minutes)
    .venv/bin/python benchmarks/lj_fluid.py                         # N = 1k, 8k, 32k, 100k
    .venv/bin/python benchmarks/lj_fluid.py --sizes 500 --seconds 2 --json results/lj.json
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.append(str(ROOT / "src"))

SIGMA = 0.34  # nm
EPSILON = 0.996  # kJ/mol
MASS = 39.948  # amu
DENSITY = 21.0  # atoms / nm³
CUTOFF = 1.0  # nm
SWITCH = 0.9  # nm, start of the smoothing
DT = 0.002  # ps
TEMPERATURE = 120.0  # K
KB = 0.008314462618  # kJ/mol/K (as diffmd.OPENMM_UNITS)
JITTER = 0.02  # nm
MIN_TOLERANCE, MIN_ITERATIONS = 10.0, 200  # OpenMM LocalEnergyMinimizer (kJ/mol/nm, iterations)
START_VERSION = 1  # bump when the recipe of the start configuration changes

FULL_SIZES = (1000, 8000, 32000, 100000)
QUICK_SIZES = (1000, 8000)
ENGINES = ("diffmd", "jax-md", "openmm")
DTYPES = ("float32", "float64")
DISTANCE_FINDER_MAX_ATOMS = 16000
DEFAULT_CACHE = ROOT / "results" / "lj_fluid_cache"


# ---------------------------------------------------------------------------------------------
# The shared start configuration
# ---------------------------------------------------------------------------------------------


def box_side(n_atoms: int) -> float:
    """Side (nm) of the cubic box holding `n_atoms` at 21 atoms/nm³."""
    return (n_atoms / DENSITY) ** (1.0 / 3.0)


def jittered_lattice(n_atoms: int, seed: int = 0) -> np.ndarray:
    """(N, 3) float64 coordinates (nm) in [0, L): a random N of the ⌈N^⅓⌉³ simple-cubic sites
    (uniform density), each moved by a uniform ±0.02 nm in every component."""
    rng = np.random.default_rng(seed)
    side = box_side(n_atoms)
    m = int(math.ceil(n_atoms ** (1.0 / 3.0) - 1e-9))
    spacing = side / m
    axis = (np.arange(m) + 0.5) * spacing
    sites = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    if len(sites) > n_atoms:
        sites = sites[np.sort(rng.choice(len(sites), n_atoms, replace=False))]
    return np.mod(sites + rng.uniform(-JITTER, JITTER, sites.shape), side)


def maxwell_boltzmann(n_atoms: int, seed: int = 1, temperature: float = TEMPERATURE) -> np.ndarray:
    """(N, 3) float64 velocities (nm/ps) drawn at `temperature` (K), total momentum zero."""
    rng = np.random.default_rng(seed)
    v = rng.normal(0.0, math.sqrt(KB * temperature / MASS), (n_atoms, 3))
    return v - v.mean(axis=0)


def openmm_system(n_atoms: int, side: float):
    """The OpenMM System: N argon atoms, NonbondedForce CutoffPeriodic 1.0 nm, switch from 0.9 nm."""
    import openmm as mm

    system = mm.System()
    system.setDefaultPeriodicBoxVectors(mm.Vec3(side, 0, 0), mm.Vec3(0, side, 0), mm.Vec3(0, 0, side))
    force = mm.NonbondedForce()
    force.setNonbondedMethod(mm.NonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(CUTOFF)
    force.setUseSwitchingFunction(True)
    force.setSwitchingDistance(SWITCH)
    force.setUseDispersionCorrection(False)
    for _ in range(n_atoms):
        system.addParticle(MASS)
        force.addParticle(0.0, SIGMA, EPSILON)
    system.addForce(force)
    return system


def openmm_context(coords, side: float, platform_name: str = "CPU", threads: int = 2, velocities=None):
    """(Context, VerletIntegrator) for the fluid at `coords` (nm) and `velocities` (nm/ps)."""
    import openmm as mm

    integrator = mm.VerletIntegrator(DT)
    props = {"Threads": str(threads)} if platform_name == "CPU" else {}
    context = mm.Context(openmm_system(len(coords), side), integrator,
                         mm.Platform.getPlatformByName(platform_name), props)
    context.setPositions(np.asarray(coords, np.float64))
    if velocities is not None:
        context.setVelocities(np.asarray(velocities, np.float64))
    return context, integrator


def openmm_energies(context) -> tuple[float, float]:
    """(potential, kinetic) energy of the context, kJ/mol."""
    import openmm.unit as u

    state = context.getState(getEnergy=True)
    return (state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole),
            state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole))


def make_start(n_atoms: int, seed: int = 0) -> dict:
    """Build the start: jittered lattice → OpenMM minimiser (CPU, 2 threads) → velocities.

    Returns a dict of coords (N, 3) nm, velocities (N, 3) nm/ps, side (nm) and the potential
    energy per atom (kJ/mol) before and after minimising."""
    import openmm as mm

    side = box_side(n_atoms)
    context, _ = openmm_context(jittered_lattice(n_atoms, seed), side, "CPU", 2)
    pe_lattice = openmm_energies(context)[0]
    mm.LocalEnergyMinimizer.minimize(context, MIN_TOLERANCE, MIN_ITERATIONS)
    state = context.getState(getPositions=True)
    coords = np.mod(np.asarray(state.getPositions(asNumpy=True)._value, np.float64), side)
    pe_min = openmm_energies(context)[0]
    return {"coords": coords, "velocities": maxwell_boltzmann(n_atoms, seed + 1), "side": side,
            "pe_lattice_per_atom": pe_lattice / n_atoms, "pe_minimised_per_atom": pe_min / n_atoms,
            "n_atoms": n_atoms, "seed": seed, "version": START_VERSION}


def start_path(n_atoms: int, cache_dir, seed: int = 0) -> Path:
    return Path(cache_dir) / f"lj_argon_n{n_atoms}_seed{seed}_v{START_VERSION}.npz"


def load_start(path) -> dict:
    """A cached start (see make_start) from its .npz (no pickles)."""
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    for key in ("side", "pe_lattice_per_atom", "pe_minimised_per_atom"):
        out[key] = float(out[key])
    for key in ("n_atoms", "seed", "version"):
        out[key] = int(out[key])
    return out


def start_configuration(n_atoms: int, cache_dir=DEFAULT_CACHE, seed: int = 0) -> tuple[dict, Path]:
    """The shared start for `n_atoms`, from the cache or made now and cached atomically.

    Returns (start dict, path of the .npz)."""
    from diffmd.io import atomic_write_bytes

    path = start_path(n_atoms, cache_dir, seed)
    if path.exists():
        start = load_start(path)
        if start["n_atoms"] == n_atoms and start["coords"].shape == (n_atoms, 3):
            return start, path
    start = make_start(n_atoms, seed)
    buffer = io.BytesIO()
    np.savez(buffer, **start)
    atomic_write_bytes(path, buffer.getvalue())
    return start, path


# ---------------------------------------------------------------------------------------------
# Helpers shared by the runners
# ---------------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def drift_per_ns(steps, total_energies, n_atoms: int) -> float:
    """Slope (kJ/mol per atom per ns) of a least-squares line through total energy (kJ/mol)
    against time, for energies taken after the given step numbers (dt = 2 fs)."""
    steps = np.asarray(steps, np.float64)
    energies = np.asarray(total_energies, np.float64) / n_atoms
    if len(steps) < 2 or np.ptp(steps) == 0:
        return float("nan")
    t_ns = steps * DT * 1e-3
    return float(np.polyfit(t_ns - t_ns.mean(), energies, 1)[0])


def default_finder() -> str:
    """"cell" where diffmd has CellListNeighborFinder, otherwise "distance"."""
    import diffmd as md

    return "cell" if hasattr(md, "CellListNeighborFinder") else "distance"


def neighbor_finder(kind: str, cutoff: float, capacity: int | None = None):
    """diffmd neighbor finder of `kind` ("distance" or "cell") with list cutoff `cutoff` (nm)."""
    import diffmd as md

    if kind == "distance":
        return md.DistanceNeighborFinder(cutoff=cutoff, capacity=capacity)
    if kind == "cell":
        cls = getattr(md, "CellListNeighborFinder", None)
        if cls is None:
            raise RuntimeError("--finder cell needs diffmd.CellListNeighborFinder, which this diffmd does not have "
                               "(yet); use --finder distance")
        return cls(cutoff=cutoff, capacity=capacity)
    raise ValueError(f"unknown neighbor finder {kind!r}; choose 'distance' or 'cell'")


def _window_done(seconds_so_far: float, steps_so_far: int, seconds: float, min_steps: int) -> bool:
    return seconds_so_far >= seconds and steps_so_far >= min_steps


def _summary(record: dict, n_atoms: int, times: list, chunk_steps: list, energy_steps: list,
             energies: list, cpu_seconds: float) -> dict:
    """Fill in the throughput and drift fields common to every engine."""
    total_s, total_steps = float(sum(times)), int(sum(chunk_steps))
    rates = [k / t for k, t in zip(chunk_steps, times)]
    record.update(
        timed_steps=total_steps, timed_seconds=total_s, chunks=len(times),
        steps_per_s=total_steps / total_s, atom_steps_per_s=total_steps * n_atoms / total_s,
        steps_per_s_median_chunk=float(np.median(rates)), chunk_seconds=[float(t) for t in times],
        cpu_util=cpu_seconds / total_s,
        e_window_start_per_atom=float(energies[0]) / n_atoms, e_window_end_per_atom=float(energies[-1]) / n_atoms,
        drift_end_minus_start_per_atom=(float(energies[-1]) - float(energies[0])) / n_atoms,
        drift_per_atom_per_ns=drift_per_ns(energy_steps, energies, n_atoms),
        energy_points=len(energies), window_ps=(energy_steps[-1] - energy_steps[0]) * DT,
    )
    return record


# ---------------------------------------------------------------------------------------------
# diffmd
# ---------------------------------------------------------------------------------------------


def _probe(state, system):
    """Logged every step: atom 0's neighbor-list reference coordinates (they change exactly when
    the list is rebuilt) and the total energy (kJ/mol). Module level so its hash is stable."""
    import diffmd as md

    return (state.neighbors.reference_coords[0],
            state.potential_energy + md.kinetic_energy(system.atoms.mass, state.velocities))


def diffmd_system(start: dict, dtype: str = "float32", finder: str = "distance", skin: float = 0.2,
                  capacity: int | None = None, loggers: dict | None = None, coords=None, velocities=None):
    """The fluid as an `md.System` in `dtype` (nm, nm/ps, amu, kJ/mol)."""
    import jax.numpy as jnp

    import diffmd as md

    dt = jnp.dtype(dtype)
    n = len(start["coords"])
    coords = start["coords"] if coords is None else coords
    velocities = start["velocities"] if velocities is None else velocities
    return md.System(
        atoms=md.Atoms.uniform(n, mass=MASS, sigma=SIGMA, epsilon=EPSILON, dtype=dt),
        coords=jnp.asarray(coords, dt), velocities=jnp.asarray(velocities, dt),
        boundary=md.CubicBoundary(jnp.asarray(start["side"], dt)),
        pairwise_inters=(md.LennardJones(use_neighbors=True,
                                         cutoff=md.SwitchedCutoff(distance=CUTOFF, switch_distance=SWITCH)),),
        neighbor_finder=neighbor_finder(finder, CUTOFF + skin, capacity),
        loggers=loggers or {},
    )


def run_diffmd(start: dict, *, dtype: str = "float32", finder: str | None = None, skin: float = 0.2,
               seconds: float = 10.0, min_steps: int = 400, chunk_steps: int | None = None,
               max_chunks: int = 1000) -> dict:
    """Time diffmd on the start; returns the record (see the module docstring).

    Steps: (1) a 0-step `simulate` sizes the neighbor list (its capacity is then fixed, so every
    later call reuses one compiled program) and gives the start's potential energy; (2) a first
    call of `chunk_steps` steps (compile + run, untimed) and a second one, the first to continue
    a state (it compiles that program: untimed too); (3) timed calls of the same length
    until the window holds `seconds` s and `min_steps` steps."""
    import jax

    if dtype == "float64" and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    import diffmd as md

    n = len(start["coords"])
    finder = finder or default_finder()
    if chunk_steps is None:
        chunk_steps = default_chunk_steps(n, seconds, min_steps)
    integrator = md.VelocityVerlet(DT)
    rss_before = peak_rss_mib()

    t0 = time.perf_counter()
    system0 = diffmd_system(start, dtype, finder, skin)
    sized = md.simulate(system0, integrator, 0)
    capacity = sized.state.neighbors.capacity.slots
    pe0 = float(sized.state.potential_energy)
    ke0 = float(md.kinetic_energy(system0.atoms.mass, system0.velocities))
    sizing_s = time.perf_counter() - t0

    loggers = {"probe": md.ObservableLogger(_probe, every=1)}
    system = diffmd_system(start, dtype, finder, skin, capacity, loggers)
    state = None  # each call continues from the previous call's final state (list included)
    reallocations = 0

    def call():
        nonlocal state, capacity, reallocations
        ref0 = np.asarray(system.coords[0] if state is None else state.neighbors.reference_coords[0])
        t = time.perf_counter()
        trajectory = jax.block_until_ready(md.simulate(system, integrator, chunk_steps, start=state))
        elapsed = time.perf_counter() - t
        grown = trajectory.state.neighbors.capacity.slots != capacity  # simulate reallocated (and recompiled)
        if grown:
            reallocations += 1
            capacity = trajectory.state.neighbors.capacity.slots
        refs, energies = (np.asarray(x) for x in trajectory.logs["probe"])
        changed = np.concatenate([[np.any(refs[0] != ref0)], np.any(refs[1:] != refs[:-1], axis=1)])
        state = trajectory.state
        return elapsed, int(changed.sum()), energies, grown

    first_s, _, energies, _ = call()
    # The first call that continues a state compiles a program of its own (start given): untimed too.
    _, _, energies, _ = call()
    step = 2 * chunk_steps
    e_steps, e_values = [step], [float(energies[-1])]
    times, steps_done, rebuilds, cpu = [], [], 0, 0.0
    while not _window_done(sum(times), sum(steps_done), seconds, min_steps) and len(times) < max_chunks:
        c0 = time.process_time()
        elapsed, built, energies, grown = call()
        e_steps.extend(step + np.arange(1, chunk_steps + 1))
        e_values.extend(energies.astype(np.float64).tolist())
        step += chunk_steps
        if grown:  # the list was reallocated and the call recompiled: its time is not a timing
            continue
        cpu += time.process_time() - c0
        times.append(elapsed)
        steps_done.append(chunk_steps)
        rebuilds += built
    steady = float(np.median(times))
    record = {
        "engine": "diffmd", "n_atoms": n, "dtype": dtype, "finder": finder, "skin_nm": skin,
        "variant": f"{'f32' if dtype == 'float32' else 'f64'} {finder}",
        "chunk_steps": chunk_steps, "capacity": capacity, "compile_s": max(first_s - steady, 0.0),
        "first_call_s": first_s, "setup_s": sizing_s, "rebuilds": rebuilds,
        "reallocations": reallocations,
        "pe_start_per_atom": pe0 / n, "e_start_per_atom": (pe0 + ke0) / n,
        "jax": jax.__version__, "peak_rss_mib_before": rss_before,
    }
    _summary(record, n, times, steps_done, e_steps, e_values, cpu)
    record["rebuild_every_steps"] = record["timed_steps"] / max(rebuilds, 1)
    record["peak_rss_mib"] = peak_rss_mib()
    return record


def default_chunk_steps(n_atoms: int, seconds: float, min_steps: int) -> int:
    """Steps per diffmd call: half the window (half of `seconds` at a guessed 2e5 atom-steps/s,
    at least half of `min_steps`), a multiple of 50 in [100, 2000]. Each call starts with one
    force evaluation a single long run would not do, so longer calls charge diffmd less for
    that artefact of timing in chunks."""
    guess = max(seconds / 2 * 2e5 / n_atoms, min_steps / 2)
    return int(min(2000, max(100, math.ceil(guess / 50) * 50)))


# ---------------------------------------------------------------------------------------------
# JAX MD
# ---------------------------------------------------------------------------------------------


def run_jaxmd(start: dict, *, skin: float = 0.2, seconds: float = 10.0, min_steps: int = 400,
              n_points: int = 20) -> dict:
    """Time JAX MD (OrderedSparse neighbor list, float32) on the start; returns the record."""
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax_md import energy, partition, simulate, space

    n, f32 = len(start["coords"]), jnp.float32
    rss_before = peak_rss_mib()
    side = jnp.asarray(start["side"], f32)
    displacement, shift = space.periodic(side)
    neighbor_fn, energy_fn = energy.lennard_jones_neighbor_list(
        displacement, side, sigma=SIGMA, epsilon=EPSILON, r_onset=SWITCH / SIGMA, r_cutoff=CUTOFF / SIGMA,
        dr_threshold=skin, format=partition.OrderedSparse, capacity_multiplier=1.25)
    init_fn, apply_fn = simulate.nve(energy_fn, shift, dt=DT)

    def run(state, nbrs, n_steps):
        def body(_, carry):
            state, nbrs, rebuilt = carry
            state = apply_fn(state, neighbor=nbrs)
            new = nbrs.update(state.position)
            changed = jnp.any(new.reference_position != nbrs.reference_position)
            return state, new, rebuilt + changed.astype(jnp.int32)
        return lax.fori_loop(0, n_steps, body, (state, nbrs, jnp.int32(0)))

    @jax.jit
    def total_energy(state, nbrs):
        return energy_fn(state.position, neighbor=nbrs) + 0.5 * jnp.sum(state.momentum**2 / state.mass)

    t0 = time.perf_counter()
    coords = jnp.asarray(start["coords"], f32)
    nbrs = neighbor_fn.allocate(coords)
    state = init_fn(jax.random.PRNGKey(0), coords, 0.0, mass=jnp.asarray(MASS, f32),
                    momenta=MASS * jnp.asarray(start["velocities"], f32), neighbor=nbrs)
    jax.block_until_ready(state)
    allocate_s = time.perf_counter() - t0
    pe0 = float(energy_fn(state.position, neighbor=nbrs))
    e0 = float(total_energy(state, nbrs))

    def compile_run(state, nbrs):
        t = time.perf_counter()
        compiled = jax.jit(run).lower(state, nbrs, jnp.int32(1)).compile()
        return compiled, time.perf_counter() - t

    compiled, compile_s = compile_run(state, nbrs)
    reallocations = 0

    def advance(state, nbrs, k):
        """k steps; on overflow reallocate, recompile and redo (the time of a redo is not kept)."""
        nonlocal compiled, reallocations
        while True:
            t = time.perf_counter()
            s2, n2, built = compiled(state, nbrs, jnp.int32(k))
            jax.block_until_ready(s2)
            elapsed = time.perf_counter() - t
            if not bool(n2.did_buffer_overflow):
                return s2, n2, int(built), elapsed
            reallocations += 1
            nbrs = neighbor_fn.allocate(state.position)
            compiled, _ = compile_run(state, nbrs)

    # warm-up and rate estimate
    k, step = 5, 0
    while True:
        state, nbrs, _, elapsed = advance(state, nbrs, k)
        step += k
        if elapsed > 0.3 or k >= 1000:
            break
        k *= 4
    rate = k / elapsed
    chunk = max(5, int(math.ceil(max(rate * seconds, min_steps) / n_points)))
    times, steps_done, rebuilds, cpu = [], [], 0, 0.0
    e_steps, e_values = [step], [float(total_energy(state, nbrs))]
    while not _window_done(sum(times), sum(steps_done), seconds, min_steps):
        c0 = time.process_time()
        state, nbrs, built, elapsed = advance(state, nbrs, chunk)
        cpu += time.process_time() - c0
        times.append(elapsed)
        steps_done.append(chunk)
        rebuilds += built
        step += chunk
        e_steps.append(step)
        e_values.append(float(total_energy(state, nbrs)))
    import jax_md

    record = {
        "engine": "jax-md", "n_atoms": n, "dtype": "float32", "format": "OrderedSparse", "skin_nm": skin,
        "variant": "f32 ordered-sparse", "compile_s": compile_s, "setup_s": allocate_s, "rebuilds": rebuilds,
        "reallocations": reallocations, "pe_start_per_atom": pe0 / n, "e_start_per_atom": e0 / n,
        "jax": jax.__version__, "jax_md": getattr(jax_md, "__version__", "?"), "peak_rss_mib_before": rss_before,
    }
    _summary(record, n, times, steps_done, e_steps, e_values, cpu)
    record["rebuild_every_steps"] = record["timed_steps"] / max(rebuilds, 1)
    record["peak_rss_mib"] = peak_rss_mib()
    return record


# ---------------------------------------------------------------------------------------------
# OpenMM
# ---------------------------------------------------------------------------------------------


def run_openmm(start: dict, *, threads: int = 2, platform_name: str = "CPU", seconds: float = 10.0,
               min_steps: int = 400, n_points: int = 20) -> dict:
    """Time OpenMM (NonbondedForce, VerletIntegrator) on the start; returns the record."""
    import openmm as mm

    n = len(start["coords"])
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    context, integrator = openmm_context(start["coords"], start["side"], platform_name, threads,
                                         start["velocities"])
    pe0, ke0 = openmm_energies(context)
    setup_s = time.perf_counter() - t0

    k, step = 10, 0
    while True:  # warm-up and rate estimate
        t = time.perf_counter()
        integrator.step(k)
        elapsed = time.perf_counter() - t
        step += k
        if elapsed > 0.3 or k >= 10000:
            break
        k *= 4
    chunk = max(5, int(math.ceil(max(k / elapsed * seconds, min_steps) / n_points)))
    times, steps_done, cpu = [], [], 0.0
    e_steps, e_values = [step], [sum(openmm_energies(context))]
    while not _window_done(sum(times), sum(steps_done), seconds, min_steps):
        c0, t = time.process_time(), time.perf_counter()
        integrator.step(chunk)
        times.append(time.perf_counter() - t)
        cpu += time.process_time() - c0
        steps_done.append(chunk)
        step += chunk
        e_steps.append(step)
        e_values.append(sum(openmm_energies(context)))
    record = {
        "engine": "openmm", "n_atoms": n, "dtype": "mixed" if platform_name == "CPU" else "double",
        "platform": platform_name, "threads": threads, "variant": f"{platform_name} {threads} thr NonbondedForce",
        "compile_s": None, "setup_s": setup_s, "rebuilds": None,
        "pe_start_per_atom": pe0 / n, "e_start_per_atom": (pe0 + ke0) / n,
        "openmm": mm.__version__, "peak_rss_mib_before": rss_before,
    }
    _summary(record, n, times, steps_done, e_steps, e_values, cpu)
    record["peak_rss_mib"] = peak_rss_mib()
    return record


# ---------------------------------------------------------------------------------------------
# Driver: one process per engine × N × dtype, a table, JSON
# ---------------------------------------------------------------------------------------------


def _child(args) -> None:
    start = load_start(args.start)
    if args.child == "diffmd":
        record = run_diffmd(start, dtype=args.dtype, finder=args.finder, skin=args.diffmd_skin, seconds=args.seconds,
                            min_steps=args.min_steps, chunk_steps=args.chunk_steps)
    elif args.child == "jax-md":
        record = run_jaxmd(start, skin=args.skin, seconds=args.seconds, min_steps=args.min_steps)
    else:
        record = run_openmm(start, threads=args.threads, seconds=args.seconds, min_steps=args.min_steps)
    print("RESULT " + json.dumps(record), flush=True)


def _run_child(engine: str, start_file: Path, args, dtype: str = "float32") -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", engine, "--start", str(start_file),
           "--dtype", dtype, "--finder", args.finder, "--skin", str(args.skin), "--diffmd-skin", str(args.diffmd_skin), "--seconds", str(args.seconds),
           "--min-steps", str(args.min_steps), "--threads", str(args.threads)]
    if args.chunk_steps:
        cmd += ["--chunk-steps", str(args.chunk_steps)]
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            record = json.loads(line[len("RESULT "):])
            record["process_s"] = time.perf_counter() - t0
            return record
    raise RuntimeError(f"{engine} ({dtype}) failed (exit {out.returncode}):\n{out.stderr[-3000:]}")


def add_ratios(records: list[dict]) -> None:
    """ratio_to_<peer>: this record's atom-steps/s over the peer's at the same N (the peer
    diffmd is its float32 run where there is one)."""
    for r in records:
        for peer in ENGINES:
            same = [p for p in records if p["engine"] == peer and p["n_atoms"] == r["n_atoms"]]
            same.sort(key=lambda p: p.get("dtype") != "float32")
            if same and same[0] is not r:
                r[f"ratio_to_{peer}"] = r["atom_steps_per_s"] / same[0]["atom_steps_per_s"]


def _fmt(x, spec: str, empty: str = "–") -> str:
    return empty if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(records: list[dict]) -> str:
    """Markdown table of the records."""
    head = ("| N | engine | variant | steps/s | atom-steps/s | × diffmd | × jax-md | × openmm | compile s | "
            "timed steps | rebuilds | U₀ kJ/mol/atom | drift kJ/mol/atom/ns | ΔE window /atom | "
            "peak RSS MiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    order = {e: i for i, e in enumerate(ENGINES)}
    for r in sorted(records, key=lambda r: (r["n_atoms"], order[r["engine"]], r.get("dtype", ""))):
        rebuilds = "–" if r.get("rebuilds") is None else str(r["rebuilds"])
        lines.append(
            f"| {r['n_atoms']:,} | {r['engine']} | {r['variant']} | {r['steps_per_s']:.1f} | "
            f"{r['atom_steps_per_s']:.3g} | {_fmt(r.get('ratio_to_diffmd'), '.2f')} | "
            f"{_fmt(r.get('ratio_to_jax-md'), '.2f')} | {_fmt(r.get('ratio_to_openmm'), '.2f')} | "
            f"{_fmt(r.get('compile_s'), '.1f')} | {r['timed_steps']} | {rebuilds} | {r['pe_start_per_atom']:.6f} | "
            f"{r['drift_per_atom_per_ns']:+.2e} | {r['drift_end_minus_start_per_atom']:+.1e} | "
            f"{r['peak_rss_mib']:,.0f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="atom counts (default 1000 8000 32000 100000)")
    p.add_argument("--quick", action="store_true", help="N = 1000 and 8000, short windows (under 3 minutes)")
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument("--dtypes", nargs="+", choices=DTYPES, default=None,
                   help="diffmd precision(s) (default both; --quick: float64 at N <= 1000 only)")
    p.add_argument("--finder", choices=("distance", "cell"), default=None,
                   help="diffmd neighbor finder (default cell where diffmd has CellListNeighborFinder)")
    p.add_argument("--skin", type=float, default=0.2, help="JAX MD's neighbor-list skin (nm; its best in the anchors)")
    p.add_argument("--diffmd-skin", type=float, default=0.1, help="diffmd's neighbor-list skin (nm)")
    p.add_argument("--seconds", type=float, default=None, help="minimum timed window per run (s; default 15, quick 3)")
    p.add_argument("--min-steps", type=int, default=None, help="minimum timed steps per run (default 500, quick 300)")
    p.add_argument("--chunk-steps", type=int, default=None, help="steps per diffmd simulate call (default by N)")
    p.add_argument("--threads", type=int, default=2, help="OpenMM CPU threads")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the start configurations are kept")
    p.add_argument("--json", type=Path, default=None, help="write the records here (atomically)")
    p.add_argument("--child", choices=ENGINES, default=None, help=argparse.SUPPRESS)
    p.add_argument("--start", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--dtype", choices=DTYPES, default="float32", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sizes is None:
        args.sizes = list(QUICK_SIZES if args.quick else FULL_SIZES)
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 15.0
    if args.min_steps is None:
        args.min_steps = 300 if args.quick else 500
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        return _child(args)
    if args.finder is None:
        args.finder = default_finder()
    elif args.finder == "cell" and "diffmd" in args.engines:
        try:  # fail now, with a clear message, if this diffmd has no cell lists
            neighbor_finder("cell", CUTOFF + args.diffmd_skin)
        except RuntimeError as error:
            raise SystemExit(f"lj_fluid.py: {error}") from None
    dtypes = args.dtypes or list(DTYPES)
    t_start = time.perf_counter()
    records, skipped = [], []
    for n in args.sizes:
        runs = []
        for engine in args.engines:
            if engine != "diffmd":
                runs.append((engine, "float32"))
                continue
            for dtype in dtypes:
                if args.quick and args.dtypes is None and dtype == "float64" and n > 1000:
                    skipped.append({"engine": engine, "n_atoms": n, "dtype": dtype,
                                    "reason": "--quick runs float64 at N <= 1000 only"})
                    continue
                if args.finder == "distance" and n > DISTANCE_FINDER_MAX_ATOMS:
                    skipped.append({"engine": engine, "n_atoms": n, "dtype": dtype,
                                    "reason": f"DistanceNeighborFinder builds are O(N²) (not viable above "
                                              f"{DISTANCE_FINDER_MAX_ATOMS:,} atoms); use --finder cell"})
                    continue
                runs.append((engine, dtype))
        if not runs:
            continue
        t0 = time.perf_counter()
        start, start_file = start_configuration(n, args.cache_dir)
        print(f"N = {n:,}: box {start['side']:.3f} nm, start U/N {start['pe_minimised_per_atom']:.4f} kJ/mol "
              f"({time.perf_counter() - t0:.1f} s, {start_file})", flush=True)
        for engine, dtype in runs:
            try:
                record = _run_child(engine, start_file, args, dtype)
            except RuntimeError as error:
                print(f"  {engine} {dtype}: FAILED\n{error}", flush=True)
                skipped.append({"engine": engine, "n_atoms": n, "dtype": dtype, "reason": str(error)[-500:]})
                continue
            records.append(record)
            print(f"  {engine:7s} {record['variant']:28s} {record['steps_per_s']:9.1f} steps/s "
                  f"{record['atom_steps_per_s']:10.3g} atom-steps/s  ({record['timed_steps']} steps timed, "
                  f"{record['process_s']:.0f} s in all)", flush=True)
    add_ratios(records)
    elapsed = time.perf_counter() - t_start
    print(f"\nLJ argon NVE, cutoff {CUTOFF} nm (smoothed from {SWITCH} nm), dt {DT * 1000:g} fs, "
          f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}; diffmd finder: {args.finder}, "
          f"skin {args.skin} nm (JAX MD), {args.diffmd_skin} nm (diffmd) ({elapsed:.0f} s in all)\n")
    print(table(records))
    print("\nsteps/s and atom-steps/s: total timed steps / total timed time (rebuilds included). × peer: ratio "
          "of atom-steps/s at the same N (peer diffmd = float32). Rebuilds: neighbor-list rebuilds in the timed "
          "window. Skin: JAX MD --skin, diffmd --diffmd-skin. drift: least-squares slope of the total energy per "
          "atom over the window; ΔE window: its end minus its start. Smoothing: diffmd and OpenMM use OpenMM's "
          "switch; JAX MD its own (polynomial in r²), so its U₀ differs slightly.")
    for s in skipped:
        print(f"skipped: N = {s['n_atoms']:,} {s['engine']} {s['dtype']}: {s['reason'].splitlines()[0]}")
    result = {
        "benchmark": "lj_fluid",
        "settings": {"sizes": args.sizes, "engines": args.engines, "dtypes": dtypes, "finder": args.finder,
                     "skin_nm": args.skin, "diffmd_skin_nm": args.diffmd_skin, "seconds": args.seconds, "min_steps": args.min_steps,
                     "openmm_threads": args.threads, "quick": args.quick, "cutoff_nm": CUTOFF,
                     "switch_nm": SWITCH, "dt_ps": DT, "temperature_K": TEMPERATURE, "density_per_nm3": DENSITY},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "elapsed_s": elapsed, "records": records, "skipped": skipped,
    }
    if args.json:
        from diffmd.io import write_json

        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return result


if __name__ == "__main__":
    main()
