"""fusegrad.optim: SGD, Adam, AdamW, RMSprop, Adagrad (written with tensor ops under no_grad, like user
code) and the learning-rate schedulers of `optim.lr_scheduler`."""
from . import lr_scheduler
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD
from ..unimplemented import module_getattr as _module_getattr

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]
__getattr__ = _module_getattr(__name__, "torch.optim")
