"""ResNet architectures and the final-model file format."""

from .io import load_model, save_model
from .resnet import (
    ARCHITECTURES,
    BasicBlock,
    Bottleneck,
    ResNet,
    build_model,
    count_parameters,
    list_models,
)

__all__ = [
    "ARCHITECTURES",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "build_model",
    "count_parameters",
    "list_models",
    "load_model",
    "save_model",
]
