"""Torch architectures (a timm-style registry), checkpoints and training recipes.

Public API::

    create_model(name, *, num_classes, **arch_args) -> nn.Module
    list_models(pattern=None) -> list[str];  model_info(name) -> ModelInfo;  count_params(name)
    register_model(family=..., input_size=..., tiny=...)   # decorator for new builders
    save_checkpoint(path, model, *, arch, arch_args, num_classes, input_size, ...) -> Path
    load_checkpoint(path) -> (nn.Module, CheckpointMeta)
    load_recipe(path) -> Recipe

Importing this package registers every built-in architecture (it imports torch, torchvision and timm).
"""

from __future__ import annotations

# Importing the family modules registers their builders.
from ovdiv.models import deit as deit
from ovdiv.models import googlenet as googlenet
from ovdiv.models import mnasnet as mnasnet
from ovdiv.models import resnet as resnet
from ovdiv.models import squeezenet as squeezenet
from ovdiv.models._registry import ModelInfo as ModelInfo
from ovdiv.models._registry import count_params as count_params
from ovdiv.models._registry import create_model as create_model
from ovdiv.models._registry import is_registered as is_registered
from ovdiv.models._registry import list_models as list_models
from ovdiv.models._registry import model_info as model_info
from ovdiv.models._registry import model_table as model_table
from ovdiv.models._registry import register_model as register_model
from ovdiv.models.checkpoint import CheckpointMeta as CheckpointMeta
from ovdiv.models.checkpoint import build_model as build_model
from ovdiv.models.checkpoint import load_checkpoint as load_checkpoint
from ovdiv.models.checkpoint import read_checkpoint_meta as read_checkpoint_meta
from ovdiv.models.checkpoint import save_checkpoint as save_checkpoint
from ovdiv.models.recipes import Recipe as Recipe
from ovdiv.models.recipes import load_recipe as load_recipe

__all__ = [
    "CheckpointMeta",
    "ModelInfo",
    "Recipe",
    "build_model",
    "load_checkpoint",
    "read_checkpoint_meta",
    "save_checkpoint",
    "count_params",
    "create_model",
    "is_registered",
    "list_models",
    "load_recipe",
    "model_info",
    "model_table",
    "register_model",
]
