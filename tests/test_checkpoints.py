"""Reference checkpoints import exactly; our format round-trips; pickles cannot run code."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from transformers import Blip2VisionModel

from emotion_llama.checkpoints import (
    eva_lavis_to_hf,
    from_pretrained,
    interpolate_position_embedding,
    load_global_vision,
    load_reference_checkpoint,
    save_pretrained,
)
from emotion_llama.config import tiny
from emotion_llama.errors import CheckpointError
from emotion_llama.model import EmotionLlama
from emotion_llama.prompts import first_turn, user_turn


def reference_state(model: EmotionLlama, seed: int = 1) -> dict[str, torch.Tensor]:
    """Trainable tensors under the reference's (peft 0.2.0) names, random values, plus
    the unused fusion MLP the reference file carries."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in model.trainable_state_dict().items():
        ref_key = re.sub(r"\.default\.weight$", ".weight", key)
        state[ref_key] = torch.randn(tensor.shape, generator=gen)
    state["attention.fc1.weight"] = torch.randn(8, 8, generator=gen)
    return state


def fresh_tiny(tokenizer) -> EmotionLlama:
    torch.manual_seed(7)
    return EmotionLlama(tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer).eval()


def test_reference_names_load_with_nothing_missing_or_unexpected(tiny_model, tmp_path):
    model = fresh_tiny(tiny_model.tokenizer)
    state = reference_state(model)
    path = tmp_path / "Emoation_LLaMA.pth"
    torch.save({"model": state, "optimizer": None, "epoch": 3, "config": {"run": {"lr": 1e-4}}}, path)
    assert any(k.endswith("q_proj.lora_A.weight") for k in state)  # the old names, without adapter name

    report = load_reference_checkpoint(model, path)
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert report.ignored == ["attention.fc1.weight"]
    assert len(report.loaded) == len(model.trainable_state_dict())

    x = torch.randn(3, model.feats_llama_proj3.in_features)
    expected = x @ state["feats_llama_proj3.weight"].T + state["feats_llama_proj3.bias"]
    assert torch.equal(model.feats_llama_proj3(x), expected)
    grouped = torch.randn(2, model.llama_proj.in_features)
    assert torch.equal(model.llama_proj(grouped), F.linear(grouped, state["llama_proj.weight"], state["llama_proj.bias"]))
    lora_key = "llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_B"
    assert torch.equal(model.state_dict()[lora_key + ".default.weight"], state[lora_key + ".weight"])


