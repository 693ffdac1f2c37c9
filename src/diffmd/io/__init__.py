"""Files: atomic writes of results (JSON, figures, arrays) — never a half-written file — and
reporters that write a run to trajectory and state files as it goes."""

from .files import atomic_write_bytes, save_figure, write_json
from .reporters import ConsoleReporter, Reporter, StateDataReporter, TrajectoryReporter

__all__ = ["atomic_write_bytes", "save_figure", "write_json", "ConsoleReporter", "Reporter", "StateDataReporter", "TrajectoryReporter"]
