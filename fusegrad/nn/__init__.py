"""fusegrad.nn: Module, Parameter, layers, losses, functional and init, built on the tracer's
public surface like user code."""
from . import functional, init
from .layers import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Dropout, Flatten, GELU, Identity, L1Loss,
                     LeakyReLU, Linear, LogSoftmax, ModuleList, MSELoss, NLLLoss, ReLU, Sequential, Sigmoid,
                     SiLU, Softmax, Tanh)
from .module import Module
from .parameter import Buffer, Parameter

__all__ = ["Module", "Parameter", "Buffer", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU",
           "Softmax", "LogSoftmax", "Dropout", "Flatten", "Identity", "Sequential", "ModuleList", "MSELoss",
           "L1Loss", "NLLLoss", "CrossEntropyLoss", "BCELoss", "BCEWithLogitsLoss", "functional", "init"]
