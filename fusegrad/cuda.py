"""fusegrad.cuda: device queries. Tensors live on the CPU until the numba.cuda backend lands."""


def is_available():
    """True when numba.cuda finds a usable GPU (or its simulator is enabled)."""
    try:
        from numba import cuda
        return bool(cuda.is_available())
    except Exception:   # numba missing or no driver: no GPU
        return False


def device_count():
    if not is_available():
        return 0
    from numba import cuda
    return len(cuda.gpus)


def synchronize(device=None):
    """Nothing to wait for: no kernels run asynchronously yet."""
