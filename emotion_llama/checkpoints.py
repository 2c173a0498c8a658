"""Weights in and out: reference checkpoints, our own format, the official frozen parts.

- Reference ``.pth`` files (``Emoation_LLaMA.pth``, ``checkpoint_best.pth``,
  ``MER2024-best.pth``) hold ``{'model': state_dict, ...}`` with only the trainable
  tensors, LoRA named as peft 0.2.0 did (no adapter name). ``REFERENCE_KEY_MAP``
  is the explicit rename; ``attention.*`` (an unused fusion MLP) is ignored.
- They are read with ``torch.load(weights_only=True)``: a pickle that needs anything
  beyond tensors and plain containers is refused, so no code in it runs.
- Our format: ``config.json`` + ``model.safetensors`` + tokenizer files.
- The frozen parts of the ``official`` preset come from their own sources (local
  folders or the Hub, see ``config.WeightSources``).
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import EmotionLlamaConfig
from .errors import CheckpointError, WeightsUnavailableError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

# Reference (peft 0.2.0) LoRA names -> today's peft names, which carry the adapter name.
# The reference tunes q_proj and v_proj; any attention or MLP projection maps the same way.
_LORA_RE = re.compile(
    r"^(llama_model\.base_model\.model\.model\.layers\.\d+\.(?:self_attn|mlp)\.[a-z]+_proj\.lora_[AB])\.weight$"
)
ADAPTER_PREFIXES = ("llama_proj.", "cls_tk_llama_proj.", "feats_llama_proj1.", "feats_llama_proj2.", "feats_llama_proj3.")
IGNORED_PREFIXES = ("attention.",)


def reference_key_to_ours(key: str) -> str | None:
    """Explicit key map of reference checkpoints; None for keys inference ignores."""
    if key.startswith(IGNORED_PREFIXES):
        return None
    if key.startswith(ADAPTER_PREFIXES):
        return key
    match = _LORA_RE.match(key)
    if match:
        return f"{match.group(1)}.default.weight"
    return key  # unknown: reported as unexpected


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # trainable keys the file lacks
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.loaded)} tensors loaded, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.ignored)} ignored"
        )


def safe_torch_load(path: str | Path) -> dict:
    """Load a torch pickle without running code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path.name}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path.name} holds Python objects other than tensors, so it was refused unread "
            "(loading it could run code). Re-save only its state dict: "
            "torch.save({'model': ckpt['model']}, 'clean.pth') in a trusted environment."
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path.name} is not a readable torch checkpoint ({error.__class__.__name__})") from error


def load_reference_checkpoint(model, path: str | Path) -> LoadReport:
    """Import a reference ``.pth`` into ``model``'s adapters and LoRA.

    Raises ``CheckpointError`` on any shape mismatch; returns the report otherwise.
    """
    raw = safe_torch_load(path)
    state = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{Path(path).name} holds no state dict")
    return load_trainable_state(model, state, key_map=reference_key_to_ours)


def load_trainable_state(model, state: dict[str, torch.Tensor], key_map=reference_key_to_ours) -> LoadReport:
    report = LoadReport()
    ours = model.trainable_state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        target = key_map(key)
        if target is None:
            report.ignored.append(key)
        elif target not in ours:
            report.unexpected.append(key)
        elif tuple(tensor.shape) != tuple(ours[target].shape):
            report.mismatched.append(f"{key}: file {tuple(tensor.shape)} vs model {tuple(ours[target].shape)}")
        else:
            mapped[target] = tensor
    if report.mismatched:
        raise CheckpointError(
            "checkpoint does not fit this model (wrong preset?): " + "; ".join(report.mismatched[:3])
        )
    report.missing = sorted(set(ours) - set(mapped))
    report.loaded = sorted(mapped)
    model.load_state_dict(mapped, strict=False, assign=_on_meta(model))
    return report


def _on_meta(model) -> bool:
    return any(p.is_meta for p in model.parameters())


