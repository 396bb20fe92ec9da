"""The error for a torch name that fusegrad does not have yet, on a module or on Tensor.

Scripts written for PyTorch reach for `torch.something` or `tensor.something`; the error should say
that fusegrad lacks it, not suggest a neighbouring name ("Did you mean: get_default_dtype?") as
Python's default does. Private and protocol names (a leading underscore) get the plain error that
probes such as hasattr, copy and pickle expect."""


def missing_attribute(owner, torch_name, name):
    """The AttributeError for `name`, missing on `owner` ("module 'fusegrad'", "'Tensor' object"),
    which stands in for torch's `torch_name`."""
    if name.startswith("_"):
        return AttributeError(f"{owner} has no attribute {name!r}")
    return AttributeError(f"{owner} has no attribute {name!r}: fusegrad does not implement {torch_name}.{name} yet")


def module_getattr(module_name, torch_name):
    """A module-level __getattr__ for `module_name`, which stands in for torch's `torch_name`."""
    def __getattr__(name):
        raise missing_attribute(f"module {module_name!r}", torch_name, name)
    return __getattr__
