"""Every pair potential at the speed of Lennard-Jones: diffmd's fused kernels against LJ, and
OpenMM's CPU platform on the same potentials, in one run.

Each potential is evaluated over one fixed neighbor list (cell list, list cutoff 1.1 nm, pair
cutoff 1.0 nm) of a liquid-like configuration (a jittered simple-cubic lattice at 21 atoms/nm³,
argon-like σ 0.34 nm, ε 0.996 kJ/mol with ±5 % per-atom spread, charges ±0.5 e alternating),
float32, in three modes:

* forward — energy and forces (`energy_and_forces(..., derivatives="reverse")`, the kernel a
  simulation step runs);
* reverse — the gradient of L = E + Σ w·F with respect to the coordinates and every per-atom
  parameter (the forward kernel, then the reverse-mode kernel: what each step of a reverse-mode
  gradient through a simulation costs);
* jvp — energy, forces and their tangents along a direction in coordinates and parameters in one
  pass (`derivatives="forward"`: each step of a forward-mode gradient).

Each measurement is a compiled loop of evaluations in which every input depends on the previous
output (x ← x + 1e-30·F), so nothing is hoisted and no Python dispatch is timed. All loops are
compiled first and then timed round-robin, `--repeats` rounds; `seconds` is each one's best.
`ratio_to_lj` is the median over rounds of its time over LJ's in the same mode and size and the
same round (measured seconds apart, so a drift of the shared machine hits both alike; a ratio of
the two best times, kept as `ratio_of_best_times`, pairs a lucky round of one with a lucky round
of the other). `round_seconds` lists every round.

OpenMM (CPU platform, 2 threads, mixed precision) evaluates the same potentials with the same
cutoffs: NonbondedForce for LJ and Coulomb (CutoffPeriodic: reaction field with ε = 78.3, or
ε = 1, which is Coulomb shifted to zero at the cutoff), CustomNonbondedForce with the same
expression for LJ with geometric mixing, Mie, the soft sphere and Buckingham (OpenMM compiles
the expression into its kernel). Timed as `integrator.step(k)` of a VerletIntegrator with
dt = 1e-9 ps (the positions do not move, so no list is rebuilt): one force evaluation per step.

Potentials: lj, lj_geometric, coulomb_cutoff, coulomb_rf, lj_coulomb (LJ + reaction field, the
pair terms of a real force field, in one fused pass), mie (12-6, as exponentials), soft_sphere,
buckingham (a user-defined potential, written as docs/interactions.md tells a user to),
ewald_direct (real-space Ewald, k q_i q_j erfc(α r)/r with α for OpenMM's default tolerance
5e-4; OpenMM: NonbondedForce with PME, its reciprocal part in a force group the integrator
leaves out, so the direct-space kernel alone is timed — with ε = 0 its LJ is still evaluated).

    .venv/bin/python benchmarks/pair_potentials.py --quick              # N = 2,000 (< 3 minutes)
    .venv/bin/python benchmarks/pair_potentials.py --json results/pair_potentials.json   # 2,000 and 32,000

JSON (written atomically): {"benchmark", "settings", "machine", "records"}; one record per
potential × mode × N (diffmd's) with `engine` ("diffmd"), `potential`, `mode`, `n_atoms`,
`seconds` (per evaluation) and `ratio_to_lj`; the forward-mode records also hold OpenMM's time
for the same potential in the same run: `openmm_seconds`, `ratio_to_openmm` (diffmd / OpenMM)
and `openmm_ratio_to_lj` (OpenMM's own time over its LJ).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing
    sys.path.append(str(ROOT / "src"))

DENSITY = 21.0  # atoms / nm³
SIGMA, EPSILON, CHARGE = 0.34, 0.996, 0.5
CUTOFF, SWITCH, LIST_CUTOFF = 1.0, 0.9, 1.1  # nm
EWALD_ALPHA = math.sqrt(-math.log(2 * 5e-4)) / CUTOFF  # 1/nm: OpenMM's for its default tolerance
BUCKINGHAM = {"A": 1.0e5, "B": 35.0, "C": 5.0e-3}  # kJ/mol, 1/nm, kJ/mol·nm⁶
POTENTIALS = ("lj", "lj_geometric", "coulomb_cutoff", "coulomb_rf", "lj_coulomb", "mie", "soft_sphere", "buckingham",
              "ewald_direct")
MODES = ("forward", "reverse", "jvp")


def box_side(n_atoms: int) -> float:
    return (n_atoms / DENSITY) ** (1.0 / 3.0)


def configuration(n_atoms: int, seed: int = 0) -> dict:
    """Coordinates (nm), per-atom parameters and box side of the test liquid."""
    rng = np.random.default_rng(seed)
    side = box_side(n_atoms)
    m = int(math.ceil(n_atoms ** (1.0 / 3.0) - 1e-9))
    axis = (np.arange(m) + 0.5) * side / m
    sites = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    sites = sites[np.sort(rng.choice(len(sites), n_atoms, replace=False))]
    coords = np.mod(sites + rng.uniform(-0.03, 0.03, sites.shape), side)
    spread = lambda value: value * rng.uniform(0.95, 1.05, n_atoms)  # noqa: E731
    params = {"sigma": spread(SIGMA), "epsilon": spread(EPSILON),
              "charge": CHARGE * np.where(np.arange(n_atoms) % 2 == 0, 1.0, -1.0)}
    params.update({name: spread(value) for name, value in BUCKINGHAM.items()})
    return {"coords": coords, "params": params, "side": side}


# ---- diffmd --------------------------------------------------------------------------------


def buckingham_class():
    """The Buckingham potential written as docs/interactions.md tells a user to."""
    import equinox as eqx
    import jax.numpy as jnp

    import diffmd as md

    class Buckingham(md.PairwiseInteraction):
        """V(r) = A exp(−B r) − C / r⁶, with A, B and C mixed geometrically."""

        cutoff: md.Cutoff = md.NoCutoff()
        use_neighbors: bool = eqx.field(static=True, default=False)
        atom_params = ("A", "B", "C")

        def atom_values(self, atoms):  # square roots once per atom: a pair multiplies them
            return {name: jnp.sqrt(atoms[name]) for name in self.atom_params}

        def energy(self, r, p_i, p_j):
            a, b, c = p_i.A * p_j.A, p_i.B * p_j.B, p_i.C * p_j.C
            return a * jnp.exp(-b * r) - c / r**6

    return Buckingham


def diffmd_terms(potential: str) -> list:
    import diffmd as md

    switched = md.SwitchedCutoff(CUTOFF, SWITCH)
    lj = md.LennardJones(cutoff=switched, use_neighbors=True)
    rf = md.CoulombReactionField(distance=CUTOFF, use_neighbors=True)
    return {
        "lj": [lj],
        "lj_geometric": [md.LennardJones(cutoff=switched, use_neighbors=True, mixing="geometric")],
        "coulomb_cutoff": [md.Coulomb(cutoff=md.ShiftedPotentialCutoff(CUTOFF), use_neighbors=True)],
        "coulomb_rf": [rf],
        "lj_coulomb": [lj, rf],
        "mie": [md.Mie(n=12.0, m=6.0, cutoff=switched, use_neighbors=True)],
        "soft_sphere": [md.SoftSphere(cutoff=switched, use_neighbors=True)],
        "buckingham": [buckingham_class()(cutoff=switched, use_neighbors=True)],
        "ewald_direct": [md.EwaldDirect(alpha=EWALD_ALPHA, distance=CUTOFF, use_neighbors=True)],
    }[potential]


def diffmd_setup(config: dict):
    """(atoms, coords, boundary, neighbor rows) in float32."""
    import jax.numpy as jnp

    import diffmd as md

    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    n = len(config["coords"])
    atoms = md.Atoms(mass=jnp.full(n, 39.948, jnp.float32), **{k: f32(v) for k, v in config["params"].items()})
    coords = f32(config["coords"])
    boundary = md.CubicBoundary(jnp.float32(config["side"]))
    finder = md.CellListNeighborFinder(cutoff=LIST_CUTOFF)
    system = md.System(atoms, coords, boundary, pairwise_inters=diffmd_terms("lj"), neighbor_finder=finder)
    excluded = system.excluded_pairs().array
    capacity = finder.initial_capacity(coords, boundary, excluded)
    neighbors = finder.build(coords, boundary, excluded, capacity)
    return atoms, coords, boundary, neighbors


def diffmd_loop(potential: str, mode: str, atoms, coords, boundary, neighbors, reps: int):
    """A jitted function running `reps` evaluations of `mode`, each input depending on the last."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import diffmd as md

    system = md.System(atoms, coords, boundary, pairwise_inters=diffmd_terms(potential))
    tiny = jnp.float32(1e-30)
    weights = jnp.asarray(np.random.default_rng(3).normal(size=coords.shape), jnp.float32)
    tangent_x = jnp.asarray(np.random.default_rng(4).normal(size=coords.shape), jnp.float32)

    def evaluate(x, a, derivatives):
        live = eqx.tree_at(lambda s: (s.coords, s.atoms), system, (x, a))
        return md.energy_and_forces(live, x, neighbors, derivatives=derivatives)

    def one(x):
        if mode == "forward":
            return x + tiny * evaluate(x, atoms, "reverse")[1]
        if mode == "reverse":
            def loss(x, a):
                energy, forces = evaluate(x, a, "reverse")
                return energy + jnp.sum(weights * forces)
            gx, ga = jax.grad(loss, argnums=(0, 1))(x, atoms)
            return x + tiny * gx + tiny * ga.per_atom["mass"][:, None] * 0 + tiny * sum(
                jnp.sum(v) for v in ga.per_atom.values())
        tangent_atoms = jax.tree_util.tree_map(lambda v: 0.01 * v, atoms)
        _, (_, forces_dot) = jax.jvp(lambda x, a: evaluate(x, a, "forward"), (x, atoms), (tangent_x, tangent_atoms))
        return x + tiny * forces_dot

    return jax.jit(lambda x: jax.lax.fori_loop(0, reps, lambda _, x: one(x), x))


