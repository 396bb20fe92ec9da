"""Tensor factories (tensor, zeros, randn, ...), the default dtype and device they use, and the global
random number generator."""
import math
import operator

import numpy as np

from ..ir import OPS, dtypes as D
from ..ir.dtypes import BY_NUMPY, copy_dtype, from_numpy_dtype
from .capture import active as capturing, plain, plain_data
from ..runtime import devices
from .tensor import Tensor

_new = Tensor._make


class _RNG:
    """The default generator: NumPy's PCG64, reseeded by manual_seed."""

    def __init__(self):
        self.initial = int(np.random.SeedSequence().entropy % (2 ** 63))
        self.gen = np.random.Generator(np.random.PCG64(self.initial))

    def seed(self, value):
        _reseeding()
        self.initial = int(value)
        self.gen = np.random.Generator(np.random.PCG64(self.initial))
        return self.gen


def _reseeding():
    trace = capturing()
    if trace is not None:   # a replay draws on from the generator's state at its own call
        trace.break_("it seeds or sets the state of the random generator inside the call, which a replay "
                     "would not do")


default_generator = _RNG()


def manual_seed(seed):
    return default_generator.seed(seed)


def seed():
    return manual_seed(int(np.random.SeedSequence().entropy % (2 ** 63))) and default_generator.initial


def initial_seed():
    return default_generator.initial


def get_rng_state():
    return default_generator.gen.bit_generator.state


def set_rng_state(state):
    _reseeding()
    default_generator.gen.bit_generator.state = state


def set_default_dtype(d):
    """The dtype of floating-point tensors made without one (factories, Python floats)."""
    if not isinstance(d, D.DType):
        raise TypeError("invalid dtype object: only floating-point types are supported as the default type")
    if not d.is_floating_point:
        raise TypeError("only floating-point types are supported as the default type")
    D.default_float = d


def get_default_dtype():
    return D.default_float


_default_device = devices.CPU   # where factories put tensors made without device=


def set_default_device(device):
    global _default_device
    _default_device = devices.canonical(device)


def get_default_device():
    return _default_device


def _finish(data, requires_grad, device=None):
    """The tensor of host array `data`, on `device` (default: the default device)."""
    where = _default_device if device is None else devices.canonical(device)
    t = _new(data) if where is devices.CPU else _new(devices.to_device(data, where), where)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _infer_dtype(data):
    """PyTorch's dtype for nested Python data: bool < int64 < default float (also for no data)."""
    kind, seen = 0, False
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, Tensor):
            seen = True
            kind = max(kind, item.dtype.category)
        elif isinstance(item, (bool, np.bool_)):
            seen = True
        elif isinstance(item, (int, np.integer)):
            seen = True
            kind = max(kind, 1)
        elif item is None:   # NumPy would make it NaN
            raise RuntimeError("Could not infer dtype of NoneType")
        else:
            seen = True
            kind = 2
    return (D.bool_, D.int64, D.default_float)[kind] if seen else D.default_float


def _copied(source, out):
    """`out`, a copy of the host array `source` (maybe cast), recorded while capturing: a replay
    copies the value `source` holds at its own call (a tensor's, or a NumPy array's)."""
    trace = capturing()
    if trace is not None and type(source) is np.ndarray:
        if out.dtype == source.dtype:
            trace.record(OPS["copy"], (source,), None, out)
        else:
            trace.record(OPS["cast"], (source,), {"dtype": from_numpy_dtype(out.dtype)}, out)
    return out


def _reads_tensors(tensors):
    """tensor(...) of tensors copies their values outside the recorded ops: a capture of a call
    that does so with values computed in it or passed to it cannot replay (they would be stale)."""
    trace = capturing()
    if trace is not None and any(id(t._data) in trace.internal or id(t._data) in trace.sources for t in tensors):
        trace.break_("it copies tensor values with tensor(...), outside the recorded ops (x.clone().detach() "
                     "or torch.stack of the tensors is recorded)")


def _to_array(data, dtype):
    if isinstance(data, Tensor):
        if type(data._data) is not np.ndarray:
            _reads_tensors([data])
        return _copied(data._data, np.array(devices.to_host(data._data), dtype=dtype.np if dtype else None))
    if isinstance(data, np.ndarray):
        return _copied(data, np.array(data, dtype=(dtype.np if dtype else copy_dtype(data.dtype).np)))
    if isinstance(data, np.generic):
        return np.array(data, dtype=(dtype or copy_dtype(data.dtype)).np)
    if isinstance(data, (list, tuple)) and any(isinstance(x, Tensor) for x in _flat(data)):
        _reads_tensors([x for x in _flat(data) if isinstance(x, Tensor)])
        data = _unwrap(data)
    data = plain_data(data)
    dtype = dtype or _infer_dtype(data)
    try:
        return np.array(data, dtype=dtype.np)
    except (ValueError, TypeError) as e:
        raise TypeError(f"tensor(): could not build a tensor from {type(data).__name__}: {e}") from None


