"""Typed configuration and the two presets.

``official`` carries the numbers of the reference system (Cheng et al., NeurIPS 2024,
arXiv 2406.11161, and its public code): EVA ViT-g/14 at 448 px with ``ln_vision``,
MAE ViT-L, VideoMAE ViT-L, HuBERT-large, LLaMA-2-7B-chat and LoRA r 64 on q/v.
``tiny`` runs the *same classes* with small widths; it is what we train on the
synthetic corpus and ship. Size lives here, never in ``if tiny:`` branches.

Each encoder section is the keyword set of its transformers config class, so a preset
is plain data that round-trips through JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from transformers import (
    Blip2VisionConfig,
    HubertConfig,
    LlamaConfig,
    VideoMAEConfig,
    ViTMAEConfig,
)

# Normalisation of the global frame: BLIP-2 / EVA-CLIP statistics (reference Blip2ImageEvalProcessor).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# MAE and VideoMAE were trained with ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass(frozen=True)
class WeightSources:
    """Where the frozen parts of the ``official`` preset come from: a Hub id or a local path.

    Each can be overridden by an environment variable (see ``from_env``).
    """

    llm: str = "meta-llama/Llama-2-7b-chat-hf"
    # BLIP-2's EVA ViT-g: either LAVIS's ``eva_vit_g.pth`` or an HF BLIP-2 repository.
    global_vision: str = "Salesforce/blip2-opt-2.7b"
    face: str = "facebook/vit-mae-large"
    temporal: str = "MCG-NJU/videomae-large"
    audio: str = "TencentGameMate/chinese-hubert-large"
    # The Emotion-LLaMA trainable weights (adapters + LoRA), a reference ``.pth`` file.
    checkpoint: str | None = None

    ENV: ClassVar[dict[str, str]] = {
        "llm": "EMOTION_LLAMA_LLM",
        "global_vision": "EMOTION_LLAMA_EVA",
        "face": "EMOTION_LLAMA_MAE",
        "temporal": "EMOTION_LLAMA_VIDEOMAE",
        "audio": "EMOTION_LLAMA_HUBERT",
        "checkpoint": "EMOTION_LLAMA_CHECKPOINT",
    }

    def from_env(self, environ: dict[str, str] | None = None) -> WeightSources:
        environ = os.environ if environ is None else environ
        updates = {name: environ[var] for name, var in self.ENV.items() if environ.get(var)}
        return replace(self, **updates)


@dataclass(frozen=True)
class EmotionLlamaConfig:
    preset: str
    global_vision: dict[str, Any]  # Blip2VisionConfig keywords (EVA ViT-g)
    face: dict[str, Any]  # ViTMAEConfig keywords
    temporal: dict[str, Any]  # VideoMAEConfig keywords
    audio: dict[str, Any]  # HubertConfig keywords
    llm: dict[str, Any]  # LlamaConfig keywords
    lora: LoraSettings
    # Size the EVA position embeddings were trained at; interpolated to image_size once at load.
    global_pretrained_image_size: int = 224
    # Patch tokens regrouped this many consecutive at a time before llama_proj.
    visual_group: int = 4
    ln_vision_eps: float = 1e-5
    # The reference's training text has two spaces before the task tag and before ``[/INST]``
    # (``prompts.user_turn``'s spacing pieces); the tiny model was trained with one.
    reference_spacing: bool = False
    sources: WeightSources = field(default_factory=WeightSources)

    # -- derived sizes ------------------------------------------------------------
    @property
    def llm_hidden(self) -> int:
        return self.llm["hidden_size"]

    @property
    def global_hidden(self) -> int:
        return self.global_vision["hidden_size"]

    @property
    def patch_grid(self) -> int:
        """Patches per side of the global frame (32 at 448 px with patch 14)."""
        return self.global_vision["image_size"] // self.global_vision["patch_size"]

    @property
    def visual_grid(self) -> tuple[int, int]:
        """Rows and columns of the visual-token grid (32 x 8 in the official preset)."""
        if self.patch_grid % self.visual_group:
            raise ValueError("patch grid width must be divisible by visual_group")
        return self.patch_grid, self.patch_grid // self.visual_group

    @property
    def num_visual_tokens(self) -> int:
        rows, cols = self.visual_grid
        return rows * cols

    # -- transformers configs ----------------------------------------------------
    def global_vision_config(self) -> Blip2VisionConfig:
        return Blip2VisionConfig(**self.global_vision)

    def face_config(self) -> ViTMAEConfig:
        return ViTMAEConfig(**self.face)

    def temporal_config(self) -> VideoMAEConfig:
        return VideoMAEConfig(**self.temporal)

    def audio_config(self) -> HubertConfig:
        return HubertConfig(**self.audio)

    def llm_config(self) -> LlamaConfig:
        return LlamaConfig(**self.llm)

    # -- persistence -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora"]["target_modules"] = list(self.lora.target_modules)
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmotionLlamaConfig:
        data = dict(data)
        lora = dict(data.pop("lora"))
        lora["target_modules"] = tuple(lora["target_modules"])
        sources = WeightSources(**data.pop("sources", {}))
        return cls(lora=LoraSettings(**lora), sources=sources, **data)

    @classmethod
    def load(cls, path: str | Path) -> EmotionLlamaConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def with_vocab_size(self, vocab_size: int) -> EmotionLlamaConfig:
        return replace(self, llm={**self.llm, "vocab_size": vocab_size})


def _transformer(width: int, mlp: int, layers: int, heads: int, **extra) -> dict:
    """The sizes every encoder and the LLM share, plus each one's own keys."""
    return dict(hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers, num_attention_heads=heads,
                **extra)