def time_best(fn, arg, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(arg))  # compile and warm up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(arg))
        best = min(best, time.perf_counter() - start)
    return best


# ---- OpenMM --------------------------------------------------------------------------------


def openmm_forces(potential: str, params: dict):
    """OpenMM forces (a list) for `potential`, with the same cutoffs as diffmd's terms."""
    import openmm as mm

    n = len(params["sigma"])

    def nonbonded(charges, sigmas, epsilons, dielectric):
        force = mm.NonbondedForce()
        force.setNonbondedMethod(mm.NonbondedForce.CutoffPeriodic)
        force.setCutoffDistance(CUTOFF)
        force.setReactionFieldDielectric(dielectric)
        force.setUseSwitchingFunction(True)
        force.setSwitchingDistance(SWITCH)
        force.setUseDispersionCorrection(False)
        for k in range(n):
            force.addParticle(float(charges[k]), float(sigmas[k]), float(epsilons[k]))
        return force

    def custom(expression, names):
        force = mm.CustomNonbondedForce(expression)
        force.setNonbondedMethod(mm.CustomNonbondedForce.CutoffPeriodic)
        force.setCutoffDistance(CUTOFF)
        force.setUseSwitchingFunction(True)
        force.setSwitchingDistance(SWITCH)
        for name in names:
            force.addPerParticleParameter(name)
        for k in range(n):
            force.addParticle([float(params[name][k]) for name in names])
        return force

    zeros = np.zeros(n)
    sigma, epsilon, charge = params["sigma"], params["epsilon"], params["charge"]
    if potential == "lj":
        return [nonbonded(zeros, sigma, epsilon, 78.3)]
    if potential == "coulomb_cutoff":
        return [nonbonded(charge, sigma, zeros, 1.0)]
    if potential == "coulomb_rf":
        return [nonbonded(charge, sigma, zeros, 78.3)]
    if potential == "lj_coulomb":
        return [nonbonded(charge, sigma, epsilon, 78.3)]
    if potential == "lj_geometric":
        return [custom("4*eps*((sig/r)^12-(sig/r)^6); sig=sqrt(sigma1*sigma2); eps=sqrt(epsilon1*epsilon2)",
                       ["sigma", "epsilon"])]
    if potential == "mie":
        return [custom("c*eps*((sig/r)^n-(sig/r)^m); c=n/(n-m)*(n/m)^(m/(n-m)); n=12; m=6; "
                       "sig=0.5*(sigma1+sigma2); eps=sqrt(epsilon1*epsilon2)", ["sigma", "epsilon"])]
    if potential == "soft_sphere":
        return [custom("4*eps*(sig/r)^12; sig=0.5*(sigma1+sigma2); eps=sqrt(epsilon1*epsilon2)",
                       ["sigma", "epsilon"])]
    if potential == "buckingham":
        return [custom("a*exp(-b*r)-c/r^6; a=sqrt(A1*A2); b=sqrt(B1*B2); c=sqrt(C1*C2)", ["A", "B", "C"])]
    if potential == "ewald_direct":
        force = nonbonded(charge, sigma, zeros, 1.0)
        force.setNonbondedMethod(mm.NonbondedForce.PME)
        force.setUseSwitchingFunction(False)
        force.setPMEParameters(EWALD_ALPHA, 8, 8, 8)
        force.setReciprocalSpaceForceGroup(1)  # not integrated: see openmm_time
        return [force]
    raise ValueError(potential)