def test_shape_mismatch_fails_loudly(tiny_model, tmp_path):
    model = fresh_tiny(tiny_model.tokenizer)
    state = reference_state(model)
    state["llama_proj.weight"] = torch.zeros(3, 3)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="llama_proj.weight"):
        load_reference_checkpoint(model, tmp_path / "bad.pth")


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_checkpoint_that_runs_code_is_refused(tiny_model, tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"llama_proj.weight": torch.zeros(1)}, "payload": _RunsCodeWhenUnpickled(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_reference_checkpoint(fresh_tiny(tiny_model.tokenizer), path)
    assert not marker.exists()


def test_save_then_load_reproduces_logits_exactly(tiny_model, prepared_clip, tmp_path):
    save_pretrained(tiny_model, tmp_path / "w")
    loaded = from_pretrained(tmp_path / "w")
    prompt = first_turn(user_turn("emotion", subtitle="I'm not going in anymore, scared."))

    def logits(model):
        seq = model.assemble(prompt, model.project(model.encode(prepared_clip)))
        with torch.no_grad():
            return model.llama_model(inputs_embeds=seq.inputs_embeds).logits

    assert torch.equal(logits(tiny_model), logits(loaded))
    assert loaded.tokenizer.get_vocab() == tiny_model.tokenizer.get_vocab()


def test_from_pretrained_names_a_missing_file(tmp_path):
    from emotion_llama.errors import WeightsUnavailableError

    with pytest.raises(WeightsUnavailableError, match="config.json"):
        from_pretrained(tmp_path)


def lavis_eva_state(vit: Blip2VisionModel) -> dict[str, torch.Tensor]:
    """A LAVIS-named EVA state dict at 224 px with random values (tiny widths)."""
    cfg = vit.config
    width, gen = cfg.hidden_size, torch.Generator().manual_seed(3)
    grid = 224 // cfg.patch_size

    def r(*shape):
        return torch.randn(*shape, generator=gen) * 0.02

    state = {
        "cls_token": r(1, 1, width),
        "pos_embed": r(1, grid * grid + 1, width),
        "patch_embed.proj.weight": r(width, 3, cfg.patch_size, cfg.patch_size),
        "patch_embed.proj.bias": r(width),
    }
    for i in range(cfg.num_hidden_layers):
        b = f"blocks.{i}."
        state.update({
            b + "norm1.weight": 1 + r(width), b + "norm1.bias": r(width),
            b + "norm2.weight": 1 + r(width), b + "norm2.bias": r(width),
            b + "attn.qkv.weight": r(3 * width, width), b + "attn.q_bias": r(width), b + "attn.v_bias": r(width),
            b + "attn.proj.weight": r(width, width), b + "attn.proj.bias": r(width),
            b + "mlp.fc1.weight": r(cfg.intermediate_size, width), b + "mlp.fc1.bias": r(cfg.intermediate_size),
            b + "mlp.fc2.weight": r(width, cfg.intermediate_size), b + "mlp.fc2.bias": r(width),
        })
    return state


def test_eva_import_fuses_biases_and_interpolates_once(tiny_model, tmp_path):
    """Our 448-px model with positions interpolated at load time computes what the
    224-px model computes when it interpolates on the fly (the reference's semantics)."""
    base = tiny(vocab_size=len(tiny_model.tokenizer))
    config = replace(base, global_vision={**base.global_vision, "image_size": 448})
    model = EmotionLlama(config, tokenizer=tiny_model.tokenizer)
    at_224 = Blip2VisionModel(tiny().global_vision_config()).eval()
    lavis = lavis_eva_state(at_224)
    torch.save(lavis, tmp_path / "eva_vit_g.pth")
    load_global_vision(model, str(tmp_path / "eva_vit_g.pth"))

    hf = eva_lavis_to_hf(lavis)
    q, v = lavis["blocks.0.attn.q_bias"], lavis["blocks.0.attn.v_bias"]
    assert torch.equal(hf["encoder.layers.0.self_attn.qkv.bias"], torch.cat([q, torch.zeros_like(q), v]))
    vit = model.encoders.global_frame.vit.eval()
    assert vit.embeddings.position_embedding.shape[1] == 32 * 32 + 1

    at_224.load_state_dict(hf, strict=False)
    pixels = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        expected = at_224.encoder(at_224.embeddings(pixels, interpolate_pos_encoding=True)).last_hidden_state
        ours = vit(pixel_values=pixels).last_hidden_state
        with_ln = model.encoders.global_frame(pixels)
    assert torch.allclose(ours, expected, atol=1e-5)
    # No BLIP-2 post_layernorm; ln_vision is a plain LayerNorm, eps 1e-5, unit weight, zero bias.
    assert torch.allclose(with_ln, F.layer_norm(expected, (expected.shape[-1],), eps=1e-5), atol=1e-5)


def test_interpolation_is_identity_at_the_trained_size():
    pos = torch.randn(1, 257, 8)
    assert torch.equal(interpolate_position_embedding(pos, 16), pos)
    assert interpolate_position_embedding(pos, 32).shape == (1, 1025, 8)


def test_official_loader_assembles_every_part_from_local_folders(tiny_model, tmp_path, monkeypatch):
    """The real loading path (``load_official``), fed tiny local folders instead of the Hub."""
    from transformers import HubertModel, LlamaForCausalLM, VideoMAEModel, ViTMAEModel

    from emotion_llama.checkpoints import load_official
    from emotion_llama.config import WeightSources

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = tiny(vocab_size=len(tiny_model.tokenizer))
    torch.manual_seed(11)
    folders = {}
    for name, cls, sub in [("llm", LlamaForCausalLM, cfg.llm_config()), ("face", ViTMAEModel, cfg.face_config()),
                           ("temporal", VideoMAEModel, cfg.temporal_config()), ("audio", HubertModel, cfg.audio_config())]:
        folders[name] = tmp_path / name
        cls(sub).save_pretrained(folders[name])
    tiny_model.tokenizer.save_pretrained(folders["llm"])
    torch.save(lavis_eva_state(Blip2VisionModel(cfg.global_vision_config())), tmp_path / "eva_vit_g.pth")
    reference = reference_state(fresh_tiny(tiny_model.tokenizer))
    torch.save({"model": reference}, tmp_path / "Emoation_LLaMA.pth")
    sources = WeightSources(llm=str(folders["llm"]), global_vision=str(tmp_path / "eva_vit_g.pth"),
                            face=str(folders["face"]), temporal=str(folders["temporal"]), audio=str(folders["audio"]),
                            checkpoint=str(tmp_path / "Emoation_LLaMA.pth"))

    model = load_official(device="cpu", dtype=torch.float32, config=replace(cfg, sources=sources))
    assert not any(p.is_meta for p in model.parameters())
    saved_llm = LlamaForCausalLM.from_pretrained(folders["llm"])
    q_key = "model.layers.0.self_attn.q_proj.weight"
    ours = model.llama_model.get_base_model().state_dict()["model.layers.0.self_attn.q_proj.base_layer.weight"]
    assert torch.equal(ours, saved_llm.state_dict()[q_key])
    assert torch.equal(model.llama_proj.weight, reference["llama_proj.weight"])
    ln = model.encoders.global_frame.ln_vision
    assert torch.equal(ln.weight, torch.ones_like(ln.weight)) and torch.equal(ln.bias, torch.zeros_like(ln.bias))
    assert model.tokenizer.pad_token == "$$"
    with torch.no_grad():
        seq = model.assemble(first_turn(user_turn("emotion", subtitle="hi")), model.project(model.encode(_clip())))
        assert torch.isfinite(model.llama_model(inputs_embeds=seq.inputs_embeds).logits).all()


def _clip():
    import numpy as np

    from emotion_llama.clip import PreparedClip

    rng = np.random.default_rng(0)
    return PreparedClip(global_frame=rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), global_frame_time=0.0,
                        face_crops=rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8),
                        face_sequence=rng.integers(0, 255, (4, 64, 64, 3), dtype=np.uint8),
                        audio=rng.standard_normal(8000).astype(np.float32))


