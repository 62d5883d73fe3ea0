"""A tiny, randomly initialised Wan text-to-video (or image-to-video) pipeline, built in code.

No machine here can download weights, so the diffusers backend's real loading and
rendering path (``from_pretrained`` on a local folder, batching, OOM splitting, the
watermark and encoding) is exercised on this: the same classes as Wan 2.1 T2V 1.3B
(``WanPipeline``: ``WanTransformer3DModel``, ``AutoencoderKLWan``, a
``UMT5EncoderModel`` and a scheduler) with tiny configs, and a word-level tokenizer
made from the procedural vocabulary; with ``image_to_video``, the same plus a tiny CLIP
image encoder as ``WanImageToVideoPipeline`` (Wan 2.1 I2V's classes). Its clips are
noise: the point is the code path, on the CPU in CI and on CUDA when a GPU is present.

``clipstream tiny-pipeline DIR [--image-to-video]`` writes one to DIR for trying the
backend by hand.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

TEXT_DIM = 32
MAX_TOKENS = 16


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from generation.vocabulary import default_vocabulary

    words: set[str] = set()
    for category in default_vocabulary().concepts.values():
        for concept in category.values():
            for phrase in [concept.key, *concept.spec.get("synonyms", [])]:
                words.update(re.findall(r"[a-z]+", str(phrase).lower()))
    specials = ["<pad>", "</s>", "<unk>"]
    table = {token: i for i, token in enumerate([*specials, *sorted(words)])}
    tok = Tokenizer(models.WordLevel(vocab=table, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", table["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_tiny_pipeline(seed: int = 0, image_to_video: bool = False) -> Any:
    """A WanPipeline (or, with ``image_to_video``, a WanImageToVideoPipeline with a tiny
    CLIP image encoder) with random tiny weights, deterministic for ``seed``."""
    import torch
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        UMT5Config,
        UMT5EncoderModel,
    )

    tokenizer = _tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=TEXT_DIM,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        # Image-to-video adds the conditioning latents (16) and a mask (4) to the input.
        in_channels=36 if image_to_video else 16,
        out_channels=16,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=4 if image_to_video else None,
    )
    common = {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "transformer": transformer,
    }
    if not image_to_video:
        return WanPipeline(**common)
    torch.manual_seed(seed)
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=4,
            projection_dim=4,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            intermediate_size=16,
            patch_size=1,
        )
    )
    return WanImageToVideoPipeline(
        **common, image_encoder=image_encoder, image_processor=CLIPImageProcessor(crop_size=32, size=32)
    )


def save_tiny_pipeline(directory: Path, seed: int = 0, image_to_video: bool = False) -> Path:
    """Write a tiny pipeline where ``from_pretrained`` (and GENERATION__DIFFUSERS__MODEL_DIR) can load it."""
    directory = Path(directory)
    build_tiny_pipeline(seed, image_to_video).save_pretrained(directory)
    return directory
