"""nn.Module: the container that registers parameters, buffers and submodules by attribute."""
from collections import OrderedDict, namedtuple

from .. import tracer
from ..tracer import Tensor
from .parameter import Buffer, Parameter


class IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    __slots__ = ()

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


def typename(obj):
    """torch.typename: 'torch.FloatTensor' for a tensor, the qualified type name otherwise (for messages)."""
    if isinstance(obj, Tensor):
        return obj.type()
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ in ("", "builtins") else f"{cls.__module__}.{cls.__qualname__}"


class Module:
    training: bool

    def __init__(self, *args, **kwargs):
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_hooks_with_kwargs", set())

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name, value):
        # The same decision order as torch.nn.Module.__setattr__: a Parameter or Module always registers;
        # a name already registered only accepts its own kind (or None); otherwise a plain attribute.
        d = self.__dict__
        if "_parameters" not in d:
            if isinstance(value, (Parameter, Module)):
                kind = "parameters" if isinstance(value, Parameter) else "module"
                raise AttributeError(f"cannot assign {kind} before Module.__init__() call")
            object.__setattr__(self, name, value)
        elif isinstance(value, Parameter):
            self._remove_from(name, d, self._buffers, self._modules, self._non_persistent)
            self.register_parameter(name, value)
        elif name in self._parameters:
            if value is not None:
                raise TypeError(f"cannot assign '{typename(value)}' as parameter '{name}' "
                                "(torch.nn.Parameter or None expected)")
            self._parameters[name] = None
        elif isinstance(value, Module):
            self._remove_from(name, d, self._parameters, self._buffers, self._non_persistent)
            self._modules[name] = value
        elif name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign '{typename(value)}' as child module '{name}' "
                                "(torch.nn.Module or None expected)")
            self._modules[name] = None
        elif isinstance(value, Buffer) or name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{typename(value)}' as buffer '{name}' "
                                "(torch.nn.Buffer, torch.Tensor or None expected)")
            persistent = value.persistent if isinstance(value, Buffer) else name not in self._non_persistent
            self.register_buffer(name, value, persistent)
        else:
            object.__setattr__(self, name, value)

    @staticmethod
    def _remove_from(name, *stores):
        for store in stores:
            if isinstance(store, dict):
                store.pop(name, None)
            else:
                store.discard(name)

    def _check_name(self, name, kind, store):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {kind} before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string. Got {typename(name)}")
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain "."' + (f", got: {name}" if kind == "module" else ""))
        if name == "":
            raise KeyError(f'{kind} name can\'t be empty string ""')
        if hasattr(self, name) and name not in store:
            raise KeyError(f"attribute '{name}' already exists")

    def __getattr__(self, name):
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self._non_persistent.discard(name)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        self._check_name(name, "parameter", self._parameters)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{typename(param)}' object to parameter '{name}' "
                            "(torch.nn.Parameter or None required)")
        self._parameters[name] = param   # an existing name keeps its place in the order

    def register_buffer(self, name, tensor, persistent=True):
        self._check_name(name, "buffer", self._buffers)
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{typename(tensor)}' object to buffer '{name}' "
                            "(torch Tensor or None required)")
        self._buffers[name] = tensor
        (self._non_persistent.discard if persistent else self._non_persistent.add)(name)

    def add_module(self, name, module):
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{typename(module)} is not a Module subclass")
        self._check_name(name, "module", self._modules)
        self._modules[name] = module   # an existing name keeps its place: Sequential[i] = m stays at i

    register_module = add_module

    # ------------------------------------------------------------------ calling
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        for key, hook in list(self._forward_pre_hooks.items()):
            if key in self._hooks_with_kwargs:
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError("forward pre-hook must return None or a tuple of (new_args, "
                                           f"new_kwargs), but got {result}.")
                    args, kwargs = result
            else:
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        out = self.forward(*args, **kwargs)
        for key, hook in list(self._forward_hooks.items()):
            result = hook(self, args, kwargs, out) if key in self._hooks_with_kwargs else hook(self, args, out)
            if result is not None:
                out = result
        return out

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False, always_call=False):
        """hook(module, args, output), or hook(module, args, kwargs, output) with with_kwargs=True; a
        returned value replaces the output."""
        return _HookHandle(self._forward_hooks, hook, prepend, self._hooks_with_kwargs if with_kwargs else None)

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """hook(module, args) may return new args; with with_kwargs=True, hook(module, args, kwargs)
        may return (new_args, new_kwargs)."""
        return _HookHandle(self._forward_pre_hooks, hook, prepend,
                           self._hooks_with_kwargs if with_kwargs else None)

    # ------------------------------------------------------------------ traversal
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        memo = set() if memo is None else memo
        if remove_duplicate and id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, store, prefix, recurse, remove_duplicate=True):
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, store).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target):
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules:
                raise AttributeError(f"{type(module).__name__} has no attribute `{part}`")
            module = module._modules[part]
        return module

    def get_parameter(self, target):
        path, _, name = target.rpartition(".")
        module = self.get_submodule(path)
        if name not in module._parameters:
            raise AttributeError(f"{type(module).__name__} has no parameter `{name}`")
        return module._parameters[name]

    def apply(self, fn):
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and gradients
    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        tracer.zero_grads(self.parameters(), set_to_none)

    # ------------------------------------------------------------------ state
    def _state_items(self, prefix):
        """(module, prefix, local state) for every module, shared ones once per name, as torch recurses."""
        local = OrderedDict((k, p) for k, p in self._parameters.items() if p is not None)
        local.update((k, b) for k, b in self._buffers.items() if b is not None and k not in self._non_persistent)
        yield self, prefix, local
        for name, module in self._modules.items():
            if module is not None:
                yield from module._state_items(f"{prefix}{name}.")

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        if args:   # torch's deprecated positional form: state_dict(destination, prefix, keep_vars)
            destination = args[0]
            prefix = args[1] if len(args) > 1 else prefix
            keep_vars = args[2] if len(args) > 2 else keep_vars
        out = OrderedDict() if destination is None else destination
        for _, head, local in self._state_items(prefix):
            for key, value in local.items():
                out[head + key] = value if keep_vars else value.detach()
        return out

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy values into this module's parameters and buffers. Missing and unexpected keys are
        errors when strict (reported in torch's order and wording); a shape mismatch always is."""
        missing, unexpected, errors, copies = [], [], [], []
        for module, head, local in self._state_items(""):
            for key, target in local.items():
                if head + key not in state_dict:
                    missing.append(head + key)
                    continue
                value = state_dict[head + key]
                if not isinstance(value, Tensor):
                    errors.append(f'While copying the parameter named "{head + key}", expected torch.Tensor or '
                                  f"Tensor-like object from checkpoint but received {type(value)}")
                elif tuple(value.shape) != tuple(target.shape):
                    errors.append(f"size mismatch for {head + key}: copying a param with shape {value.shape} "
                                  f"from checkpoint, the shape in current model is {target.shape}.")
                else:
                    copies.append((module, key, target, value))
            for key in state_dict:
                if key.startswith(head):
                    first = key[len(head):].split(".", 1)[0]
                    if first not in module._modules and first not in local:
                        unexpected.append(key)
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
        with tracer.no_grad():
            for module, key, target, value in copies:
                if assign:
                    store = module._parameters if key in module._parameters else module._buffers
                    store[key] = Parameter(value, target.requires_grad) if store is module._parameters else value
                else:
                    target.copy_(value)
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ conversion
    def _map_tensors(self, fn):
        """Replace each parameter's and buffer's data (and a parameter's gradient) by fn of it, in
        place, so optimizers holding the parameters keep working."""
        with tracer.no_grad():
            for m in self.modules():
                for store in (m._parameters, m._buffers):
                    for key, t in store.items():
                        if t is not None:
                            new = fn(t)
                            if new is not t:
                                t.data = new
                            if t._grad is not None and t._grad._device is not t._device:
                                t._grad.data = t._grad.to(t._device)
        return self

    def to(self, *args, **kwargs):
        return self._map_tensors(lambda t: t.to(*args, **kwargs) if t.is_floating_point() or not any(
            hasattr(a, "is_floating_point") for a in args) else t)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else device)

    def double(self):
        from ..ir.dtypes import float64
        return self._map_tensors(lambda t: t.to(float64) if t.is_floating_point() else t)

    def float(self):
        from ..ir.dtypes import float32
        return self._map_tensors(lambda t: t.to(float32) if t.is_floating_point() else t)

    def half(self):
        from ..ir.dtypes import float16
        return self._map_tensors(lambda t: t.to(float16) if t.is_floating_point() else t)

    # ------------------------------------------------------------------ printing
    def extra_repr(self):
        return ""

    def _get_name(self):
        return type(self).__name__

    def __repr__(self):
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, module in self._modules.items():
            body = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        if not lines:
            return f"{self._get_name()}()"
        if len(lines) == 1 and not self._modules:
            return f"{self._get_name()}({lines[0]})"
        return f"{self._get_name()}(\n  " + "\n  ".join(lines) + "\n)"

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._modules) | set(self._buffers))


class _HookHandle:
    """torch.utils.hooks.RemovableHandle: remove() or leave a `with` block to unregister."""
    _next_id = 0

    def __init__(self, hooks, fn, prepend=False, with_kwargs=None):
        _HookHandle._next_id += 1
        self.id = _HookHandle._next_id
        self.hooks = hooks
        self.with_kwargs = with_kwargs
        hooks[self.id] = fn
        if prepend:
            hooks.move_to_end(self.id, last=False)
        if with_kwargs is not None:
            with_kwargs.add(self.id)

    def remove(self):
        self.hooks.pop(self.id, None)
        if self.with_kwargs is not None:
            self.with_kwargs.discard(self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
