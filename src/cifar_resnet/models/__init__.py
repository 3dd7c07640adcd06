"""ResNet architectures, airbench, pretrained weights, model summaries and the final-model file format."""

from .airbench import AirbenchNet
from .io import load_model, save_model, save_weights
from .pretrained import IMAGENET, imagenet_file, load_pretrained, transfer_state
from .resnet import (
    ARCHITECTURES,
    BasicBlock,
    Bottleneck,
    Network,
    ResNet,
    build_model,
    count_parameters,
    list_models,
)
from .resnet9 import ResNet9
from .summary import format_table, layer_table, model_summary, size_mb
from .transfer import PreparedModel, backbone_lr_scale, backbone_modules, freeze_backbone, prepare_model

__all__ = [
    "ARCHITECTURES",
    "AirbenchNet",
    "IMAGENET",
    "BasicBlock",
    "Bottleneck",
    "Network",
    "PreparedModel",
    "ResNet",
    "ResNet9",
    "backbone_lr_scale",
    "backbone_modules",
    "build_model",
    "count_parameters",
    "format_table",
    "freeze_backbone",
    "imagenet_file",
    "layer_table",
    "list_models",
    "load_model",
    "load_pretrained",
    "model_summary",
    "size_mb",
    "prepare_model",
    "save_model",
    "save_weights",
    "transfer_state",
]
