"""What a configured backend can do, answered without importing torch (the API asks).

Cameos need a likeness in the clip: the procedural renderer composites it; a diffusers
pipeline can only take it through image conditioning (an image-to-video pipeline).
Text-only pipelines refuse cameo requests, and the API refuses them before a GPU is
involved.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.settings import DiffusersSettings, GenerationSettings

#: Pipelines whose __call__ takes an ``image`` to condition the video on.
IMAGE_CONDITIONED_PIPELINES = frozenset(
    {
        "WanImageToVideoPipeline",
        "LTXImageToVideoPipeline",
        "LTXConditionPipeline",
        "CogVideoXImageToVideoPipeline",
        "HunyuanVideoImageToVideoPipeline",
        "StableVideoDiffusionPipeline",
    }
)


def pipeline_class_name(settings: DiffusersSettings) -> str | None:
    """The configured pipeline class, or the one model_index.json names for "auto"."""
    if settings.pipeline != "auto":
        return settings.pipeline
    if settings.model_dir is None:
        return None
    index = Path(settings.model_dir) / "model_index.json"
    try:
        name = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError):
        return None
    return name if isinstance(name, str) else None


def supports_cameos(settings: GenerationSettings) -> bool:
    if settings.backend == "procedural":
        return True
    if settings.backend == "diffusers":
        return pipeline_class_name(settings.diffusers) in IMAGE_CONDITIONED_PIPELINES
    return False
