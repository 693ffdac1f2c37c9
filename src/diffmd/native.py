"""Compiled kernels (XLA FFI): the built-in Lennard-Jones interaction as fused C++ row sums, and
the cell-list neighbor build.

XLA's CPU backend splits the pure-JAX pair kernel into ~15 elementwise passes, each writing an
(N, K) array to memory, and its derivatives into ~30. The C++ kernels in `_native/lj_rows.cc`
do each pair once, in registers, and compute energy, forces and their derivatives in the same
pass: `forward` (E, F), `jvp` (E, F, Ė, Ḟ) for forward mode, and `vjp` (x̄, σ̄, ē, L̄) for
reverse mode. Their values equal the pure-JAX kernel's (tests/test_native.py), which stays
the reference and the fallback.

They cover `LennardJones` with Lorentz–Berthelot mixing, no force cap, and no, plain,
shifted-potential or switched (OpenMM's) cutoffs, in open or rectangular periodic boxes, 2-D or 3-D, float32 or
float64; every other interaction uses the pure-JAX kernel. `cell_rows` (`_native/cell_rows.cc`)
is `CellListNeighborFinder`'s build: the pure-JAX build's rows, in the same order, 20–30×
faster (it compares each atom with its 3^D cells' atoms directly instead of as dense blocks).

The library is compiled on first use with a C++ compiler ($CXX, else the clang in the `ziglang`
package from PyPI, else c++, g++ or clang++) into a cache directory ($DIFFMD_CACHE_DIR, default
~/.cache/diffmd), keyed by the source, the jax version, the compiler and the CPU; the file is
written atomically. `python -m diffmd._native` builds it ahead of time (scripts/setup.sh does). Environment variable
DIFFMD_NATIVE: "auto" (default: use it if it builds, else warn once and fall back), "off", or
"require" (raise if it cannot be built).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.util
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

NATIVE_DIR = Path(__file__).parent / "_native"
SOURCES = (NATIVE_DIR / "lj_rows.cc", NATIVE_DIR / "cell_rows.cc")
HEADERS = (NATIVE_DIR / "common.h",)
# No -ffast-math: results must match the pure-JAX kernel. Gathers and wide vectors matter: the
# row loops gather neighbor coordinates, and GCC's generic tuning emulates gathers with scalar
# loads (2× slower here).
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-std=c++17",
         "-shared", "-fPIC", "-w")
X86_FLAGS = ("-mprefer-vector-width=512",)
GCC_X86_FLAGS = ("-mtune-ctrl=use_gather",)
_SYMBOLS = {f"diffmd_lj_{kind}_{dt}": f"DiffmdLj{kind.capitalize()}{dt.upper()}"
            for kind in ("forward", "jvp", "vjp") for dt in ("f32", "f64")}
_SYMBOLS.update({f"diffmd_cell_rows_{dt}": f"DiffmdCellRows{dt.upper()}" for dt in ("f32", "f64")})
CUTOFF_KINDS = {"NoCutoff": 0, "PlainCutoff": 1, "ShiftedPotentialCutoff": 2, "SwitchedCutoff": 3}


def _mode() -> str:
    mode = os.environ.get("DIFFMD_NATIVE", "auto").lower()
    if mode not in ("auto", "off", "require"):
        raise ValueError(f"DIFFMD_NATIVE must be 'auto', 'off' or 'require', got {mode!r}")
    return mode


def _compiler() -> list[str] | None:
    """$CXX, else zig's clang (the `ziglang` wheel: 20–25 % faster kernels than GCC 12 here,
    and a toolchain on machines without one), else the system's c++ / g++ / clang++."""
    if os.environ.get("CXX"):
        return shlex.split(os.environ["CXX"])
    if importlib.util.find_spec("ziglang") is not None:
        return [sys.executable, "-m", "ziglang", "c++"]
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return [shutil.which(name)]
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _flags(compiler: list[str]) -> list[str]:
    flags = list(FLAGS)
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags += X86_FLAGS
        version = subprocess.run(compiler + ["--version"], capture_output=True, text=True).stdout
        if "clang" not in version.lower() and ("gcc" in version.lower() or "free software" in version.lower()):
            flags += GCC_X86_FLAGS
    return flags


