"""The official-size stack (random weights) on a GPU: decode speed, waits and memory per mode.

Run on a CUDA machine from the repository root::

    python benchmarks/bench_official_gpu.py                 # fp16 and 4-bit, one process each
    python benchmarks/bench_official_gpu.py --modes fp16 --tokens 200 --repeats 3
    python benchmarks/bench_official_gpu.py --preset tiny   # a dry run of the script on a CPU

Weights are random (nothing is downloaded), so answers are noise; shapes, dtypes, memory and
timings are those of the real 7B stack. The model is built as ``load_engine`` builds the
official one: LoRA merged (fp16) or left apart over a bitsandbytes LLM (4-bit, loaded with
``runtime.quantization``'s config from a random checkpoint written to a temporary folder),
and decoding compiled with a static cache when ``runtime.compiled_decoding`` says so.

Figures per mode (medians of ``--repeats`` runs after one warm-up, which also compiles):
``decode_tokens_per_s`` ((200-token generation - 1-token generation) / 199 tokens),
``time_to_first_token_s`` (a 5-s clip: encoding, label scoring, prefill, first token, as the
page streams it), ``reasoning_analysis_s`` (the whole analysis with a 200-token reasoning and
the attention pass), ``label_scoring_s``, ``attention_s``, ``peak_gib`` (most GPU memory
allocated during the runs, weights included). Targets (issue 14): fp16 >= 150 tokens/s,
first token <= 0.5 s, reasoning analysis <= 3 s, peak <= 17 GB; 4-bit peak <= 8 GB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emotion_llama import runtime
from emotion_llama.analysis import AnalysisOptions
from emotion_llama.clip import PreparedClip, Subtitle
from emotion_llama.config import official, tiny
from emotion_llama.model import EmotionLlama
from emotion_llama.pipeline import Engine, answer_prompt
from emotion_llama.tokenizer import train_tokenizer
from emotion_llama.vocab import MERR_LABELS, GenerationSettings

MODES = ("fp16", "4bit")


def random_clip(seconds: float = 5.0, seed: int = 0) -> PreparedClip:
    rng = np.random.default_rng(seed)
    return PreparedClip(
        global_frame=rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8), global_frame_time=1.0,
        face_crops=rng.integers(0, 255, (8, 224, 224, 3), dtype=np.uint8),
        face_sequence=rng.integers(0, 255, (16, 224, 224, 3), dtype=np.uint8),
        audio=rng.standard_normal(int(16000 * seconds)).astype(np.float32),
        subtitle=Subtitle("Oh no, my phone and wallet are all in my bag.", "user"), duration=seconds,
    )


def llama_sized_tokenizer():
    """A 32,000-token vocabulary like LLaMA's, so every id the random LLM emits decodes."""
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    words = ["".join(rng.choice(letters, rng.integers(2, 12))) for _ in range(60000)]
    return train_tokenizer([" ".join(words[i : i + 50]) for i in range(0, len(words), 50)], vocab_size=32000)


def build(preset: str, mode: str, device: str) -> EmotionLlama:
    """The random model as ``load_engine`` would run it in ``mode``."""
    config = official() if preset == "official" else tiny(vocab_size=32000)
    dtype = torch.float16 if device == "cuda" else torch.float32
    pretrained = {"llm": quantised_random_llm(config, device, dtype)} if mode == "4bit" else {}
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = EmotionLlama(config, tokenizer=llama_sized_tokenizer(), pretrained=pretrained).eval()
    torch.set_default_dtype(torch.float32)
    model.encoders.global_frame.ln_vision.float()
    if mode != "4bit":
        model.merge_lora()
    model.static_decoding = runtime.compiled_decoding(device)
    return model


def quantised_random_llm(config, device: str, dtype: torch.dtype):
    """A random LLaMA of the preset's size, written to disk and loaded back through
    bitsandbytes with the config ``EMOTION_LLAMA_QUANT=4bit`` gives."""
    import os

    from transformers import LlamaForCausalLM

    os.environ["EMOTION_LLAMA_QUANT"] = "4bit"
    quantization = runtime.quantization(device, dtype)  # refuses a CPU, with the reason
    with tempfile.TemporaryDirectory() as folder:
        with torch.device(device):
            LlamaForCausalLM(config.llm_config()).to(dtype).save_pretrained(folder)
        torch.cuda.empty_cache()
        return LlamaForCausalLM.from_pretrained(folder, dtype=dtype, quantization_config=quantization,
                                                device_map=device)


def timed(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def first_token_s(engine: Engine, clip: PreparedClip, options: AnalysisOptions, sync) -> float:
    """Seconds from a decoded 5-s clip to the first streamed piece of the answer."""
    sync()
    start = time.perf_counter()
    events = engine.analyze_iter(clip, options=options)
    for event in events:
        if getattr(event, "kind", None) == "text":
            break
    sync()
    seconds = time.perf_counter() - start
    events.close()
    return seconds


def one_run(engine: Engine, clip: PreparedClip, tokens: int, sync) -> dict[str, float]:
    model = engine.model
    settings = GenerationSettings(do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens)
    options = AnalysisOptions(task="reason", labels=MERR_LABELS, generation=settings, reasoning_redrafts=0)
    projected = model.project(engine.prepare(clip, options=options)[1])
    sequence = model.assemble(answer_prompt(options, "happy", clip.subtitle.text), projected)
    short = GenerationSettings(do_sample=False, max_new_tokens=1, min_new_tokens=1)
    whole, single = (timed(lambda s=s: model.generate(sequence, s), sync) for s in (settings, short))
    started = time.perf_counter()
    analysis = engine.analyze(clip, options=options)
    sync()
    return {"decode_tokens_per_s": (tokens - 1) / max(whole - single, 1e-9),
            "time_to_first_token_s": first_token_s(engine, clip, options, sync),
            "reasoning_analysis_s": time.perf_counter() - started,
            "label_scoring_s": analysis.timings["label_probabilities"],
            "attention_s": analysis.timings.get("attention", 0.0), "generate_s": analysis.timings["generate"]}


def measure(preset: str, mode: str, tokens: int, repeats: int) -> dict:
    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    started = time.perf_counter()
    model = build(preset, mode, device)
    built_s = time.perf_counter() - started
    engine, clip = Engine(model, {"weights": f"{preset} (random)"}), random_clip()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    runs = [one_run(engine, clip, tokens, sync) for _ in range(repeats + 1)][1:]  # the first warms up
    return {
        "mode": mode, "preset": preset, "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "torch": torch.__version__, "static_decoding": model.static_decoding, "build_s": round(built_s, 1),
        "parameters": sum(p.numel() for p in model.parameters()), "tokens": tokens, "repeats": repeats,
        **{key: round(statistics.median(run[key] for run in runs), 4) for key in runs[0]},
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if on_gpu else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: fp16, 4bit")
    parser.add_argument("--preset", choices=("official", "tiny"), default="official", help="tiny: a CPU dry run")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process measuring one mode
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.preset, args.one, args.tokens, args.repeats)))
        return
    results = []
    for mode in args.modes.split(","):  # one process per mode, so each peak is its own
        child = subprocess.run([sys.executable, __file__, "--one", mode, "--preset", args.preset, "--tokens",
                                str(args.tokens), "--repeats", str(args.repeats)], check=False, capture_output=True,
                               text=True)
        lines = child.stdout.strip().splitlines()
        results.append(json.loads(lines[-1]) if child.returncode == 0 and lines
                       else {"mode": mode, "error": child.stderr.strip().splitlines()[-1:]})
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