# -- our format ---------------------------------------------------------------------------
def save_pretrained(model, directory: str | Path, *, trainable_only: bool = False) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer to ``directory``."""
    model.check_unmerged("be saved")  # its base weights hold base + LoRA
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory / CONFIG_FILE)
    state = model.trainable_state_dict() if trainable_only else model.state_dict()
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(directory / WEIGHTS_FILE))
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(directory)
    return directory


def from_pretrained(directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """Load a model saved by ``save_pretrained`` (every tensor must be present)."""
    from transformers import PreTrainedTokenizerFast

    from .model import EmotionLlama

    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise WeightsUnavailableError(f"{directory.name}/{name} is missing: not an Emotion-LLaMA weights folder")
    config = EmotionLlamaConfig.load(directory / CONFIG_FILE)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    tokenizer.padding_side = "right"
    # Built for real (not on meta): non-persistent buffers such as rotary frequencies
    # are computed at construction and are not in the file.
    model = EmotionLlama(config, tokenizer=tokenizer)
    state = load_file(str(directory / WEIGHTS_FILE))
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise CheckpointError(f"{directory.name} lacks {len(missing)} tensors, e.g. {min(missing)}")
    model.load_state_dict(state, strict=True)
    model.to(device=device, dtype=dtype) if dtype else model.to(device)
    return model.eval()


# -- official frozen parts --------------------------------------------------------------
def _hub_error(source: str, error: Exception) -> WeightsUnavailableError:
    text = str(error)
    if "gated" in text.lower() or "401" in text or "403" in text:
        return WeightsUnavailableError(
            f"{source} is a gated repository: accept its licence on the Hugging Face Hub and set HF_TOKEN"
        )
    return WeightsUnavailableError(
        f"could not load {source}: not a local folder and not reachable on the Hub "
        f"({error.__class__.__name__}). Download it once and point the environment variable at the folder."
    )


def load_eva_state(source: str, *, token: str | None = None) -> dict[str, torch.Tensor]:
    """EVA ViT-g weights as ``Blip2VisionModel`` keys (without ``post_layernorm``).

    ``source`` is LAVIS's ``eva_vit_g.pth`` or an HF BLIP-2 folder / repository, whose
    ``vision_model.*`` tensors are the same frozen ViT.
    """
    path = Path(source)
    if path.suffix == ".pth":
        return eva_lavis_to_hf(safe_torch_load(path))
    try:
        from huggingface_hub import snapshot_download

        folder = path if path.is_dir() else Path(snapshot_download(source, allow_patterns=["*.safetensors", "*.json"], token=token))
    except Exception as error:  # any hub failure becomes one readable message
        raise _hub_error(source, error) from error
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        for key, tensor in load_file(str(shard)).items():
            if key.startswith("vision_model.") and ".post_layernorm." not in key:
                state[key.removeprefix("vision_model.")] = tensor
    if not state:
        raise WeightsUnavailableError(f"{source} holds no vision_model.* tensors")
    return state


def eva_lavis_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LAVIS ``eva_vit_g`` keys -> ``Blip2VisionModel`` keys; q/v biases fused as
    ``cat(q_bias, zeros, v_bias)`` (EVA has no key bias)."""
    out: dict[str, torch.Tensor] = {
        "embeddings.class_embedding": state["cls_token"],
        "embeddings.position_embedding": state["pos_embed"],
        "embeddings.patch_embedding.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embedding.bias": state["patch_embed.proj.bias"],
    }
    names = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.projection",
             "attn.qkv": "self_attn.qkv", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.")})
    for i in blocks:
        for old, new in names.items():
            for leaf in ("weight", "bias"):
                key = f"blocks.{i}.{old}.{leaf}"
                if key in state:
                    out[f"encoder.layers.{i}.{new}.{leaf}"] = state[key]
        q_bias, v_bias = state[f"blocks.{i}.attn.q_bias"], state[f"blocks.{i}.attn.v_bias"]
        out[f"encoder.layers.{i}.self_attn.qkv.bias"] = torch.cat([q_bias, torch.zeros_like(v_bias), v_bias])
    return out


