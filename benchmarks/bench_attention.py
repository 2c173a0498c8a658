"""Peak memory and time of the attention explanation: all layers' maps vs one layer at a time.

Run from the repository root: ``python benchmarks/bench_attention.py [--repeats 5]``.

Model: a mid-size random LLaMA (8 layers, width 512, 8 heads, vocabulary 32,000) with
LoRA on q/v as in the official preset (r 64), inside an ``EmotionLlama`` whose encoders
are the tiny preset's (they do not run here). Sequence: 2,000 positions laid out like a
prompt (BOS, template, 256 visual tokens, face / temporal / audio / CLS, subtitle,
instruction) whose last 200 are the answer.

Passes, each timed and measured alone in a fresh process:

- ``plain``: one forward pass of the LLM with its own attention (sdpa), no explanation:
  what any forward over the sequence costs;
- ``old``: the explanation as it was: ``model.full_attention_maps`` (eager attention,
  ``output_attentions=True``, every layer's heads x L x L map held at once), then shares
  and heatmap from the stacked maps;
- ``new``: ``explain.explain_answer``: the rows pass (sdpa output; answer rows scored and
  reduced layer by layer).

How memory is measured: CPU tensors have no allocator statistics, so each child process
builds the model and the sequence, then writes ``5`` to ``/proc/self/clear_refs`` (Linux:
resets the peak resident set, ``VmHWM``, to the current one), reads ``VmRSS``, runs the
pass, and reads ``VmHWM``. The pass's peak extra memory is ``VmHWM - VmRSS before``: what
the pass added on top of the loaded model, whatever it freed before returning. Without
``clear_refs`` (not Linux) the child falls back to ``ru_maxrss``, which then also counts
the peak of loading; the output says which was used. Figures are medians over the
repeats; the ``one layer`` figure is heads x L x L x 4 bytes (one layer's float32 map).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MiB = 2**20
LAYERS, WIDTH, HEADS, VOCAB = 8, 512, 8, 32_000
PASSES = ("plain", "old", "new")


def build(length: int, answer: int):
    """The mid-size model and a prompt + answer sequence of ``length`` positions."""
    import torch

    from emotion_llama.config import LoraSettings, tiny
    from emotion_llama.model import EmotionLlama
    from emotion_llama.processor import AssembledSequence, Span

    config = tiny(vocab_size=VOCAB)
    config = replace(
        config,
        global_vision={**config.global_vision, "image_size": 448},  # 256 visual tokens, as official
        llm={**config.llm, "hidden_size": WIDTH, "intermediate_size": 1376, "num_hidden_layers": LAYERS,
             "num_attention_heads": HEADS, "num_key_value_heads": HEADS, "max_position_embeddings": 4096},
        lora=LoraSettings(r=64, alpha=16, dropout=0.05),
    )
    torch.manual_seed(0)
    model = EmotionLlama(config).eval()
    prompt = [("bos", 1), ("template", 8), ("visual", config.num_visual_tokens), ("face", 1), ("temporal", 1),
              ("audio", 1), ("cls", 1), ("template", 4)]
    used = sum(n for _, n in prompt)
    subtitle = (length - answer - used - 40) // 2
    prompt += [("subtitle", subtitle), ("instruction", length - answer - used - subtitle - 6), ("template", 6),
               ("answer", answer)]
    spans, start = [], 0
    for kind, size in prompt:
        spans.append(Span(kind, start, start + size))
        start += size
    ids = torch.randint(3, VOCAB, (1, length))
    with torch.no_grad():
        embeds = model.llama_model.get_input_embeddings()(ids)
    return model, AssembledSequence(embeds, ids[0].tolist(), spans)


def run_pass(name: str, model, sequence):
    """Run one pass; returns (span shares, heatmap) or None for ``plain``."""
    import torch

    from emotion_llama.explain import AnswerAttention, explain_answer, visual_heatmap
    from emotion_llama.model import full_attention_maps

    if name == "plain":
        with torch.no_grad():
            model.llama_model.get_base_model().model(inputs_embeds=sequence.inputs_embeds, use_cache=False)
        return None
    if name == "old":  # what explain_answer did before: every layer's map, then shares and heatmap
        tally = AnswerAttention.of_maps(full_attention_maps(model, sequence), sequence.kind_at())
        config = model.config
        heat = visual_heatmap(tally.weights_of("visual"), config.visual_grid, config.global_vision["patch_size"])
        return tally.span_shares(), heat
    explanation = explain_answer(model, sequence)
    return explanation.span_shares, explanation.heatmap


def memory_status() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            key, value = line.split(":")
            fields[key] = int(value.split()[0]) * 1024
    return fields


def reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(name: str, length: int, answer: int) -> None:
    """Build, then measure one pass; prints one JSON line."""
    import gc

    model, sequence = build(length, answer)
    gc.collect()
    exact = reset_peak()
    before = memory_status()["VmRSS"] if exact else 0
    start = time.perf_counter()
    result = run_pass(name, model, sequence)
    seconds = time.perf_counter() - start
    peak = memory_status()["VmHWM"] if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    shares, heat = result or (None, None)
    cells = None if heat is None else heat[::14, ::56].tolist()  # one value per 1 x 4-patch cell
    print(json.dumps({"extra": peak - before, "seconds": seconds, "exact": exact, "shares": shares, "cells": cells}))


def measure(name: str, length: int, answer: int) -> dict:
    command = [sys.executable, __file__, "--child", name, "--length", str(length), "--answer", str(answer)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--answer", type=int, default=200)
    parser.add_argument("--child", choices=PASSES)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.length, args.answer)
        return
    runs = {name: [measure(name, args.length, args.answer) for _ in range(args.repeats)] for name in PASSES}
    report(runs, args)


def report(runs: dict[str, list[dict]], args) -> None:
    from emotion_llama.model import ROWS_PER_BLOCK

    one_layer = HEADS * args.length * args.length * 4
    extra = {name: statistics.median(r["extra"] for r in rs) for name, rs in runs.items()}
    seconds = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    how = "VmHWM after clear_refs" if all(r["exact"] for rs in runs.values() for r in rs) else "ru_maxrss (includes load)"
    old_shares, new_shares = runs["old"][0]["shares"], runs["new"][0]["shares"]
    print(f"model: {LAYERS} layers, width {WIDTH}, {HEADS} heads, vocabulary {VOCAB:,}, LoRA r 64 on q/v")
    print(f"sequence: {args.length} positions, last {args.answer} the answer; medians of {args.repeats} fresh processes")
    print(f"memory measured as: {how}, minus VmRSS before the pass")
    block = HEADS * min(args.answer, ROWS_PER_BLOCK) * args.length * 4
    print(f"one layer's attention map (heads x L x L x 4 B): {one_layer / MiB:8.1f} MiB")
    print(f"one block of answer rows (heads x {ROWS_PER_BLOCK} x L x 4 B): {block / MiB:8.1f} MiB (scores, softmax: a few)")
    for name, label in (("plain", "plain forward (sdpa, no explanation)"), ("old", "old pass (all layers' maps)"),
                        ("new", "new pass (one layer at a time)")):
        each = ", ".join(f"{r['extra'] / MiB:.0f}" for r in runs[name])
        print(f"{label:38s} peak extra {extra[name] / MiB:8.1f} MiB   time {seconds[name]:6.2f} s   (runs: {each} MiB)")
    print(f"ratio new / one layer:              {extra['new'] / one_layer:6.3f}  (target <= 1.5)")
    print(f"ratio (new - plain) / one layer:    {(extra['new'] - extra['plain']) / one_layer:6.3f}")
    print(f"ratio old / new:                    {extra['old'] / max(extra['new'], 1):6.1f}")
    old_cells, new_cells = runs["old"][0]["cells"], runs["new"][0]["cells"]
    cell_gap = max(abs(a - b) / abs(a) for ra, rb in zip(old_cells, new_cells) for a, b in zip(ra, rb))
    print(f"old vs new: largest share difference {max(abs(old_shares[k] - new_shares[k]) for k in old_shares):.1e},"
          f" largest relative heatmap difference {cell_gap:.1e}")


if __name__ == "__main__":
    main()
