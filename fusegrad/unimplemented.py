"""Module `__getattr__` for the torch names fusegrad does not have yet.

Scripts written for PyTorch reach for `torch.something`; the error should say that fusegrad lacks it,
not suggest a neighbouring name ("Did you mean: get_default_dtype?") as Python's default does."""


def module_getattr(module_name, torch_name):
    """A module-level __getattr__ for `module_name`, which stands in for torch's `torch_name`."""
    def __getattr__(name):
        if name.startswith("__"):   # protocol probes (copy, pickle, doctest) expect the plain error
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}: fusegrad does not implement "
                             f"{torch_name}.{name} yet")
    return __getattr__