def interpolate_position_embedding(position_embedding: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, 1 + g*g, w) -> (1, 1 + grid*grid, w): bicubic, ``align_corners=False``, once at
    load time as the reference does (16 x 16 at 224 px -> 32 x 32 at 448 px)."""
    cls, patches = position_embedding[:, :1], position_embedding[:, 1:]
    old = int(round(patches.shape[1] ** 0.5))
    if old == grid:
        return position_embedding
    width = patches.shape[-1]
    patches = patches.reshape(1, old, old, width).permute(0, 3, 1, 2).float()
    patches = torch.nn.functional.interpolate(patches, size=(grid, grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, width).to(position_embedding.dtype)
    return torch.cat([cls, patches], dim=1)


def load_global_vision(model, source: str, *, token: str | None = None) -> None:
    state = load_eva_state(source, token=token)
    key = "embeddings.position_embedding"
    state[key] = interpolate_position_embedding(state[key], model.config.patch_grid)
    vit = model.encoders.global_frame.vit
    result = vit.load_state_dict(state, strict=False, assign=_on_meta(vit))
    if result.missing_keys:
        raise CheckpointError(f"EVA weights from {source} lack {result.missing_keys[:3]}")


def load_official(
    *,
    device: str | torch.device = "cuda",
    dtype: torch.dtype = torch.float16,
    config: EmotionLlamaConfig | None = None,
    token: str | None = None,
    quantization=None,
):
    """Build the ``official`` preset from its published sources (local paths or the Hub); the
    skeleton is made on the meta device and every frozen part assigned from its source, so no
    random 7B model is ever allocated. ``quantization``: the LLM's ``BitsAndBytesConfig``, or None."""
    import os

    from transformers import HubertModel, LlamaForCausalLM, VideoMAEModel, ViTMAEModel

    from .config import official
    from .model import EmotionLlama
    from .tokenizer import load_llama_tokenizer

    config = config or official()
    sources = config.sources
    token = token or os.environ.get("HF_TOKEN")

    def fetch(cls, source: str, **kwargs):
        try:
            # Straight onto the target device: a 7B model never passes through host memory twice.
            return cls.from_pretrained(source, token=token, dtype=dtype, device_map=str(device), **kwargs)
        except Exception as error:  # gated, offline, missing: one clear message
            raise _hub_error(source, error) from error

    try:
        tokenizer = load_llama_tokenizer(sources.llm, token=token)
    except Exception as error:
        raise _hub_error(sources.llm, error) from error
    pretrained = {
        "face": fetch(ViTMAEModel, sources.face, mask_ratio=0.0),
        "temporal": fetch(VideoMAEModel, sources.temporal),
        "audio": fetch(HubertModel, sources.audio),
        "llm": fetch(LlamaForCausalLM, sources.llm, quantization_config=quantization),
    }
    # What no source provides yet (EVA, adapters, LoRA) starts on the meta device and is
    # assigned below; nothing random of the official size is ever allocated.
    with torch.device("meta"):
        model = EmotionLlama(config, tokenizer=tokenizer, pretrained=pretrained)
    load_global_vision(model, sources.global_vision, token=token)
    model.encoders.global_frame.vit.to(dtype)  # the reference runs the ViT in fp16 too
    ln = model.encoders.global_frame.ln_vision  # fresh and frozen in MiniGPT-v2: unit weight, zero bias
    ln.weight = torch.nn.Parameter(torch.ones(ln.normalized_shape), requires_grad=False)
    ln.bias = torch.nn.Parameter(torch.zeros(ln.normalized_shape), requires_grad=False)
    model.encoders.requires_grad_(False)
    if sources.checkpoint:
        load_reference_checkpoint(model, sources.checkpoint)
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if still_meta:
        raise WeightsUnavailableError(
            f"{len(still_meta)} tensors have no source (e.g. {still_meta[0]}): set EMOTION_LLAMA_CHECKPOINT "
            "to the Emotion-LLaMA .pth file"
        )
    return _placed(model, device, quantized=quantization is not None).eval()


def _placed(model, device: str | torch.device, quantized: bool):
    """``model`` on ``device``; a quantised LLM is placed when loaded and cannot be moved."""
    if not quantized:
        return model.to(device=device)
    for name, part in model.named_children():
        if name != "llama_model":
            part.to(device=device)
    return model

