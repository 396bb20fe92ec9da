"""fusegrad.nn: Module, Parameter, layers, losses, functional, init and utils, built on the tracer's
public surface like user code."""
from . import functional, init, utils
from .convolution import AdaptiveAvgPool2d, AvgPool2d, Conv2d, MaxPool2d
from .layers import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, Dropout, Embedding, Flatten, GELU, Identity,
                     L1Loss, LeakyReLU, Linear, LogSoftmax, ModuleDict, ModuleList, MSELoss, NLLLoss, ReLU,
                     Sequential, Sigmoid, SiLU, Softmax, Tanh)
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from .recurrent import GRU, GRUCell, LSTM, LSTMCell, RNN, RNNBase, RNNCell, RNNCellBase
from .module import Module
from .parameter import Buffer, Parameter
from ..unimplemented import module_getattr as _module_getattr

__all__ = ["Module", "Parameter", "Buffer", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU",
           "Softmax", "LogSoftmax", "Dropout", "Flatten", "Identity", "Sequential", "ModuleList", "ModuleDict",
           "Embedding", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d",
           "LayerNorm", "RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell",
           "MSELoss", "L1Loss", "NLLLoss", "CrossEntropyLoss", "BCELoss", "BCEWithLogitsLoss",
           "functional", "init", "utils"]
__getattr__ = _module_getattr(__name__, "torch.nn")
