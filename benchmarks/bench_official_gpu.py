"""Time the official-size stack (random weights) on a GPU: one analysis, stage by stage.

Run on a CUDA machine: ``python benchmarks/bench_official_gpu.py [--repeats 3]``.
Weights are random (nothing is downloaded), so the answers are noise; the shapes,
dtypes, memory and timings are those of the real 7B stack at fp16.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from emotion_llama.clip import PreparedClip, Subtitle
from emotion_llama.config import official, tiny
from emotion_llama.model import EmotionLlama
from emotion_llama.pipeline import AnalysisOptions, Engine
from emotion_llama.prompts import first_turn
from emotion_llama.tokenizer import train_tokenizer
from emotion_llama.vocab import MERR_LABELS, GenerationSettings


def random_clip(seed: int = 0) -> PreparedClip:
    rng = np.random.default_rng(seed)
    return PreparedClip(
        global_frame=rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8),
        global_frame_time=1.0,
        face_crops=rng.integers(0, 255, (8, 224, 224, 3), dtype=np.uint8),
        face_sequence=rng.integers(0, 255, (16, 224, 224, 3), dtype=np.uint8),
        audio=rng.standard_normal(16000 * 5).astype(np.float32),
        subtitle=Subtitle("Oh no, my phone and wallet are all in my bag.", "user"),
        duration=5.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--preset", choices=("official", "tiny"), default="official", help="tiny: a CPU dry run")
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    config = official() if args.preset == "official" else tiny(vocab_size=32000)

    # A 32,000-token vocabulary like LLaMA's, so every id the random LLM emits decodes.
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    words = ["".join(rng.choice(letters, rng.integers(2, 12))) for _ in range(60000)]
    tokenizer = train_tokenizer([" ".join(words[i : i + 50]) for i in range(0, len(words), 50)], vocab_size=32000)
    assert len(tokenizer) == 32000, len(tokenizer)
    start = time.perf_counter()
    torch.set_default_dtype(torch.float16 if on_gpu else torch.float32)
    with torch.device(device):
        model = EmotionLlama(config, tokenizer=tokenizer).eval()
    torch.set_default_dtype(torch.float32)
    model.encoders.global_frame.ln_vision.float()
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    sync()
    build_s = time.perf_counter() - start
    engine = Engine(model, {"weights": f"{args.preset} (random)", "device": device, "dtype": str(model.llm_dtype)})
    clip = random_clip()
    settings = GenerationSettings(do_sample=False, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    options = AnalysisOptions(task="reason", labels=MERR_LABELS, generation=settings)

    runs: list[dict[str, float]] = []
    for i in range(args.repeats + 1):  # the first run warms up kernels
        sync()
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        analysis = engine.analyze(clip, options=options)
        sync()
        total = time.perf_counter() - start
        n_tokens = len(tokenizer(analysis.answer, add_special_tokens=False)["input_ids"])
        timings = dict(analysis.timings, total=total, answer_tokens=n_tokens,
                       peak_gib=torch.cuda.max_memory_allocated() / 2**30 if on_gpu else 0.0)
        if i:
            runs.append(timings)
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(json.dumps({
        "device": torch.cuda.get_device_name() if on_gpu else "cpu",
        "torch": torch.__version__,
        "build_seconds": round(build_s, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "medians": {k: round(v, 4) for k, v in medians.items()},
        "generate_tokens_per_s": round(medians["answer_tokens"] / medians["generate"], 1),
        "span_attention_sum": round(sum(analysis.span_attention.values()), 6),
        "probabilities_sum": round(sum(analysis.probabilities.values()), 6),
        "visual_tokens": model.assemble(first_turn([]), model.project(model.encode(clip))).kind_at().count("visual"),
    }, indent=2))


if __name__ == "__main__":
    main()
