"""fusegrad.nn: Module, Parameter, layers, losses, functional, init and utils, built on the tracer's
public surface like user code."""
from . import functional, init, utils
from .attention import MultiheadAttention
from .convolution import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, Conv1d, Conv2d, MaxPool1d,
                          MaxPool2d)
from .layers import (BCELoss, BCEWithLogitsLoss, CELU, CosineSimilarity, CrossEntropyLoss, Dropout, ELU, Embedding,
                     Flatten, GELU, GLU, Hardsigmoid, Hardswish, Hardtanh, HuberLoss, Identity, KLDivLoss, L1Loss,
                     LeakyReLU, Linear, LogSigmoid, LogSoftmax, Mish, ModuleDict, ModuleList, MSELoss, NLLLoss,
                     PairwiseDistance, PReLU, ReLU, ReLU6, SELU, Sequential, Sigmoid, SiLU, SmoothL1Loss, Softmax,
                     Softmin, Softplus, Softsign, Tanh, Tanhshrink, Threshold)
from .normalization import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d,
                            LayerNorm)
from .recurrent import GRU, GRUCell, LSTM, LSTMCell, RNN, RNNBase, RNNCell, RNNCellBase
from .upsampling import PixelShuffle, PixelUnshuffle, Upsample
from .module import Module
from .parameter import Buffer, Parameter
from ..unimplemented import module_getattr as _module_getattr

__all__ = ["Module", "Parameter", "Buffer", "Linear", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "SiLU",
           "Softmax", "LogSoftmax", "Dropout", "Flatten", "Identity", "Sequential", "ModuleList", "ModuleDict",
           "Embedding", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d",
           "LayerNorm", "RNNBase", "RNN", "LSTM", "GRU", "RNNCellBase", "RNNCell", "LSTMCell", "GRUCell",
           "MSELoss", "L1Loss", "NLLLoss", "CrossEntropyLoss", "BCELoss", "BCEWithLogitsLoss",
           "ELU", "SELU", "CELU", "Softplus", "Hardtanh", "ReLU6", "LogSigmoid", "Mish", "Hardswish",
           "Hardsigmoid", "Softsign", "Tanhshrink", "Softmin", "Threshold", "GLU", "PReLU", "SmoothL1Loss",
           "HuberLoss", "KLDivLoss", "CosineSimilarity", "PairwiseDistance",
           "Conv1d", "MaxPool1d", "AvgPool1d", "AdaptiveAvgPool1d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
           "InstanceNorm3d", "MultiheadAttention", "Upsample", "PixelShuffle", "PixelUnshuffle",
           "functional", "init", "utils"]
__getattr__ = _module_getattr(__name__, "torch.nn")
