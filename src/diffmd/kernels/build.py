"""Building and loading the compiled kernels (C++ through XLA's FFI, CPU only).

Two kinds of shared library, both compiled on first use into a cache directory
($DIFFMD_CACHE_DIR, default ~/.cache/diffmd) keyed by their source, the jax version, the
compiler and the CPU, and written atomically:

* the runtime (`_native/pair_ffi.cc`, `_native/cell_rows.cc`): the FFI handlers of the pair
  kernels and the compiled cell-list build, registered with XLA once per process;
* one generated pair kernel per fused pair function (`diffmd.kernels.codegen`): a small file
  without XLA headers (about a second to compile), loaded and registered with the runtime
  under its name.

The compiler is $CXX, else the clang in the `ziglang` package from PyPI (20–25 % faster
kernels than GCC 12 here, and a toolchain on machines without one), else c++ / g++ / clang++.
`python -m diffmd._native` builds the runtime ahead of time (scripts/setup.sh does).

Environment variable DIFFMD_NATIVE: "auto" (default: use the kernels if they build, else warn
once and use the pure-JAX ones), "off", or "require" (raise if they cannot be built).
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
import threading
import warnings
from pathlib import Path

import jax

NATIVE_DIR = Path(__file__).resolve().parent.parent / "_native"
RUNTIME_SOURCES = (NATIVE_DIR / "pair_ffi.cc", NATIVE_DIR / "cell_rows.cc")
HEADERS = tuple(NATIVE_DIR / name for name in ("common.h", "compact.h", "pair_rows.h", "vmath.h"))
# No -ffast-math: results must match the pure-JAX kernels (to rounding). Fused multiply-adds
# across statements (-ffp-contract=fast) do: the generated code has one statement per jaxpr
# equation, where clang's default contracts only within one, and the LJ loop went from 131 to
# 118 instructions (8 % faster). Gathers and wide vectors matter: the row loops gather neighbor
# coordinates, and GCC's generic tuning emulates gathers with scalar loads (2× slower here).
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast",
         "-std=c++17", "-shared", "-fPIC", "-w")
X86_FLAGS = ("-mprefer-vector-width=512",)
GCC_X86_FLAGS = ("-mtune-ctrl=use_gather",)
_FFI_TARGETS = {f"diffmd_pair_{kind}_{dt}": f"DiffmdPair{kind.capitalize()}{dt.upper()}"
                for kind in ("forward", "jvp", "vjp") for dt in ("f32", "f64")}
_FFI_TARGETS.update({f"diffmd_cell_rows_{dt}": f"DiffmdCellRows{dt.upper()}" for dt in ("f32", "f64")})


def mode() -> str:
    value = os.environ.get("DIFFMD_NATIVE", "auto").lower()
    if value not in ("auto", "off", "require"):
        raise ValueError(f"DIFFMD_NATIVE must be 'auto', 'off' or 'require', got {value!r}")
    return value


def compiler() -> list[str] | None:
    """The C++ compiler command, or None."""
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


@functools.cache
def _flags(command: tuple[str, ...]) -> tuple[str, ...]:
    flags = list(FLAGS)
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags += X86_FLAGS
        version = subprocess.run(list(command) + ["--version"], capture_output=True, text=True).stdout.lower()
        if "clang" not in version and ("gcc" in version or "free software" in version):
            flags += GCC_X86_FLAGS
    return tuple(flags)


def cache_dir() -> Path:
    if os.environ.get("DIFFMD_CACHE_DIR"):
        return Path(os.environ["DIFFMD_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diffmd"


def _plan(stem: str, sources: list[Path], include_xla: bool) -> tuple[Path, list[str]]:
    """(cached library path named after the hash of its inputs, the command that builds it)."""
    command = compiler()
    if command is None:
        raise RuntimeError("no C++ compiler found (set $CXX, install g++/clang++, or pip install ziglang)")
    # Generated kernels throw nothing: without exceptions no call in a row loop is an `invoke`.
    flags = _flags(tuple(command)) + (() if include_xla else ("-fno-exceptions",))
    includes = [f"-I{NATIVE_DIR}"] + ([f"-I{jax.ffi.include_dir()}"] if include_xla else [])
    key = hashlib.sha256()
    for part in (*(f.read_bytes() for f in sources), *(f.read_bytes() for f in HEADERS), jax.__version__.encode(),
                 " ".join(command + list(flags)).encode(), _cpu_model().encode(), platform.machine().encode()):
        key.update(part)
    path = cache_dir() / f"{stem}-{key.hexdigest()[:16]}.so"
    return path, command + list(flags) + includes + [str(s) for s in sources]


def _compile_all(plans: list[tuple[Path, list[str]]], verbose: bool = False) -> None:
    """Build the libraries of `plans` that are not cached yet, in parallel; each is written to a
    temporary file and renamed (atomic: concurrent builds never see a partial library)."""
    running = []
    for path, command in plans:
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(fd)
        if verbose:
            print("diffmd: " + " ".join(command + ["-o", tmp]), flush=True)
        process = subprocess.Popen(command + ["-o", tmp], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        running.append((path, tmp, command, process))
    failures = []
    for path, tmp, command, process in running:
        _, stderr = process.communicate()
        if process.returncode == 0:
            os.replace(tmp, path)
        else:
            failures.append(f"compiling {' '.join(Path(c).name for c in command if c.endswith('.cc'))} failed:\n"
                            f"{stderr[-2000:]}")
        if os.path.exists(tmp):
            os.unlink(tmp)
    if failures:
        raise RuntimeError("\n".join(failures))


def build(verbose: bool = False) -> Path:
    """Compile the runtime library if no cached build exists; returns its path.

    Raises RuntimeError (naming the cause) if no compiler is found or compilation fails.
    """
    path, command = _plan("runtime", list(RUNTIME_SOURCES), include_xla=True)
    _compile_all([(path, command)], verbose)
    return path


_LIBRARIES: list = []  # handles of loaded libraries: their code must stay mapped
_LOCK = threading.Lock()


@functools.cache
def _load_runtime() -> str | None:
    """Build, load and register the runtime; returns None on success, else the reason."""
    if mode() == "off":
        return "disabled by DIFFMD_NATIVE=off"
    try:
        library = ctypes.CDLL(str(build()))
    except (RuntimeError, OSError) as error:
        return str(error)
    for target, symbol in _FFI_TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
    library.diffmd_register_pair_kernel.restype = ctypes.c_int
    library.diffmd_register_pair_kernel.argtypes = [ctypes.c_char_p] + [ctypes.c_int32] * 5 + [ctypes.c_void_p] * 2
    _LIBRARIES.append(library)
    return None


def runtime():
    """The loaded runtime library (call `available()` first)."""
    return _LIBRARIES[0]


@functools.cache
def available() -> bool:
    """Whether the compiled kernels can be used on this machine (builds the runtime on first call)."""
    reason = _load_runtime()
    if reason is None:
        return True
    if mode() == "require":
        raise RuntimeError(f"diffmd: DIFFMD_NATIVE=require, but the compiled kernels are unavailable: {reason}")
    if mode() != "off":
        warnings.warn(f"diffmd: using the pure-JAX kernels ({reason})", RuntimeWarning, stacklevel=2)
    return False


def unavailable_reason() -> str | None:
    """Why the compiled kernels cannot be used (None if they can); for `diffmd info`."""
    return _load_runtime()


_REGISTERED: set[tuple[str, str]] = set()
_PART_IDS = {"forward": 0, "jvp": 1, "vjp": 2}


def ensure_pair_kernel(name: str, sources: dict[str, str], parts, dtype_bytes: int, dims: int, n_params: int,
                       n_globals: int) -> None:
    """Compile (or find in the cache), load and register the given parts of a generated pair
    kernel under `name`; parts not registered yet are compiled in parallel."""
    with _LOCK:
        missing = [part for part in parts if (name, part) not in _REGISTERED]
        if not missing:
            return
        directory = cache_dir() / "generated"
        directory.mkdir(parents=True, exist_ok=True)
        plans = {}
        for part in missing:
            source_path = directory / f"{name}_{part}.cc"
            if not source_path.exists() or source_path.read_text() != sources[part]:
                fd, tmp = tempfile.mkstemp(suffix=".cc", dir=directory)
                with os.fdopen(fd, "w") as file:
                    file.write(sources[part])
                os.replace(tmp, source_path)
            plans[part] = _plan(f"{name}_{part}", [source_path], include_xla=False)
        _compile_all(list(plans.values()))
        for part, (path, _) in plans.items():
            library = ctypes.CDLL(str(path))
            symbols = [f"{name}_{part}"] + ([f"{name}_jvp_uniform"] if part == "jvp" else [])
            functions = [ctypes.cast(getattr(library, symbol), ctypes.c_void_p) for symbol in symbols]
            functions += [None] * (2 - len(functions))
            status = runtime().diffmd_register_pair_kernel(name.encode(), _PART_IDS[part], dtype_bytes, dims,
                                                           n_params, n_globals, *functions)
            if status != 0:
                raise RuntimeError(f"diffmd: registering part {part!r} of the pair kernel {name} failed ({status})")
            _LIBRARIES.append(library)
            _REGISTERED.add((name, part))
