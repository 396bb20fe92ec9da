"""Grad modes: whether eager ops record nodes for autograd (no_grad, enable_grad, inference_mode)."""
import functools
import inspect
import threading


class _Mode(threading.local):
    """Per thread, as in PyTorch: every thread starts with grad enabled."""
    enabled = True


state = _Mode()   # the dispatcher reads state.enabled on every op


def is_grad_enabled():
    return state.enabled


def _set(value):
    state.enabled = bool(value)


def _decorate(make_mode, fn):
    """fn run under a fresh `make_mode()` context; for a generator function, each step of the
    generator runs under it (the caller's mode holds between steps), as in PyTorch."""
    if not inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with make_mode():
                return fn(*args, **kwargs)
        return wrapper

    @functools.wraps(fn)
    def generator(*args, **kwargs):
        gen = fn(*args, **kwargs)
        try:
            with make_mode():
                response = gen.send(None)
            while True:
                try:
                    request = yield response
                except GeneratorExit:
                    with make_mode():
                        gen.close()
                    raise
                except BaseException as error:   # thrown in by the caller: raise it inside
                    with make_mode():
                        response = gen.throw(error)
                else:
                    with make_mode():
                        response = gen.send(request)
        except StopIteration as stop:
            return stop.value
    return generator


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
        return _decorate(self.__class__, fn)

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
        return _decorate(functools.partial(inference_mode, self._flag), fn)


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
        return _decorate(functools.partial(set_grad_enabled, self.mode), fn)