def openmm_time(potential: str, config: dict, repeats: int, target_seconds: float) -> float:
    """Seconds per force evaluation on OpenMM's CPU platform (2 threads)."""
    import openmm as mm

    side, n = config["side"], len(config["coords"])
    system = mm.System()
    system.setDefaultPeriodicBoxVectors(mm.Vec3(side, 0, 0), mm.Vec3(0, side, 0), mm.Vec3(0, 0, side))
    for _ in range(n):
        system.addParticle(39.948)
    for force in openmm_forces(potential, config["params"]):
        system.addForce(force)
    integrator = mm.VerletIntegrator(1e-9)
    integrator.setIntegrationForceGroups({0})  # (PME's reciprocal part is in group 1)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("CPU"), {"Threads": "2"})
    context.setPositions(config["coords"])
    integrator.step(5)
    start = time.perf_counter()
    integrator.step(5)
    per_step = (time.perf_counter() - start) / 5
    steps = max(5, int(target_seconds / max(per_step, 1e-6)))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        integrator.step(steps)
        best = min(best, (time.perf_counter() - start) / steps)
    return best


# ---- the run -------------------------------------------------------------------------------


def run(sizes, potentials, modes, repeats: int, target_seconds: float, with_openmm: bool) -> list[dict]:
    """Compile every (potential, mode) loop, then time them round-robin `repeats` times and keep
    each one's best: slow drifts of a shared machine then hit every potential alike."""
    import jax

    records = []
    for n in sizes:
        config = configuration(n)
        atoms, coords, boundary, neighbors = diffmd_setup(config)
        print(f"N = {n}: {int(neighbors.capacity.slots)} neighbor slots per atom", flush=True)
        loops = {}
        for potential in potentials:
            for mode in modes:
                probe = diffmd_loop(potential, mode, atoms, coords, boundary, neighbors, 2)
                once = time_best(probe, coords, 1) / 2
                reps = max(3, int(target_seconds / max(once, 1e-6)))
                loop = diffmd_loop(potential, mode, atoms, coords, boundary, neighbors, reps)
                jax.block_until_ready(loop(coords))  # compile and warm up
                loops[potential, mode] = (loop, reps)
        rounds = {key: [] for key in loops}
        for _ in range(repeats):
            for key, (loop, reps) in loops.items():
                start = time.perf_counter()
                jax.block_until_ready(loop(coords))
                rounds[key].append((time.perf_counter() - start) / reps)
        best = {key: min(times) for key, times in rounds.items()}
        for (potential, mode), seconds in best.items():
            lj = rounds.get(("lj", mode), rounds[potential, mode])
            # The ratio to LJ is the median over rounds of the two times measured next to each
            # other, which a slow drift of a shared machine affects alike; a ratio of the two
            # best times compares a lucky round of one with a lucky round of the other.
            paired = float(np.median([t / t_lj for t, t_lj in zip(rounds[potential, mode], lj)]))
            records.append({"engine": "diffmd", "potential": potential, "mode": mode, "n_atoms": n,
                            "seconds": seconds, "ratio_to_lj": paired, "ratio_of_best_times": seconds / min(lj),
                            "round_seconds": rounds[potential, mode]})
            print(f"  diffmd  {potential:15s} {mode:8s} {seconds * 1e3:8.3f} ms  ×LJ {paired:.2f} "
                  f"(best/best {seconds / min(lj):.2f})", flush=True)
        del loops
        jax.clear_caches()
        if with_openmm:
            lj_openmm = None
            for potential in potentials:
                seconds = openmm_time(potential, config, repeats, target_seconds)
                lj_openmm = seconds if potential == "lj" else lj_openmm
                mine = next((r for r in records if r["potential"] == potential and r["mode"] == "forward"
                             and r["n_atoms"] == n), None)
                if mine is not None:
                    mine["openmm_seconds"] = seconds
                    mine["ratio_to_openmm"] = mine["seconds"] / seconds
                    mine["openmm_ratio_to_lj"] = seconds / (lj_openmm or seconds)
                print(f"  openmm  {potential:15s} forward  {seconds * 1e3:8.3f} ms"
                      + (f"  (diffmd / OpenMM {mine['ratio_to_openmm']:.2f})" if mine else ""), flush=True)
    return records


