"""How gradients through a run are obtained: the gradient mode and truncation, as values."""

from __future__ import annotations

from dataclasses import dataclass

GRAD_MODES = ("reverse", "checkpointed", "forward")


@dataclass(frozen=True)
class Checkpointed:
    """Checkpointed reverse mode with segments of `segment_length` steps (default ⌈√T⌉):
    `grad_mode=Checkpointed(50)`; `grad_mode="checkpointed"` is `Checkpointed()`."""

    segment_length: int | None = None

    def __post_init__(self):
        _positive("Checkpointed: segment_length", self.segment_length)


@dataclass(frozen=True)
class Truncate:
    """Truncated backpropagation through a run.

    Attributes:
        window: the state is cut from the gradient graph every `window` steps (after steps w,
            2w, …; forces are recomputed at the cut so they keep their parameter dependence),
            so the gradient of anything observed at step t flows back through steps
            t − (t mod w) … t only (through w steps at a cut point).
        last: gradients flow only through the last `last` steps.
    """

    window: int | None = None
    last: int | None = None

    def __post_init__(self):
        _positive("Truncate: window", self.window)
        _positive("Truncate: last", self.last)
        if self.window is None and self.last is None:
            raise ValueError("Truncate: give window=…, last=… or both")


def _positive(name, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def parse_grad_mode(grad_mode) -> tuple[str, int | None]:
    """(mode name, segment length) from a string or a `Checkpointed`."""
    if isinstance(grad_mode, Checkpointed):
        return "checkpointed", grad_mode.segment_length
    if grad_mode not in GRAD_MODES:
        raise ValueError(f"simulate: grad_mode must be one of {GRAD_MODES} or a Checkpointed(...), got {grad_mode!r}")
    return grad_mode, None


FORWARD_ONLY = ("simulate(grad_mode='forward') is for forward-mode derivatives (jax.jvp, jax.jacfwd); reverse "
                "mode (jax.grad, jax.vjp) through it is not possible: use grad_mode='reverse' or 'checkpointed'")
REVERSE_ONLY = ("jax.jvp (forward mode) through simulate(grad_mode='{mode}') is not possible: its reverse pass is "
                "custom-made. Use simulate(..., grad_mode='forward') for jax.jvp / jax.jacfwd")


def explained(error: Exception, mode: str) -> Exception | None:
    """The error to raise instead of JAX's when a transformation meets a mode that cannot
    serve it (raised while the run is traced, so inside `simulate`), else None."""
    message = str(error)
    if mode == "forward" and ("Linearization failed" in message or "Reverse-mode differentiation does not work"
                              in message or "Transpose rule" in message):
        return TypeError(FORWARD_ONLY)
    if mode != "forward" and "can't apply forward-mode autodiff (jvp) to a custom_vjp function" in message:
        return TypeError(REVERSE_ONLY.format(mode=mode))
    return None
