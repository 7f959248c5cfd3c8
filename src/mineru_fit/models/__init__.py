"""ModelSpec from config.json and safetensors headers (no weights loaded); locate and download models.

Importing this package imports no torch, transformers or hub library: those load inside the
functions that need them (download only).
"""

from mineru_fit.models.cache import where
from mineru_fit.models.hub import ModelStatus, download, list_models
from mineru_fit.models.known import DEFAULT_MODEL, KNOWN_MODELS, KnownModel, find_known
from mineru_fit.models.registry import default_spec, load_spec, spec_from_dir
from mineru_fit.models.spec import (
    DTYPE_BYTES,
    ImageSpec,
    ModelSpec,
    TensorInfo,
    TensorRole,
    TextSpec,
    VisionSpec,
)

__all__ = [
    "DEFAULT_MODEL",
    "DTYPE_BYTES",
    "KNOWN_MODELS",
    "ImageSpec",
    "KnownModel",
    "ModelSpec",
    "ModelStatus",
    "TensorInfo",
    "TensorRole",
    "TextSpec",
    "VisionSpec",
    "default_spec",
    "download",
    "find_known",
    "list_models",
    "load_spec",
    "spec_from_dir",
    "where",
]
