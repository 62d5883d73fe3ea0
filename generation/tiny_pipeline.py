"""A tiny, randomly initialised Wan text-to-video pipeline, built entirely in code.

No machine here can download weights, so the diffusers backend's real loading and
rendering path (``from_pretrained`` on a local folder, batching, OOM splitting, the
watermark and encoding) is exercised on this: the same classes as Wan 2.1 T2V 1.3B
(``WanPipeline``: ``WanTransformer3DModel``, ``AutoencoderKLWan``, a
``UMT5EncoderModel`` and a scheduler) with tiny configs, and a word-level tokenizer
made from the procedural vocabulary. Its clips are noise: the point is the code
path, on the CPU in CI and on CUDA when a GPU is present.

``clipstream tiny-pipeline DIR`` writes one to DIR for trying the backend by hand.
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


def build_tiny_pipeline(seed: int = 0) -> Any:
    """A WanPipeline with random tiny weights (about 1 MB), deterministic for ``seed``."""
    import torch
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

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
        in_channels=16,
        out_channels=16,
        text_dim=TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=transformer,
    )


def save_tiny_pipeline(directory: Path, seed: int = 0) -> Path:
    """Write a tiny pipeline where ``from_pretrained`` (and GENERATION__DIFFUSERS__MODEL_DIR) can load it."""
    directory = Path(directory)
    build_tiny_pipeline(seed).save_pretrained(directory)
    return directory
