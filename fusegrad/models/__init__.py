"""Model definitions with torchvision's architectures and parameter names, so that a torchvision
state dict (read with `fusegrad.load`) loads into them with `load_state_dict`."""
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50"]