def _flat(data):
    for x in data:
        if isinstance(x, (list, tuple)):
            yield from _flat(x)
        else:
            yield x


def _unwrap(data):
    if isinstance(data, Tensor):
        return data._data.tolist()
    if isinstance(data, (list, tuple)):
        return [_unwrap(x) for x in data]
    return data


def tensor(data, *, dtype=None, device=None, requires_grad=False, pin_memory=False):
    """A new tensor holding a copy of `data` (nested lists, scalars, arrays or tensors); a tensor's
    copy stays on its device unless `device` says otherwise."""
    if device is None and isinstance(data, Tensor):
        device = data._device
    return _finish(_to_array(data, dtype), requires_grad, device)


def as_tensor(data, dtype=None, device=None):
    if isinstance(data, Tensor):
        return data.to(device=device, dtype=dtype)
    if isinstance(data, np.ndarray) and data.dtype in BY_NUMPY and (dtype is None or dtype.np == data.dtype):
        return _finish(data, False, device)   # shares memory, as torch.as_tensor does
    return tensor(data, dtype=dtype, device=device)


asarray = as_tensor


def from_numpy(ndarray):
    """A tensor sharing memory with `ndarray` (no copy)."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(ndarray).__name__})")
    from_numpy_dtype(ndarray.dtype)
    return _new(ndarray)


def _size(size, name):
    """A shape from `*size` or `(size,)`: integers only (ones(2.5) is an error, not ones(2))."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for i, s in enumerate(size):
        if isinstance(s, bool) or not hasattr(s, "__index__"):
            raise TypeError(f"{name}(): argument 'size' must be tuple of ints, but found element of type "
                            f"{type(s).__name__} at pos {i}")
    size = tuple(operator.index(s) for s in size)
    for s in size:
        if s < 0:
            raise RuntimeError(f"Trying to create tensor with negative dimension {s}: {list(size)}")
    return size


def _filled(value_fn, size, dtype, device, requires_grad):
    dtype = dtype or D.default_float
    return _finish(value_fn(_size(size, value_fn.__name__), dtype.np), requires_grad, device)


def zeros(*size, out=None, dtype=None, device=None, requires_grad=False):
    return _filled(np.zeros, size, dtype, device, requires_grad)


def ones(*size, out=None, dtype=None, device=None, requires_grad=False):
    return _filled(np.ones, size, dtype, device, requires_grad)


