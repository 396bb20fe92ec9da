"""IR -> Python source -> compiled kernels, one per fusion group; one module per target.

`cpu` emits Numba kernels; `store` decides where their module files live (FUSEGRAD_CACHE_DIR, or
the platform's user cache directory) and loads them safely."""
