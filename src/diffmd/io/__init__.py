"""Files: atomic writes of results (JSON, figures, arrays) — never a half-written file — and
reporters that write a run to trajectory and state files as it goes."""

from .files import atomic_path, atomic_write_bytes, save_figure, write_json
from .states import load_state, save_state
from .reporters import CheckpointReporter, ConsoleReporter, Reporter, StateDataReporter, TrajectoryReporter

__all__ = ["atomic_path", "atomic_write_bytes", "save_figure", "write_json", "CheckpointReporter", "ConsoleReporter", "Reporter", "save_state", "load_state", "StateDataReporter", "TrajectoryReporter"]