def _cache_dir() -> Path:
    if os.environ.get("DIFFMD_CACHE_DIR"):
        return Path(os.environ["DIFFMD_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diffmd"


def build(verbose: bool = False) -> Path:
    """Compile the kernels if no cached build exists; returns the shared library's path.

    Raises RuntimeError (naming the cause) if no compiler is found or compilation fails.
    """
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler found (set $CXX, install g++/clang++, or pip install ziglang)")
    include = jax.ffi.include_dir()
    flags = _flags(compiler)
    key = hashlib.sha256()
    for part in (*(f.read_bytes() for f in SOURCES + HEADERS), jax.__version__.encode(), " ".join(compiler + flags).encode(),
                 _cpu_model().encode(), platform.machine().encode()):
        key.update(part)
    path = _cache_dir() / f"kernels-{key.hexdigest()[:16]}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    command = compiler + flags + [f"-I{include}", f"-I{NATIVE_DIR}", *map(str, SOURCES), "-o", tmp]
    if verbose:
        print("diffmd.native: " + " ".join(command), flush=True)
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {', '.join(f.name for f in SOURCES)} failed:\n{result.stderr[-2000:]}")
        os.replace(tmp, path)  # atomic: concurrent builds never see a partial library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@functools.cache
def _load() -> str | None:
    """Build, load and register the kernels; returns None on success, else the reason."""
    if _mode() == "off":
        return "disabled by DIFFMD_NATIVE=off"
    try:
        library = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError) as error:
        return str(error)
    for target, symbol in _SYMBOLS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    _LIBRARIES.append(library)  # keep the handle (and its code) alive
    return None


_LIBRARIES: list = []


@functools.cache
def available() -> bool:
    """Whether the compiled kernels can be used (builds them on first call)."""
    reason = _load()
    if reason is None:
        return True
    if _mode() == "require":
        raise RuntimeError(f"diffmd.native: DIFFMD_NATIVE=require, but the kernels are unavailable: {reason}")
    if _mode() != "off":
        warnings.warn(f"diffmd.native: using the pure-JAX pair kernel ({reason})", RuntimeWarning, stacklevel=2)
    return False


def lj_config(inter, boundary, coords) -> tuple | None:
    """Static kernel configuration (cutoff kind, cutoff and switch distances, periodic) if the
    compiled kernel covers this interaction, boundary and dtype, else None."""
    from .boundaries import NoBoundary, RectangularBoundary
    from .interactions.pairwise import LennardJones

    if (type(inter) is not LennardJones or inter.mixing != "lorentz-berthelot" or inter.force_cap is not None
            or type(inter.cutoff).__name__ not in CUTOFF_KINDS
            or not isinstance(boundary, (NoBoundary, RectangularBoundary))
            or coords.dtype not in (jnp.float32, jnp.float64) or coords.shape[-1] not in (2, 3)
            or jax.default_backend() != "cpu" or not available()):
        return None
    kind = CUTOFF_KINDS[type(inter.cutoff).__name__]
    cutoff = float(inter.cutoff.distance) if kind else 0.0
    switch = float(inter.cutoff.switch_distance) if kind == CUTOFF_KINDS["SwitchedCutoff"] else 0.0
    return kind, cutoff, switch, isinstance(boundary, RectangularBoundary)


def lj_rows(derivatives: str, config: tuple, coords, atoms, boundary, idx):
    """(energy, forces) of Lennard-Jones over dense rows with the compiled kernel for
    `derivatives` ("reverse": compiled VJP, "forward": fused JVP); `config` from `lj_config`.
    Per-atom σ and √ε (the square root taken here, so JAX differentiates it with its
    zero-safe rule) and the box sides are prepared for the kernel."""
    from .interactions.pairwise import _safe_sqrt

    dtype, n = coords.dtype, coords.shape[0]
    sigma = jnp.broadcast_to(atoms.sigma.astype(dtype), (n,))
    sqrt_eps = jnp.broadcast_to(_safe_sqrt(atoms.epsilon.astype(dtype)), (n,))
    sides = boundary.sides.astype(dtype) if config[-1] else jnp.ones((coords.shape[1],), dtype)
    kernel = lj_rows_reverse if derivatives == "reverse" else lj_rows_forward
    return kernel(config, coords, sigma, sqrt_eps, idx.astype(jnp.int32), sides)


def cell_rows_available(coords) -> bool:
    """Whether the compiled cell-list build covers these coordinates (CPU, 2-D/3-D, f32/f64)."""
    return (coords.dtype in (jnp.float32, jnp.float64) and coords.shape[-1] in (2, 3)
            and jax.default_backend() == "cpu" and available())


def cell_rows(wrapped, cell_of, sides, excluded_table, grid: tuple, cutoff: float, slots: int):
    """Neighbor rows from a cell grid with the compiled build (`_native/cell_rows.cc`): the rows
    of diffmd.neighbors' pure-JAX cell build, in the same order.

    wrapped: (N, D) coordinates wrapped into the box; cell_of: (N,) int32 linear cell index
    (row-major over `grid`, at least 3 cells per side); sides: (D,) box sides;
    excluded_table: (≥ N, X) int32 excluded partners per atom, padded with −1.
    Returns (idx (N, slots) int32 padded with N, most neighbors of any atom, most atoms in a cell).
    """
    n, dims = wrapped.shape
    suffix = "f32" if wrapped.dtype == jnp.float32 else "f64"
    outputs = (jax.ShapeDtypeStruct((n, slots), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32),
               jax.ShapeDtypeStruct((), jnp.int32))
    grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
    return jax.ffi.ffi_call(f"diffmd_cell_rows_{suffix}", outputs, vmap_method="sequential")(
        wrapped, cell_of.astype(jnp.int32), sides.astype(wrapped.dtype), excluded_table.astype(jnp.int32),
        grid0=np.int64(grid[0]), grid1=np.int64(grid[1]), grid2=np.int64(grid[2]), cutoff=np.float64(cutoff))


def _call(kind: str, config: tuple, outputs, *args):
    cutoff_kind, cutoff, switch, periodic = config
    suffix = "f32" if args[0].dtype == jnp.float32 else "f64"
    return jax.ffi.ffi_call(f"diffmd_lj_{kind}_{suffix}", outputs, vmap_method="sequential")(
        *args, cutoff_kind=np.int32(cutoff_kind), cutoff=np.float64(cutoff), switch_distance=np.float64(switch),
        periodic=np.int32(periodic))


def _forward(config, x, sigma, sqrt_eps, idx, sides):
    outputs = (jax.ShapeDtypeStruct((), x.dtype), jax.ShapeDtypeStruct(x.shape, x.dtype))
    return _call("forward", config, outputs, x, sigma, sqrt_eps, idx, sides)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def lj_rows_reverse(config, x, sigma, sqrt_eps, idx, sides):
    """(energy, forces (N, D)) of Lennard-Jones over dense rows, with the compiled reverse pass.

    x: (N, D); sigma, sqrt_eps: (N,) σ and √ε per atom; idx: (N, K) int32 rows padded with N;
    sides: (D,) box sides (ignored unless periodic). Not forward-differentiable (custom VJP).
    """
    return _forward(config, x, sigma, sqrt_eps, idx, sides)


def _reverse_fwd(config, x, sigma, sqrt_eps, idx, sides):
    return _forward(config, x, sigma, sqrt_eps, idx, sides), (x, sigma, sqrt_eps, idx, sides)


def _reverse_bwd(config, residuals, cotangents):
    x, sigma, sqrt_eps, idx, sides = residuals
    e_bar, f_bar = cotangents
    outputs = tuple(jax.ShapeDtypeStruct(a.shape, x.dtype) for a in (x, sigma, sqrt_eps, sides))
    x_bar, sigma_bar, eps_bar, sides_bar = _call("vjp", config, outputs, x, sigma, sqrt_eps, idx, sides,
                                                 jnp.asarray(e_bar, x.dtype), f_bar.astype(x.dtype))
    # Each pair is visited from both rows, each differentiating d fully: the box gets it twice.
    return x_bar, sigma_bar, eps_bar, None, 0.5 * sides_bar


lj_rows_reverse.defvjp(_reverse_fwd, _reverse_bwd)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def lj_rows_forward(config, x, sigma, sqrt_eps, idx, sides):
    """As `lj_rows_reverse`, with a compiled forward-mode rule (primal and tangent in one pass).
    Reverse mode through it is not available (JAX cannot transpose the fused call)."""
    return _forward(config, x, sigma, sqrt_eps, idx, sides)


@lj_rows_forward.defjvp
def _forward_jvp(config, primals, tangents):
    x, sigma, sqrt_eps, idx, sides = primals
    x_dot, sigma_dot, eps_dot, _, sides_dot = tangents
    scalar, vector = jax.ShapeDtypeStruct((), x.dtype), jax.ShapeDtypeStruct(x.shape, x.dtype)
    cast = lambda t: jnp.asarray(t, x.dtype)
    energy, forces, energy_dot, forces_dot = _call(
        "jvp", config, (scalar, vector, scalar, vector), x, sigma, sqrt_eps, idx, sides,
        cast(x_dot), cast(sigma_dot), cast(eps_dot), cast(sides_dot))
    return (energy, forces), (energy_dot, forces_dot)
