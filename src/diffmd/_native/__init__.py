"""C++ sources of the compiled kernels (see `diffmd.kernels`)."""
