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
# No -ffast-math: results must match the pure-JAX kernels. Gathers and wide vectors matter: the
# row loops gather neighbor coordinates, and GCC's generic tuning emulates gathers with scalar
# loads (2× slower here).
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-std=c++17",
         "-shared", "-fPIC", "-w")
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


def _compile(stem: str, sources: list[Path], extra_parts: tuple[bytes, ...], include_xla: bool,
             verbose: bool = False) -> Path:
    """Compile `sources` into a cached shared library named after their hash; returns its path."""
    command = compiler()
    if command is None:
        raise RuntimeError("no C++ compiler found (set $CXX, install g++/clang++, or pip install ziglang)")
    flags = _flags(tuple(command))
    includes = [f"-I{NATIVE_DIR}"] + ([f"-I{jax.ffi.include_dir()}"] if include_xla else [])
    key = hashlib.sha256()
    for part in (*(f.read_bytes() for f in sources), *(f.read_bytes() for f in HEADERS), *extra_parts,
                 jax.__version__.encode(), " ".join(command + list(flags)).encode(), _cpu_model().encode(),
                 platform.machine().encode()):
        key.update(part)
    path = cache_dir() / f"{stem}-{key.hexdigest()[:16]}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    cmd = command + list(flags) + includes + [str(s) for s in sources] + ["-o", tmp]
    if verbose:
        print("diffmd: " + " ".join(cmd), flush=True)
    try:
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {', '.join(s.name for s in sources)} failed:\n{result.stderr[-2000:]}")
        os.replace(tmp, path)  # atomic: concurrent builds never see a partial library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def build(verbose: bool = False) -> Path:
    """Compile the runtime library if no cached build exists; returns its path.

    Raises RuntimeError (naming the cause) if no compiler is found or compilation fails.
    """
    return _compile("runtime", list(RUNTIME_SOURCES), (), include_xla=True, verbose=verbose)


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
    library.diffmd_register_pair_kernel.argtypes = [ctypes.c_char_p] + [ctypes.c_int32] * 4 + [ctypes.c_void_p] * 4
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


_REGISTERED: dict[str, bool] = {}


def register_pair_kernel(name: str, source: str, dtype_bytes: int, dims: int, n_params: int, n_globals: int) -> None:
    """Compile (or find in the cache), load and register a generated pair kernel under `name`."""
    with _LOCK:
        if name in _REGISTERED:
            return
        directory = cache_dir() / "generated"
        directory.mkdir(parents=True, exist_ok=True)
        source_path = directory / f"{name}.cc"
        if not source_path.exists() or source_path.read_text() != source:
            fd, tmp = tempfile.mkstemp(suffix=".cc", dir=directory)
            with os.fdopen(fd, "w") as file:
                file.write(source)
            os.replace(tmp, source_path)
        path = _compile(name, [source_path], (), include_xla=False)
        library = ctypes.CDLL(str(path))
        functions = [ctypes.cast(getattr(library, f"{name}_{kind}"), ctypes.c_void_p)
                     for kind in ("forward", "jvp", "jvp_uniform", "vjp")]
        status = runtime().diffmd_register_pair_kernel(name.encode(), dtype_bytes, dims, n_params, n_globals,
                                                       *functions)
        if status != 0:
            raise RuntimeError(f"diffmd: registering the pair kernel {name} failed")
        _LIBRARIES.append(library)
        _REGISTERED[name] = True
