"""fusegrad.optim: SGD, Adam, AdamW, written with tensor ops under no_grad like user code."""
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]