def test_unreachable_source_gives_an_actionable_message(tmp_path, monkeypatch):
    from emotion_llama.checkpoints import load_official
    from emotion_llama.config import WeightSources
    from emotion_llama.errors import WeightsUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = replace(tiny(), sources=WeightSources(llm="meta-llama/Llama-2-7b-chat-hf"))
    with pytest.raises(WeightsUnavailableError, match="meta-llama/Llama-2-7b-chat-hf") as info:
        load_official(device="cpu", dtype=torch.float32, config=cfg)
    assert "environment variable" in str(info.value) or "HF_TOKEN" in str(info.value)


def test_encoder_fingerprint_follows_the_encoders_only(tiny_model, tmp_path):
    """Cached features are filed under this hash: it must change when any encoder does,
    survive a save and load, and ignore the adapters and LoRA that tuning changes."""
    same = from_pretrained(save_pretrained(tiny_model, tmp_path / "copy"))
    assert same.encoder_fingerprint() == tiny_model.encoder_fingerprint()
    with torch.no_grad():
        same.llama_proj.weight.add_(1.0)
    assert same.encoder_fingerprint() == tiny_model.encoder_fingerprint()
    with torch.no_grad():
        same.encoders.audio.hubert.encoder.layers[0].attention.q_proj.weight[0, 0] += 1.0
    assert same.encoder_fingerprint() != tiny_model.encoder_fingerprint()
