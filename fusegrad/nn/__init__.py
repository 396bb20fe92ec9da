"""fusegrad.nn: Module, Parameter, layers, losses, functional, init and utils, built on the tracer's
public surface like user code."""
from . import functional, init, utils
from .layers import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Dropout, Flatten, GELU, Identity, L1Loss,
                     LeakyReLU, Linear, LogSoftmax, ModuleList, MSELoss, NLLLoss, ReLU, Sequential, Sigmoid,
                     SiLU, Softmax, Tanh)
from .module import Module
from .parameter import Buffer, Parameter
from ..unimplemented import module_getattr as _module_getattr

__all__ = ["Module", "Parameter", "Buffer", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU",
           "Softmax", "LogSoftmax", "Dropout", "Flatten", "Identity", "Sequential", "ModuleList", "MSELoss",
           "L1Loss", "NLLLoss", "CrossEntropyLoss", "BCELoss", "BCEWithLogitsLoss", "functional", "init", "utils"]
__getattr__ = _module_getattr(__name__, "torch.nn")
