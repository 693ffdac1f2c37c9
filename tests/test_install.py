"""Installation: the core runs without optional packages or a C++ compiler, and says so clearly."""

import importlib
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import diffmd as md
from diffmd import _optional

ROOT = Path(__file__).resolve().parents[1]

# A fresh process in which no compiler can be found: ziglang hidden, PATH empty, an empty cache.
NO_COMPILER = textwrap.dedent("""
    import importlib.util, sys
    _find = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: None if name == "ziglang" else _find(name, *a)
    import jax, jax.numpy as jnp
    import diffmd as md
    from diffmd.kernels import build
    box = md.CubicBoundary(3.0)
    coords = md.random_coords(jax.random.PRNGKey(0), 40, box, min_distance=0.45)
    system = md.System(atoms=md.Atoms.uniform(40, mass=10.0, sigma=0.3, epsilon=0.2), coords=coords,
                       velocities=jnp.zeros_like(coords), boundary=box, units=md.REDUCED_UNITS,
                       pairwise_inters=[md.LennardJones(use_neighbors=True, cutoff=md.ShiftedPotentialCutoff(1.0))],
                       neighbor_finder=md.DistanceNeighborFinder(cutoff=1.5, every=10))
    final = md.simulate(system, md.VelocityVerlet(0.01), 20).state.coords
    print("kernels", build.available(), "finite", bool(jnp.isfinite(final).all()))
""")


def test_without_a_compiler_the_pure_jax_kernels_run_with_one_warning(tmp_path):
    env = {"PATH": str(tmp_path / "no-bin"), "HOME": str(tmp_path), "DIFFMD_CACHE_DIR": str(tmp_path / "cache"),
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", NO_COMPILER], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "kernels False finite True" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warnings) == 1, result.stderr
    assert "using the pure-JAX kernels (no C++ compiler found" in warnings[0]


@pytest.mark.parametrize("module, call, extra", [
    ("openmm.app", lambda: md.ForceField("amber14-all.xml"), "openmm"),
    ("mdtraj.formats", lambda: md.io.reporters._mdtraj_formats(), "io"),
])
def test_a_missing_optional_package_names_its_extra(monkeypatch, module, call, extra):
    real = importlib.import_module

    def without(name, *args):
        if name.split(".")[0] == module.split(".")[0]:
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(_optional.importlib, "import_module", without)
    with pytest.raises(ImportError, match=rf'pip install "diffmd\[{extra}\]"'):
        call()


@pytest.mark.slow  # builds a wheel in an isolated environment (~20 s)
def test_the_wheel_holds_the_kernel_sources_and_the_command(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(tmp_path), str(ROOT)], check=True, env={**os.environ, "PIP_NO_INPUT": "1"})
    wheel, = tmp_path.glob("diffmd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"diffmd/_native/pair_ffi.cc", "diffmd/_native/cell_rows.cc", "diffmd/_native/common.h"} <= set(names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "diffmd = diffmd.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
