"""fusegrad.cuda: device queries, answered by numba.cuda (Numba's simulator counts as one GPU)."""
from .runtime import devices


def is_available():
    """True when numba.cuda finds a usable GPU (or its simulator is enabled)."""
    return devices.gpu_count() > 0


def device_count():
    return devices.gpu_count()


def current_device():
    return 0


def synchronize(device=None):
    """Wait until the kernels queued on the GPU have finished."""
    devices.synchronize()
