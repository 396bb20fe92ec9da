"""Devices: `device("cpu")` and `device("cuda:N")`, and the one place that decides which array
module holds a device's storage.

"cpu" storage is NumPy. "cuda" storage is CuPy on a real GPU (the optional extra
`fusegrad[cuda]`): op impls are NumPy calls, and CuPy arrays implement NumPy's dispatch protocols
(`__array_ufunc__`, `__array_function__`), so the same impls run on the GPU. Under Numba's CUDA
simulator (NUMBA_ENABLE_CUDASIM=1, set before numba is imported) "cuda" storage is host NumPy
arrays and only the tensor's device tag says cuda: the whole GPU path, fused kernels included,
then runs on a CPU machine. The CuPy branches here are only exercised on a real GPU."""
import os

import numpy as np


class device:
    """A device: "cpu" or "cuda[:index]"."""

    def __init__(self, spec, index=None):
        if isinstance(spec, device):
            spec, index = spec.type, spec.index
        kind, _, number = str(spec).partition(":")
        if kind not in ("cpu", "cuda"):
            raise RuntimeError(f"Expected one of cpu, cuda device type at start of device string: {spec}")
        self.type = kind
        self.index = int(number) if number else index

    def __eq__(self, other):
        other = device(other) if isinstance(other, str) else other
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{index})"


CPU = device("cpu")
_CUDA = {}   # index -> the one device object tensors on that GPU carry


def simulated():
    """Whether "cuda" is Numba's CUDA simulator (host arrays, kernels run by Python threads)."""
    import sys
    if "numba" in sys.modules:
        from numba.core import config
        return bool(config.ENABLE_CUDASIM)
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def gpu_count():
    """How many GPUs numba.cuda sees (the simulator counts as one)."""
    try:
        from numba import cuda
        return len(cuda.gpus) if cuda.is_available() else 0
    except Exception:   # numba's CUDA support missing, or no driver: no GPU
        return 0


def canonical(spec):
    """The device a tensor made for `spec` carries: CPU, or cuda with its index ("cuda" means
    cuda:0, as in PyTorch). Refuses a GPU that is not there."""
    if spec is None or spec is CPU:
        return CPU
    d = spec if isinstance(spec, device) else device(spec)
    if d.type == "cpu":
        return CPU
    index = 0 if d.index is None else d.index
    found = _CUDA.get(index)
    if found is None:
        count = gpu_count()
        if count == 0:
            raise RuntimeError("No CUDA GPUs are available (numba.cuda finds no GPU; set "
                               "NUMBA_ENABLE_CUDASIM=1 before importing fusegrad to run the 'cuda' device "
                               "in Numba's CUDA simulator)")
        if index >= count:
            raise RuntimeError(f"CUDA error: invalid device ordinal (cuda:{index} asked for, "
                               f"{count} GPU{'s' if count > 1 else ''} present)")
        found = _CUDA[index] = device("cuda", index)
    return found


def array_module(d):
    """The module whose arrays hold storage on device `d` (numpy or cupy)."""
    if d is CPU or simulated():
        return np
    try:
        import cupy
    except ImportError:
        raise RuntimeError("cuda tensors on a real GPU keep their storage in CuPy arrays: install the "
                           "GPU extra, `pip install fusegrad[cuda]`") from None
    return cupy


def to_device(array, d):
    """`array` as storage of device `d`: the same array when it already is, else a copy."""
    xp = array_module(d)
    if xp is np:
        return to_host(array)
    return xp.asarray(array)


def to_host(value):
    """The values of `value` on the host: a device array is copied to a NumPy array; NumPy arrays
    and Python numbers are returned as they are."""
    if isinstance(value, np.ndarray) or not hasattr(value, "__cuda_array_interface__"):
        return value
    return value.get()


def synchronize():
    """Wait for the kernels queued on the GPU (nothing to wait for in the simulator)."""
    if gpu_count() and not simulated():
        from numba import cuda
        cuda.synchronize()
