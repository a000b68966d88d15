"""Stage 4: printing the kernel IR as Numba source (CPU) or numba.cuda source (CUDA)."""
