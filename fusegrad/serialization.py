"""fusegrad.save / fusegrad.load in PyTorch's checkpoint format, without PyTorch.

The format is the zip archive that `torch.save` writes (since PyTorch 1.6): `<prefix>/data.pkl`, a
protocol-2 pickle whose tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
...)` calls and whose storages are persistent ids naming `<prefix>/data/<key>` records of raw
little-endian bytes. So `fusegrad.load` reads `.pt`/`.pth` files that PyTorch wrote (state dicts,
optimizer state dicts, plain containers of tensors), and PyTorch reads what `fusegrad.save` writes.

Loading never runs code from the file: the unpickler resolves only the few names a tensor checkpoint
needs (the tensor and parameter rebuilders, storage types, OrderedDict) to fusegrad's own functions,
and refuses every other global with pickle.UnpicklingError."""
import collections
import io
import os
import pickle
import zipfile

import numpy as np

from .ir.dtypes import from_numpy_dtype
from .nn.parameter import Parameter
from .runtime import devices
from .tracer import Tensor

# torch.<Name>Storage <-> NumPy dtype: the storage types a checkpoint's persistent ids name.
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_STORAGE_NAMES = {np.dtype(dt): name for name, dt in STORAGE_DTYPES.items()}


def _refusal(what):
    return pickle.UnpicklingError(
        f"fusegrad.load refuses {what}: a checkpoint may hold only tensors, containers (dict, list, tuple, "
        "OrderedDict, set) and plain values (numbers, strings, bytes, None); anything else would run code "
        "from the file. Save a state dict (model.state_dict(), optimizer.state_dict()) instead of an object.")


# ----------------------------------------------------------------------------- loading


class _StorageType:
    """What the unpickler hands back for `torch.FloatStorage` & co.: only its dtype is used."""

    def __init__(self, name):
        self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None):
    """torch._utils._rebuild_tensor_v2: a strided view of a storage, copied into a fusegrad tensor.
    The view is bounds-checked first, so a crafted size/stride cannot read outside the storage."""
    size, stride = tuple(size), tuple(stride)
    if (len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in size + stride + (storage_offset,))):
        raise pickle.UnpicklingError(f"fusegrad.load: invalid tensor layout: size {size}, stride {stride}, "
                                     f"offset {storage_offset}")
    if all(size):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise pickle.UnpicklingError(f"fusegrad.load: a tensor of size {size} and stride {stride} at offset "
                                         f"{storage_offset} reaches past its storage of {storage.size} elements")
    itemsize = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:] if storage.size else storage, size,
                                           tuple(s * itemsize for s in stride), writeable=False)
    data = np.array(view, copy=True, order="C")
    from_numpy_dtype(data.dtype)   # a clear TypeError for dtypes fusegrad does not hold (int8, uint8, ...)
    t = Tensor._make(data)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _rebuild_parameter(data, requires_grad, backward_hooks=None, state=None):
    return Parameter(data, requires_grad)


def _size(*dims):   # torch.Size(...) arrives as a call with a tuple argument
    return tuple(*dims)


def _encode(text, encoding="latin1"):   # how protocol-2 pickles spell bytes: _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding != "latin1":
        raise _refusal(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,            # protocol 2 spells builtins the Python 2 way
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _size,
}
_ALLOWED.update({("torch", name): _StorageType(name) for name in STORAGE_DTYPES})


class _CheckpointUnpickler(pickle.Unpickler):
    def __init__(self, file, read_storage):
        super().__init__(file)
        self._read_storage = read_storage

    def find_class(self, module, name):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _refusal(f"the global '{module}.{name}'")
        return found

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise _refusal(f"the persistent id {pid!r}")
        return self._read_storage(pid[2], pid[1].dtype, pid[4])


