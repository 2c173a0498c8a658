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
``python benchmarks/bench_tuning_step.py runs/tiny runs/corpus [--steps 30] [--stage fine]``;
the batches follow ``configs/tiny.json``'s shares (``--config`` for another recipe).
Prints each way's median seconds a step and its ratio to the first.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emotion_llama.checkpoints import from_pretrained
from emotion_llama.data.merr import load_annotations
from emotion_llama.training.cache import RunCache
from emotion_llama.training.coarse_tuning import COARSE_TUNING, LABEL_SHARE
from emotion_llama.training.common import TrainConfig
from emotion_llama.training.fine_tuning import FINE_TUNING
from emotion_llama.training.tuning import draw_batch, instruction_loss, trainable_parameters, tuning_samples


def batches(samples, config: TrainConfig, stage_name: str, steps: int) -> list:
    """``steps`` batches drawn as the recipe's tuning loop draws them (``config``'s shares)."""
    if stage_name == "coarse":
        stage, label_share, follow_up, size = COARSE_TUNING, LABEL_SHARE, 0.0, config.coarse_tuning.batch_size
    else:
        stage, label_share, follow_up = FINE_TUNING, config.fine_label_share, config.follow_up_share
        size = config.fine_tuning.batch_size
    rng = random.Random(config.seed)
    return [draw_batch(samples, rng, size, stage, label_share, config.input_dropout(), follow_up) for _ in range(steps)]


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
    parser.add_argument("--stage", choices=("coarse", "fine"), default="coarse")
    parser.add_argument("--config", default="configs/tiny.json", help="the recipe whose shares the batches follow")
    args = parser.parse_args()
    annotations = [a for a in load_annotations(args.corpus) if a.split in (None, "train", "val")]
    samples = tuning_samples(annotations, RunCache(f"{args.work}/cache"))
    model = from_pretrained(f"{args.work}/stages/language")
    params = trainable_parameters(model)
    model.train()
    work = batches(samples, TrainConfig.load(args.config), args.stage, args.steps)
    ways = {"padded whole": (True, False), "two length groups": (True, True),
            "no LoRA dropout": (False, False), "both": (False, True)}
    seconds_per_step(model, params, work[:3], False)  # warm-up
    base = None
    print(f"{args.stage} tuning, {args.steps} batches of {len(work[0][0])}, {torch.get_num_threads()} threads")
    for name, (dropout, by_length) in ways.items():
        set_lora_dropout(model, dropout)
        median = seconds_per_step(model, params, work, by_length)
        base = base or median
        print(f"{name:>18}: {median:.3f} s a step, {median / base:.2f} of padded whole")


if __name__ == "__main__":
    main()
