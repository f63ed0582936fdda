"""Model code: configs and presets, the towers, and the CLIP class."""

from clipforge.models.clip import CLIP, CLIPOutput, with_image_size
from clipforge.models.config import (
    PRESETS,
    CLIPConfig,
    PreprocessConfig,
    TextConfig,
    VisionConfig,
    get_config,
    list_models,
)

__all__ = [
    "CLIP",
    "CLIPOutput",
    "CLIPConfig",
    "PreprocessConfig",
    "TextConfig",
    "VisionConfig",
    "PRESETS",
    "get_config",
    "list_models",
    "with_image_size",
]