def table(records: list[dict]) -> str:
    sizes = sorted({r["n_atoms"] for r in records})
    lines = ["| N | potential | forward ms (×LJ) | reverse ms (×LJ) | jvp ms (×LJ) | OpenMM CPU ms | diffmd / OpenMM |",
             "|---|---|---|---|---|---|---|"]
    for n in sizes:
        for potential in dict.fromkeys(r["potential"] for r in records if r["n_atoms"] == n):
            cells = []
            for mode in MODES:
                r = next((r for r in records if r["potential"] == potential and r["mode"] == mode
                          and r["n_atoms"] == n), None)
                cells.append(f"{r['seconds'] * 1e3:.3f} ({r['ratio_to_lj']:.2f})" if r else "—")
            f = next((r for r in records if r["potential"] == potential and r["mode"] == "forward"
                      and r["n_atoms"] == n), None)
            if f and "openmm_seconds" in f:
                lines.append(f"| {n:,} | {potential} | {' | '.join(cells)} | {f['openmm_seconds'] * 1e3:.3f} | "
                             f"{f['ratio_to_openmm']:.2f} |")
            else:
                lines.append(f"| {n:,} | {potential} | {' | '.join(cells)} | — | — |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 2,000 only, shorter timings (< 3 minutes)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--potentials", nargs="+", default=list(POTENTIALS), choices=POTENTIALS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="target length of one timed loop")
    parser.add_argument("--no-openmm", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = args.sizes or ([2000] if args.quick else [2000, 32000])
    repeats = args.repeats or (5 if args.quick else 7)
    seconds = args.seconds or (0.1 if args.quick else 0.25)
    with_openmm = not args.no_openmm
    if with_openmm:
        try:
            import openmm  # noqa: F401
        except ImportError:
            print("openmm not installed: skipping its records", file=sys.stderr)
            with_openmm = False
    records = run(sizes, args.potentials, args.modes, repeats, seconds, with_openmm)
    print()
    print(table(records))
    if args.json:
        import jax

        from diffmd.io import write_json
        from diffmd.kernels import build

        write_json(args.json, {
            "benchmark": "pair_potentials",
            "settings": {"sizes": sizes, "dtype": "float32", "cutoff_nm": CUTOFF, "switch_nm": SWITCH,
                         "list_cutoff_nm": LIST_CUTOFF, "density_per_nm3": DENSITY, "repeats": repeats,
                         "compiled_kernels": build.available(), "openmm_threads": 2},
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "python": platform.python_version(), "jax": jax.__version__},
            "records": records,
        })
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
