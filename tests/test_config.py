"""The official preset has the reference's numbers; building it allocates nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from emotion_llama.cli import parameter_counts
from emotion_llama.config import official, tiny
from emotion_llama.model import EmotionLlama

REFERENCE_TRAINABLE = {
    "llama_proj": 23_072_768,
    "cls_tk_llama_proj": 5_771_264,
    "feats_llama_proj1": 4_198_400,
    "feats_llama_proj2": 4_198_400,
    "feats_llama_proj3": 4_198_400,
    "lora": 33_554_432,
}


@pytest.fixture(scope="module")
def official_on_meta():
    with torch.device("meta"):
        return EmotionLlama(official())


def test_official_trainable_parameters_match_the_reference(official_on_meta):
    counts = parameter_counts(official_on_meta)
    assert counts["trainable"] == 74_993_664
    for name, expected in REFERENCE_TRAINABLE.items():
        assert counts[name] == expected, name
    assert sum(REFERENCE_TRAINABLE.values()) == counts["trainable"]


def test_official_is_built_without_allocating_weights(official_on_meta):
    # HuBERT creates its 1024-float mask embedding outside the device context: 4 KB.
    allocated = sum(p.numel() for p in official_on_meta.parameters() if not p.is_meta)
    assert allocated <= 1024
    assert parameter_counts(official_on_meta)["total"] > 8_000_000_000


def test_official_architecture_numbers(official_on_meta):
    cfg = official()
    vit = official_on_meta.encoders.global_frame.vit
    assert vit.config.hidden_size == 1408 and vit.config.num_hidden_layers == 39
    assert vit.config.num_attention_heads == 16 and vit.config.intermediate_size == 6144
    assert int(1408 * 4.3637) == 6144  # the reference builds its MLP from ratio 4.3637
    # 448 px / patch 14 = 32 x 32 patches + CLS: position embeddings interpolated at load time.
    assert vit.embeddings.position_embedding.shape == (1, 1025, 1408)
    assert isinstance(vit.post_layernorm, torch.nn.Identity)
    ln = official_on_meta.encoders.global_frame.ln_vision
    assert ln.normalized_shape == (1408,) and ln.eps == 1e-5
    assert cfg.visual_grid == (32, 8) and cfg.num_visual_tokens == 256
    assert official_on_meta.llama_proj.in_features == 5632 and official_on_meta.llama_proj.out_features == 4096
    assert cfg.lora.r == 64 and cfg.lora.alpha == 16 and cfg.lora.dropout == 0.05
    assert set(cfg.lora.target_modules) == {"q_proj", "v_proj"}
    lora_modules = {n.split(".")[-4] for n, _ in official_on_meta.named_parameters() if ".lora_A." in n}
    assert lora_modules == {"q_proj", "v_proj"}
    for encoder in (official_on_meta.encoders.face.mae, official_on_meta.encoders.temporal.videomae,
                    official_on_meta.encoders.audio.hubert):
        assert encoder.config.hidden_size == 1024 and encoder.config.num_hidden_layers == 24


# The tiny speech encoder has HuBERT-base's front end (see ``config.tiny``): these are the
# only classes in which it differs from HuBERT-large's.
HUBERT_BASE_ONLY = {"GroupNorm", "HubertGroupNormConvLayer", "HubertNoLayerNormConvLayer", "HubertEncoder",
                    "HubertEncoderLayer"}
HUBERT_LARGE_ONLY = {"HubertLayerNormConvLayer", "HubertEncoderStableLayerNorm", "HubertEncoderLayerStableLayerNorm"}


def test_tiny_uses_the_same_classes_as_official(official_on_meta, tiny_model):
    big = {type(m).__name__ for m in official_on_meta.modules()}
    small = {type(m).__name__ for m in tiny_model.modules()}
    assert small - big == HUBERT_BASE_ONLY and big - small == HUBERT_LARGE_ONLY


def test_speech_encoder_runs_with_hubert_large_front_end_at_tiny_size():
    """What the official speech encoder runs (a LayerNorm after every convolution, a
    pre-norm transformer), at tiny widths, since the shipped tiny model does not use it."""
    import numpy as np

    from emotion_llama.encoders import SpeechEncoder

    cfg = tiny()
    large_like = replace(cfg, audio={**cfg.audio, "feat_extract_norm": "layer", "do_stable_layer_norm": True})
    encoder = SpeechEncoder(large_like).eval()
    assert {type(m).__name__ for m in encoder.modules()} >= HUBERT_LARGE_ONLY
    wave = np.random.default_rng(0).standard_normal(16_000).astype(np.float32)
    with torch.no_grad():
        features = encoder(encoder.preprocess(wave))
    assert features.shape == (1, cfg.audio["hidden_size"]) and torch.isfinite(features).all()


def test_config_round_trips_through_json(tmp_path):
    for cfg in (official(), tiny()):
        cfg.save(tmp_path / "c.json")
        assert type(cfg).load(tmp_path / "c.json") == cfg


def test_info_cli_prints_the_trainable_count():
    out = subprocess.run(
        [sys.executable, "-m", "emotion_llama", "info", "--preset", "official", "--device", "meta", "--json"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    report = json.loads(out.stdout)
    assert report["parameters"]["trainable"] == 74_993_664
    assert report["parameters"]["lora"] == 33_554_432
