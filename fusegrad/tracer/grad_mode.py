"""Grad modes: whether eager ops record nodes for autograd (no_grad, enable_grad, inference_mode)."""
import functools
import threading


class _Mode(threading.local):
    """Per thread, as in PyTorch: every thread starts with grad enabled."""
    enabled = True


state = _Mode()   # the dispatcher reads state.enabled on every op


def is_grad_enabled():
    return state.enabled


def _set(value):
    state.enabled = bool(value)


class _GradMode:
    """A context manager that also works as a decorator, like torch.no_grad."""

    mode = True

    def __enter__(self):
        self._previous = state.enabled
        _set(self.mode)
        return self

    def __exit__(self, *exc):
        _set(self._previous)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)
        return wrapper

    def clone(self):
        return self.__class__()


class _BareDecorator(_GradMode):
    """Also usable without parentheses: `@no_grad` as well as `@no_grad()`."""

    def __new__(cls, fn=None):
        self = super().__new__(cls)
        return self if fn is None else self(fn)

    def __init__(self, fn=None):
        pass


class no_grad(_BareDecorator):
    mode = False


class enable_grad(_BareDecorator):
    mode = True


class inference_mode(_GradMode):
    def __init__(self, mode=True):
        self.mode = not mode
        self._flag = mode

    def __call__(self, fn):
        flag = self._flag

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with inference_mode(flag):
                return fn(*args, **kwargs)
        return wrapper


class set_grad_enabled(_GradMode):
    """Sets the mode at construction, so `set_grad_enabled(False)` works as a plain call too."""

    def __init__(self, mode):
        self.mode = bool(mode)
        self._previous = state.enabled
        _set(mode)

    def __enter__(self):
        return self

    def __call__(self, fn):
        _set(self._previous)
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)
        return wrapper
