"""How the model runs on the machine it finds: LLM precision, quantisation, compiled decoding.

Three environment settings, read when the weights are loaded (``pipeline.load_engine``):

- ``EMOTION_LLAMA_DTYPE``: ``auto`` (fp16 on a GPU, fp32 on a CPU), ``fp16``, ``bf16``, ``fp32``.
- ``EMOTION_LLAMA_QUANT``: ``none``, ``8bit`` or ``4bit``: the LLM's linear layers quantised by
  bitsandbytes (``pip install "emotion-llama[quant]"``), on a CUDA GPU only. The encoders stay
  in half precision and the LoRA stays a separate (unmerged) layer over the quantised weights.
- ``EMOTION_LLAMA_COMPILE``: ``auto`` (on with CUDA, except on ZeroGPU, which cannot run
  ``torch.compile``), ``on``, ``off``: decoding with a static KV cache sized for the whole
  context, which transformers compiles (CUDA graphs) on the first answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class Choice:
    env: str
    default: str
    choices: tuple[str, ...]
    what: str


RUNTIME: dict[str, Choice] = {
    "dtype": Choice("EMOTION_LLAMA_DTYPE", "auto", ("auto", "fp16", "bf16", "fp32"),
                    "the LLM's precision (auto: fp16 on a GPU, fp32 on a CPU)"),
    "quant": Choice("EMOTION_LLAMA_QUANT", "none", ("none", "8bit", "4bit"),
                    "the LLM's weights quantised by bitsandbytes (CUDA only, optional extra)"),
    "compile": Choice("EMOTION_LLAMA_COMPILE", "auto", ("auto", "on", "off"),
                      "static KV cache and compiled decoding (auto: on with CUDA, off on ZeroGPU)"),
}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
ZERO_GPU_ENV = "SPACES_ZERO_GPU"  # set by Hugging Face on ZeroGPU Spaces


def choice(name: str) -> str:
    """The value of runtime setting ``name``, checked against its choices."""
    setting = RUNTIME[name]
    value = os.environ.get(setting.env, "").strip().lower() or setting.default
    if value not in setting.choices:
        raise ConfigError(f"{setting.env} must be one of {', '.join(setting.choices)} ({setting.what}), "
                          f"not {value!r}")
    return value


def on_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def llm_dtype(device: str | torch.device) -> torch.dtype:
    """The LLM's dtype on ``device``. Half precision on a CPU is refused: it is slow there."""
    value = choice("dtype")
    if value == "auto":
        return torch.float16 if on_cuda(device) else torch.float32
    if value != "fp32" and not on_cuda(device):
        raise ConfigError(f"EMOTION_LLAMA_DTYPE={value} needs a CUDA GPU; on a CPU use fp32 (or auto)")
    return DTYPES[value]


def quantization(device: str | torch.device, compute_dtype: torch.dtype):
    """transformers' ``BitsAndBytesConfig`` for ``EMOTION_LLAMA_QUANT``, or None for ``none``."""
    value = choice("quant")
    if value == "none":
        return None
    if not on_cuda(device):
        raise ConfigError(f"EMOTION_LLAMA_QUANT={value} needs a CUDA GPU (bitsandbytes); this machine runs on "
                          f"{torch.device(device).type}. Unset it to run unquantised.")
    try:
        import bitsandbytes  # noqa: F401 - only to fail early with a clear message
    except ImportError:
        raise ConfigError(f"EMOTION_LLAMA_QUANT={value} needs bitsandbytes: "
                          'pip install "emotion-llama[quant]" (or pip install bitsandbytes)') from None
    from transformers import BitsAndBytesConfig

    if value == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                              bnb_4bit_use_double_quant=True)


def compiled_decoding(device: str | torch.device) -> bool:
    """Whether answers are decoded with a static KV cache that transformers compiles."""
    value = choice("compile")
    if value == "auto":
        return on_cuda(device) and not os.environ.get(ZERO_GPU_ENV)
    return value == "on"
