"""The `diffmd` command: `simulate` writes a trajectory and a state CSV with status lines,
`info` names the kernels, devices and versions, errors are one line; installed as a script."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

from diffmd.cli import main
from test_forcefield import alanine_dipeptide
from test_openmm_systems import app, unit

mdtraj = pytest.importorskip("mdtraj")


def _peptide_pdb(tmp_path):
    topology, positions = alanine_dipeptide()
    structure = tmp_path / "peptide.pdb"
    with open(structure, "w") as handle:
        app.PDBFile.writeFile(topology, np.asarray(positions) * unit.nanometer, handle)  # (plain numbers would be Å)
    return topology, structure


def _simulate_100_steps(tmp_path, structure):
    out, state = tmp_path / "run.xtc", tmp_path / "state.csv"
    code = main(["simulate", str(structure), "--forcefield", "amber14-all.xml", "--steps", "100", "--dt", "0.002",
                 "--temperature", "300", "--out", str(out), "--report-every", "25", "--state", str(state),
                 "--checkpoint", str(tmp_path / "run.chk")])
    assert code == 0
    return out, state


def test_simulate_writes_a_trajectory_a_state_csv_and_status_lines(tmp_path, capsys):
    topology, structure = _peptide_pdb(tmp_path)
    out, state = _simulate_100_steps(tmp_path, structure)
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "done: 100 steps" in text and "ns/day" in text
    assert sum(line.split()[:1] == ["75"] for line in text.splitlines()) == 1  # the status line of step 75
    trajectory = mdtraj.load(str(out), top=str(structure))
    assert trajectory.n_frames == 4 and trajectory.n_atoms == topology.getNumAtoms()
    with open(state) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [25, 50, 75, 100]
    assert all(100.0 < float(r["temperature"]) < 600.0 for r in rows)
    import zipfile

    assert "meta.json" in zipfile.ZipFile(tmp_path / "run.chk").namelist()


@pytest.mark.slow  # ~8 s more than the run above; the default suite keeps its budget
def test_simulate_resumes_from_a_checkpoint(tmp_path, capsys):
    _, structure = _peptide_pdb(tmp_path)
    _simulate_100_steps(tmp_path, structure)
    capsys.readouterr()
    code = main(["simulate", str(structure), "--forcefield", "amber14-all.xml", "--steps", "50", "--out",
                 str(tmp_path / "more.dcd"), "--report-every", "25", "--resume", str(tmp_path / "run.chk")])
    assert code == 0 and "resuming from" in capsys.readouterr().out
    assert mdtraj.load(str(tmp_path / "more.dcd"), top=str(structure)).n_frames == 2


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "missing.pdb"), "--steps", "10", "--out", str(tmp_path / "x.dcd")]) == 1
    assert main(["example", "no_such_example"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert lines == [f"diffmd: error: no such structure file: {tmp_path / 'missing.pdb'}",
                     lines[1]] and lines[1].startswith("diffmd: error: no example named 'no_such_example'; available:")


def test_info_and_the_installed_script(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "compiled pair kernels:" in text and "jax " in text and "devices:" in text
    script = os.path.join(os.path.dirname(sys.executable), "diffmd")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=True)
    assert "simulate" in result.stdout and "example" in result.stdout and "info" in result.stdout


def test_plot_and_animate_commands(tmp_path, capsys):
    state = tmp_path / "state.csv"
    state.write_text("step,time_ps,potential_energy,kinetic_energy,total_energy,temperature,volume,speed_ns_per_day\n"
                     "10,0.02,-100,50,-50,300,27.0,12\n20,0.04,-101,51,-50,301,27.1,12\n")
    assert main(["plot", str(state), "--out", str(tmp_path / "state.png")]) == 0
    assert (tmp_path / "state.png").stat().st_size > 0 and "wrote" in capsys.readouterr().out
    topology = mdtraj.Topology()
    residue = topology.add_residue("HOH", topology.add_chain())
    atoms = [topology.add_atom(name, mdtraj.element.get_by_symbol(name[0]), residue) for name in ("O", "H1", "H2")]
    topology.add_bond(atoms[0], atoms[1])
    topology.add_bond(atoms[0], atoms[2])
    water = np.array([[0.0, 0.0, 0.0], [0.0957, 0.0, 0.0], [-0.024, 0.0927, 0.0]], np.float32)
    frames = water + np.array([0.98, 0.5, 0.5], np.float32) + np.linspace(0, 0.05, 3, dtype=np.float32)[:, None, None]
    mdtraj.Trajectory(frames, topology, unitcell_lengths=np.full((3, 3), 1.0),
                      unitcell_angles=np.full((3, 3), 90.0)).save_pdb(str(tmp_path / "water.pdb"))
    assert main(["animate", str(tmp_path / "water.pdb"), "--out", str(tmp_path / "water.gif")]) == 0
    assert "3 frames, 3 atoms" in capsys.readouterr().out
    from PIL import Image

    with Image.open(tmp_path / "water.gif") as image:
        assert image.n_frames == 3
    assert main(["plot", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x.png")]) == 1
    assert main(["animate", str(tmp_path / "water.pdb"), "--out", str(tmp_path / "water.avi")]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"diffmd: error: no such state CSV: {tmp_path / 'missing.csv'}",
        "diffmd: error: animate: water.avi: unknown suffix '.avi'; use .gif or .mp4"]