def load(f, map_location=None, weights_only=True, **kwargs):
    """Read a checkpoint written by torch.save or fusegrad.save (a path or a binary file object)."""
    if weights_only is False:
        raise ValueError("fusegrad.load always loads weights only: it never unpickles arbitrary objects")
    if map_location not in (None, "cpu") and str(map_location) != "cpu":
        raise RuntimeError(f"fusegrad.load: map_location={map_location!r} is not supported; tensors load on the cpu")
    if isinstance(f, (str, os.PathLike)):
        with open(f, "rb") as file:
            return load(file)
    if not zipfile.is_zipfile(f):
        raise RuntimeError("fusegrad.load: not a zip checkpoint. fusegrad reads the zip format that torch.save "
                           "writes by default since PyTorch 1.6; re-save legacy files with a recent PyTorch")
    f.seek(0)
    with zipfile.ZipFile(f) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pickles:
            raise RuntimeError("fusegrad.load: the archive has no <prefix>/data.pkl record: not a PyTorch checkpoint")
        prefix = pickles[0][:-len("data.pkl")]
        big_endian = (prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() == b"big")
        storages = {}

        def read_storage(key, dtype, numel):
            if key not in storages:
                raw = archive.read(f"{prefix}data/{key}")
                array = np.frombuffer(raw, dtype.newbyteorder(">") if big_endian else dtype)
                if array.size < numel:
                    raise pickle.UnpicklingError(f"fusegrad.load: storage {key} holds {array.size} elements, "
                                                 f"the checkpoint says {numel}")
                storages[key] = array.astype(dtype, copy=False)
            return storages[key]

        return _CheckpointUnpickler(io.BytesIO(archive.read(pickles[0])), read_storage).load()


# ----------------------------------------------------------------------------- saving


class _TorchName:
    """A global of PyTorch's namespace that the pickle names (written as GLOBAL 'module name')."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __reduce__(self):   # a string: the pickler saves the object with save_global
        return self.name

    def __call__(self, *args):   # the pickler accepts only callables as reduce functions
        raise TypeError(f"{self.module}.{self.name} is a name written into checkpoints, not a function")


_REBUILD_TENSOR = _TorchName("torch._utils", "_rebuild_tensor_v2")
_REBUILD_PARAMETER = _TorchName("torch._utils", "_rebuild_parameter")


class _Storage:
    """One tensor's bytes, written as the archive record data/<key>."""

    def __init__(self, data):
        self.data = data if data.flags.c_contiguous else np.array(data, order="C")   # keeps 0-d arrays 0-d


class _CheckpointPickler(pickle._Pickler):
    """The pure-Python pickler (its save_global can be overridden) writing torch.save's layout."""

    def __init__(self, file):
        super().__init__(file, protocol=2)
        self.storages = []

    def reducer_override(self, obj):
        if isinstance(obj, Parameter):
            return _REBUILD_PARAMETER, (Tensor._make(obj._data), obj.requires_grad, collections.OrderedDict())
        if isinstance(obj, Tensor):   # a cuda tensor is saved from a host copy, as a CPU tensor
            storage = _Storage(devices.to_host(obj._data))
            shape = storage.data.shape
            strides = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))   # C order, in elements
            return _REBUILD_TENSOR, (storage, 0, shape, strides, obj.requires_grad, collections.OrderedDict())
        return NotImplemented

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            key = str(len(self.storages))
            self.storages.append(obj.data)
            name = _STORAGE_NAMES.get(obj.data.dtype)
            if name is None:
                raise TypeError(f"fusegrad.save: no PyTorch storage type for dtype {obj.data.dtype}")
            return "storage", _TorchName("torch", name), key, "cpu", obj.data.size
        return None

    def save_global(self, obj, name=None):
        if isinstance(obj, _TorchName):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
            self.memoize(obj)
            return
        super().save_global(obj, name)


def save(obj, f):
    """Write obj (tensors, state dicts, optimizer state dicts, containers of them) as torch.save does."""
    buffer = io.BytesIO()
    pickler = _CheckpointPickler(buffer)
    pickler.dump(obj)
    if isinstance(f, (str, os.PathLike)):
        prefix = os.path.splitext(os.path.basename(os.fspath(f)))[0] or "archive"
        with open(f, "wb") as file:
            _write_archive(file, prefix, buffer.getvalue(), pickler.storages)
    else:
        _write_archive(f, "archive", buffer.getvalue(), pickler.storages)


def _write_archive(file, prefix, pickled, storages):
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{prefix}/data.pkl", pickled)
        archive.writestr(f"{prefix}/byteorder", "little")
        for key, data in enumerate(storages):
            archive.writestr(f"{prefix}/data/{key}", data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes())
        archive.writestr(f"{prefix}/version", "3\n")
