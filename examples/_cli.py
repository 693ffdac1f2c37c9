"""Shared command line of the examples: `--seed S --out DIR`, and summary.json output.

Every example is run as `python examples/<name>.py --seed S --out DIR [options]`; it prints
per-epoch progress, writes its plots into DIR and finishes by writing DIR/summary.json
(atomically, through `diffmd.io.write_json`, so an interrupted run never leaves a truncated file).

Usage inside an example::

    from _cli import example_parser, write_summary

    parser = example_parser(__doc__, default_out="results/my_example")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    ...
    write_summary(args.out, {"seed": args.seed, ...})

When an example is run as a script its folder is on `sys.path`, so `import _cli` works; tests
put `examples/` on `sys.path` before importing an example module.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from diffmd.io import write_json


def example_parser(doc: str | None, default_out: str) -> argparse.ArgumentParser:
    """An ArgumentParser with `--seed` (int, default 0) and `--out` (a folder, created on demand).

    Args:
        doc: the example's module docstring; its first line becomes the description.
        default_out: folder used when `--out` is not given (e.g. "results/nn_bond").
    """
    description = (doc or "").strip().splitlines()[0] if doc else None
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, default=Path(default_out),
                        help=f"output folder for summary.json and plots (default {default_out})")
    return parser


def write_summary(out, summary: dict) -> Path:
    """Write `summary` (dicts, lists, numbers, numpy/JAX arrays) to OUT/summary.json atomically."""
    return write_json(Path(out) / "summary.json", summary)


__all__ = ["example_parser", "write_summary"]
