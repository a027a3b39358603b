"""Audio tagging models, one module per paper, behind one registry.

>>> from avtag.audio.models import get, available_models
>>> model = get("crnn")()
"""

from avtag.audio.models.base import (
    TaggingModel,
    TaggingOutput,
    available_models,
    build_model,
    from_pretrained,
    get,
    register_model,
    segment_hop_seconds,
)

__all__ = [
    "TaggingModel",
    "TaggingOutput",
    "available_models",
    "build_model",
    "from_pretrained",
    "get",
    "register_model",
    "segment_hop_seconds",
]
