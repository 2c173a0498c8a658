"""Time of one instruction-tuning step (forward and backward of a batch), four ways, on the
same batches in one process:

- ``padded whole``: the batch padded to its longest sequence, LoRA dropout 0.05 (the v8 recipe);
- ``two length groups``: the sequences run shortest first in two groups, each padded to its
  own longest (``tuning.instruction_loss(by_length=True)``), dropout 0.05;
- ``no LoRA dropout``: padded whole, LoRA dropout off (an identity, as peft makes it at 0);
- ``both``: two length groups and no LoRA dropout (the v9 recipe).

Needs a training run's work folder (``train`` writes it): the model after language
pretraining (``stages/language``) and the extracted features (``cache/``).

Run from the repository root:
``python benchmarks/bench_tuning_step.py runs/tiny runs/corpus [--steps 30] [--stage fine]``.
Prints each way's median seconds a step and its ratio to the first.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from torch import nn

from emotion_llama.checkpoints import from_pretrained
from emotion_llama.data.merr import load_annotations
from emotion_llama.training.cache import RunCache
from emotion_llama.training.coarse_tuning import COARSE_TUNING, LABEL_SHARE
from emotion_llama.training.common import InputDropout
from emotion_llama.training.fine_tuning import FINE_TUNING
from emotion_llama.training.tuning import (
    conversation,
    instruction_loss,
    trainable_parameters,
    tuning_samples,
    with_dropout,
)

STAGES = {"coarse": (COARSE_TUNING, LABEL_SHARE), "fine": (FINE_TUNING, 0.3)}


def batches(samples, stage, label_share: float, steps: int, seed: int = 0) -> list:
    """``steps`` batches of 16 drawn as the tuning loop draws them (v8's dropout shares)."""
    rng, dropout, out = random.Random(seed), InputDropout(0.0, 0.2, 0.75), []
    for _ in range(steps):
        chosen = rng.sample(samples, 16)
        tasks = ["emotion" if rng.random() < label_share else "reason" for _ in chosen]
        inputs = [with_dropout(s, t, rng, dropout) for s, t in zip(chosen, tasks)]
        out.append(([conversation(s, t, rng, stage, w, 0.8) for s, t, (_, w) in zip(chosen, tasks, inputs)],
                    [e for e, _ in inputs]))
    return out


def set_lora_dropout(model, on: bool) -> None:
    for module in model.llama_model.modules():
        if hasattr(module, "lora_dropout"):
            module.lora_dropout["default"] = nn.Dropout(0.05) if on else nn.Identity()


def seconds_per_step(model, params, work: list, by_length: bool) -> float:
    times = []
    for pieces, encoded in work:
        start = time.perf_counter()
        loss = instruction_loss(model, pieces, [model.project(e) for e in encoded], by_length=by_length)
        for p in params:
            p.grad = None
        loss.backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work")
    parser.add_argument("corpus")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--stage", choices=sorted(STAGES), default="coarse")
    args = parser.parse_args()
    annotations = [a for a in load_annotations(args.corpus) if a.split in (None, "train", "val")]
    samples = tuning_samples(annotations, RunCache(f"{args.work}/cache"))
    model = from_pretrained(f"{args.work}/stages/language")
    params = trainable_parameters(model)
    model.train()
    work = batches(samples, *STAGES[args.stage], steps=args.steps)
    ways = {"padded whole": (True, False), "two length groups": (True, True),
            "no LoRA dropout": (False, False), "both": (False, True)}
    seconds_per_step(model, params, work[:3], False)  # warm-up
    base = None
    print(f"{args.stage} tuning, {args.steps} steps of 16, {torch.get_num_threads()} threads")
    for name, (dropout, by_length) in ways.items():
        set_lora_dropout(model, dropout)
        median = seconds_per_step(model, params, work, by_length)
        base = base or median
        print(f"{name:>18}: {median:.3f} s a step, {median / base:.2f} of padded whole")


if __name__ == "__main__":
    main()
