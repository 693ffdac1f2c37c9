"""`python -m diffmd._native`: build (or find) the compiled runtime and say where it is."""

import sys

from diffmd.kernels import build

try:
    path = build.build(verbose=True)
except RuntimeError as error:
    print(f"diffmd: compiled kernels not built ({error}); the pure-JAX kernels will be used", file=sys.stderr)
    sys.exit(1)
print(f"diffmd: {path}")
