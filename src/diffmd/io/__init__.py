"""Files: atomic writes of results (JSON, figures, arrays) — never a half-written file."""

from .files import atomic_write_bytes, save_figure, write_json

__all__ = ["atomic_write_bytes", "save_figure", "write_json"]