def _eva(width: int, mlp: int, layers: int, heads: int, image: int) -> dict:
    return _transformer(width, mlp, layers, heads, image_size=image, patch_size=14,
                        hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True)


def _mae(width: int, mlp: int, layers: int, heads: int, image: int) -> dict:
    return _transformer(width, mlp, layers, heads, image_size=image, patch_size=16, qkv_bias=True, mask_ratio=0.0)


def _videomae(width: int, mlp: int, layers: int, heads: int, image: int) -> dict:
    return _transformer(width, mlp, layers, heads, image_size=image, patch_size=16, num_frames=16, tubelet_size=2,
                        qkv_bias=True, use_mean_pooling=False)


def _llama(vocab: int, width: int, mlp: int, layers: int, heads: int, positions: int) -> dict:
    return dict(vocab_size=vocab, **_transformer(width, mlp, layers, heads, num_key_value_heads=heads,
                                                  max_position_embeddings=positions, rms_norm_eps=1e-5,
                                                  bos_token_id=1, eos_token_id=2, tie_word_embeddings=False))


def official() -> EmotionLlamaConfig:
    """The reference numbers (the paper and its public code; see the module docstring)."""
    return EmotionLlamaConfig(
        preset="official",
        reference_spacing=True,
        # Blip2VisionConfig's defaults are EVA ViT-g: 1408 wide, 39 layers, 16 heads,
        # MLP 6144 (ratio 4.3637), exact GELU, LayerNorm eps 1e-6, qkv bias; 448-px input.
        global_vision=_eva(1408, 6144, 39, 16, image=448),
        face=_mae(1024, 4096, 24, 16, image=224),  # ViT-MAE-large encoder
        temporal=_videomae(1024, 4096, 24, 16, image=224),  # VideoMAE-large encoder
        audio=_transformer(  # HuBERT-large (chinese-hubert-large)
            1024, 4096, 24, 16, conv_dim=[512] * 7, conv_bias=True, feat_extract_norm="layer",
            do_stable_layer_norm=True, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16),
        llm=_llama(32000, 4096, 11008, 32, 32, positions=4096),  # LLaMA-2-7B-chat
        lora=LoraSettings(r=64, alpha=16, dropout=0.05),
        global_pretrained_image_size=224,
        sources=WeightSources().from_env(),
    )


TINY_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny(vocab_size: int = 2048) -> EmotionLlamaConfig:
    """Same classes as ``official`` with small widths; trains on a CPU in minutes."""
    return EmotionLlamaConfig(
        preset="tiny",
        global_vision=_eva(64, 128, 2, 4, image=224),
        face=_mae(64, 128, 2, 4, image=112),
        temporal=_videomae(64, 128, 2, 4, image=112),
        # HuBERT-base's front end (one GroupNorm, post-norm transformer) rather than the
        # large model's LayerNorm after every convolution: 2.3x faster per training step
        # here, and at 20 epochs it names the voice's emotion in 0.55 of held-out clips
        # (about the ceiling: the voice alone confuses pairs of labels), where the LayerNorm
        # front end reached 0.35-0.37 in 12 epochs.
        audio=_transformer(64, 128, 2, 4, conv_dim=[32] * 7, conv_bias=True, feat_extract_norm="group",
                           do_stable_layer_norm=False, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
        llm=_llama(vocab_size, 128, 344, 4, 4, positions=2048),
        # LoRA on every linear layer, not only q/v as in ``official``: the tiny LLM's frozen
        # MLPs learned text alone, and fusing face and voice needs some capacity there.
        # No LoRA dropout: drawing its masks before each of the 28 LoRA layers took 30-37 % of
        # a tuning step on a CPU (benchmarks/bench_tuning_step.py), and the recipe's input
        # dropouts already regularise.
        lora=LoraSettings(r=16, alpha=32, dropout=0.0, target_modules=TINY_LORA_TARGETS),
        global_pretrained_image_size=224,
    )


PRESETS = {"official": official, "tiny": tiny}


def preset(name: str) -> EmotionLlamaConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