def empty(*size, out=None, dtype=None, device=None, requires_grad=False, memory_format=None):
    return _filled(np.empty, size, dtype, device, requires_grad)


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False):
    fill_value = plain(fill_value)
    if dtype is None:
        dtype = D.scalar_dtype(fill_value.item() if isinstance(fill_value, Tensor) else fill_value)
    return _finish(np.full(_size((size,), "full"), fill_value, dtype.np), requires_grad, device)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False):
    return _finish(np.eye(n, n if m is None else m, dtype=(dtype or D.default_float).np), requires_grad, device)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    values = [v.item() if isinstance(v, Tensor) else plain(v) for v in (start, end, step)]
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    if dtype is None:
        dtype = D.default_float if any(isinstance(v, float) for v in values) else D.int64
    start, end, step = values
    n = max(int(math.ceil((end - start) / step)), 0)
    data = (start + np.arange(n, dtype=np.float64) * step).astype(dtype.np)
    return _finish(data, requires_grad, device)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False):
    """PyTorch's values, not NumPy's: the step is computed in the result dtype and the second half
    counts back from `end` (each value one fused multiply-add, emulated in wider precision)."""
    dtype = dtype or D.default_float
    steps = int(steps)
    if steps < 0:
        raise RuntimeError("linspace(): number of steps must be non-negative")
    kind = dtype.np if dtype.category == 2 else np.float64
    first, last = kind.type(plain(start)), kind.type(plain(end))
    step = (last - first) / kind.type(max(steps - 1, 1))
    wide = np.float64 if kind == np.float32 else np.longdouble   # room for an unrounded product
    i = np.arange(steps, dtype=wide)
    values = np.where(i < max(steps // 2, 1), wide(first) + wide(step) * i, wide(last) - wide(step) * (steps - 1 - i))
    return _finish(values.astype(kind).astype(dtype.np), requires_grad, device)


def logspace(start, end, steps, base=10.0, *, dtype=None, device=None, requires_grad=False):
    dtype = dtype or D.default_float
    start, end, base = plain(start), plain(end), plain(base)
    return _finish(np.logspace(start, end, int(steps), base=base).astype(dtype.np), requires_grad, device)


def _generator(generator):
    return generator if generator is not None else default_generator.gen


def uniform_sample(shape):
    """A float64 draw in [0, 1) from the default generator, as `rand` makes (and replays redo)."""
    return default_generator.gen.random(shape, dtype=np.float64)


def normal_sample(shape):
    return default_generator.gen.standard_normal(shape, dtype=np.float64)


def _drawn(sample, generator, size, dtype, requires_grad, device):
    dtype = dtype or D.default_float
    shape = _size(size, "rand" if sample is uniform_sample else "randn")
    if generator is not None:
        method = generator.random if sample is uniform_sample else generator.standard_normal
        return _finish(method(shape, dtype=np.float64).astype(dtype.np), requires_grad, device)
    data = OPS["random"].impl(sample=sample, shape=shape, dtype=dtype)
    trace = capturing()
    if trace is not None:
        trace.record_random(sample, shape, dtype, data, default_generator.gen.bit_generator.state)
    return _finish(data, requires_grad, device)


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False):
    return _drawn(uniform_sample, generator, size, dtype, requires_grad, device)


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False):
    return _drawn(normal_sample, generator, size, dtype, requires_grad, device)


def randint(low=0, high=None, size=None, *, generator=None, dtype=None, device=None, requires_grad=False):
    if size is None:          # randint(high, size)
        low, high, size = 0, low, high
    dtype = dtype or D.int64
    data = _generator(generator).integers(low, high, _size((size,), "randint")).astype(dtype.np)
    return _finish(data, requires_grad, device)


def randperm(n, *, generator=None, dtype=None, device=None, requires_grad=False):
    n, = _size((n,), "randperm")
    return _finish(_generator(generator).permutation(n).astype((dtype or D.int64).np), requires_grad, device)


def normal(mean, std, size=None, *, generator=None):
    mean, std = plain(mean), plain(std)
    if size is not None:
        return _finish(_generator(generator).normal(mean, std, _size((size,), "normal")).astype(D.default_float.np),
                       False)
    m = mean._data if isinstance(mean, Tensor) else mean
    s = std._data if isinstance(std, Tensor) else std
    like = mean if isinstance(mean, Tensor) else std
    return _finish(_generator(generator).normal(devices.to_host(m), devices.to_host(s)).astype(like._data.dtype),
                   False, like._device)


def _like(fn):
    def like(input, *, dtype=None, device=None, requires_grad=False, memory_format=None, **kwargs):
        return fn(*input._data.shape, dtype=dtype or input.dtype, device=device or input._device,
                  requires_grad=requires_grad, **kwargs)
    like.__name__ = fn.__name__ + "_like"
    return like


zeros_like, ones_like, empty_like, rand_like, randn_like = (
    _like(f) for f in (zeros, ones, empty, rand, randn))


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad=False, memory_format=None):
    return full(input._data.shape, fill_value, dtype=dtype or input.dtype, device=device or input._device,
                requires_grad=requires_grad)


def randint_like(input, low=0, high=None, *, dtype=None, device=None, requires_grad=False):
    return randint(low, high, input._data.shape, dtype=dtype or input.dtype, device=device or input._device)


# In-place random fills (nn.init builds on these): in-place rules as for fill_.


def _fill_random(target, values, name):
    from .functions import _overwrite
    return _overwrite(target, values, name, "RandomBackward0")


def uniform_(self, a=0.0, b=1.0, *, generator=None):
    return _fill_random(self, _generator(generator).uniform(a, b, self._data.shape), "uniform_")


def normal_(self, mean=0.0, std=1.0, *, generator=None):
    return _fill_random(self, _generator(generator).normal(mean, std, self._data.shape), "normal_")


def bernoulli_(self, p=0.5, *, generator=None):
    return _fill_random(self, _generator(generator).random(self._data.shape) < p, "bernoulli_")


def random_(self, low=0, high=None, *, generator=None):
    return _fill_random(self, _generator(generator).integers(low, high, self._data.shape), "random_")
