"""`python -m diffmd._native`: build (or find) the compiled kernels and say where they are."""

import sys

from diffmd import native

try:
    path = native.build(verbose=True)
except RuntimeError as error:
    print(f"diffmd.native: not built ({error}); the pure-JAX kernel will be used", file=sys.stderr)
    sys.exit(1)
print(f"diffmd.native: {path}")
