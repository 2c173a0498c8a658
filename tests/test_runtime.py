"""Runtime settings: precision, quantisation and compiled decoding, each refused with a clear
message where the machine cannot honour it, and static-cache decoding giving the same tokens."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from emotion_llama import runtime
from emotion_llama.analysis import AnalysisOptions
from emotion_llama.errors import ConfigError
from emotion_llama.model import generate_ids
from emotion_llama.pipeline import Engine, answer_prompt, load_engine
from emotion_llama.vocab import GenerationSettings


def test_defaults_are_fp32_unquantised_and_uncompiled_on_a_cpu(monkeypatch):
    for choice in runtime.RUNTIME.values():
        monkeypatch.delenv(choice.env, raising=False)
    assert runtime.llm_dtype("cpu") is torch.float32
    assert runtime.llm_dtype("cuda") is torch.float16
    assert runtime.quantization("cpu", torch.float32) is None
    assert not runtime.compiled_decoding("cpu") and runtime.compiled_decoding("cuda")
    monkeypatch.setenv(runtime.ZERO_GPU_ENV, "true")  # ZeroGPU cannot run torch.compile
    assert not runtime.compiled_decoding("cuda")


@pytest.mark.parametrize(("env", "value", "message"), [
    ("EMOTION_LLAMA_QUANT", "4bit", "needs a CUDA GPU (bitsandbytes)"),
    ("EMOTION_LLAMA_QUANT", "8bit", "needs a CUDA GPU (bitsandbytes)"),
    ("EMOTION_LLAMA_DTYPE", "fp16", "needs a CUDA GPU; on a CPU use fp32"),
    ("EMOTION_LLAMA_QUANT", "3bit", "must be one of none, 8bit, 4bit"),
    ("EMOTION_LLAMA_COMPILE", "maybe", "must be one of auto, on, off"),
])
def test_settings_the_machine_cannot_honour_are_refused_before_loading(monkeypatch, env, value, message):
    """Refused before the official weights are fetched (nothing is downloaded here)."""
    monkeypatch.setenv(env, value)
    monkeypatch.setattr("emotion_llama.checkpoints.load_official", lambda **kwargs: pytest.fail("loaded"))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_engine("official", device="cpu")


def test_quantisation_without_bitsandbytes_says_how_to_install_it(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_bitsandbytes(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setenv("EMOTION_LLAMA_QUANT", "4bit")
    monkeypatch.setattr(builtins, "__import__", no_bitsandbytes)
    with pytest.raises(ConfigError, match=r"emotion-llama\[quant\]"):
        runtime.quantization("cuda", torch.float16)


def test_static_cache_decoding_gives_the_same_tokens(tiny_model, prepared_clip):
    """On a CPU transformers does not compile, but the static cache path is the one a GPU runs."""
    engine = Engine(tiny_model, {})
    projected = tiny_model.project(engine.prepare(prepared_clip)[1])
    sequence = tiny_model.assemble(answer_prompt(AnalysisOptions(task="reason"), "happy", None), projected)
    settings = GenerationSettings(do_sample=False, max_new_tokens=24, min_new_tokens=24, max_context_tokens=600)
    sampled = replace(settings, do_sample=True, temperature=0.7, seed=11)  # a batch, as redrafts are
    dynamic = [generate_ids(tiny_model, sequence, settings), generate_ids(tiny_model, sequence, sampled, count=2)]
    tiny_model.static_decoding = True
    try:
        static = [generate_ids(tiny_model, sequence, settings), generate_ids(tiny_model, sequence, sampled, count=2)]
        again = tiny_model.generate(sequence, settings)  # a second request reuses the cache
    finally:
        tiny_model.static_decoding = False
    assert static == dynamic and again == dynamic[0][0]


def test_the_engine_reports_its_decoding(monkeypatch):
    monkeypatch.setenv("EMOTION_LLAMA_COMPILE", "on")
    engine = load_engine()
    assert engine.model.static_decoding and engine.info["decoding"] == "static cache, compiled"
    monkeypatch.setenv("EMOTION_LLAMA_COMPILE", "off")
    assert load_engine().info["decoding"] == "dynamic cache"
