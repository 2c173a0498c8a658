"""One encoder's pretraining under several settings and initial weights: held-out accuracy.

Run from the repository root on a training corpus (it is decoded into WORK/cache first,
as ``train`` would, and reused by a later ``train`` with the same work folder), e.g.::

    python benchmarks/encoder_variants.py --corpus runs/corpus --work runs/tiny --modality face \\
        --variants '{"15 epochs": {"epochs": 15}, "30 epochs": {"epochs": 30}}' --inits 0 1

Each variant is trained from each initialisation (the encoder's weights drawn after
``torch.manual_seed(init)``), two at a time, one thread each, through the recipe's own
``encoder_pretraining._pretrain_encoder``. A variant's keys: ``epochs``, ``lr``, ``batch``,
``frames`` (face crops per clip in a training step).
Printed: the accuracy on the training batches (last fifth) and on the ``val`` clips, and
the seconds each took. The model card's "What was tried" figures come from this.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emotion_llama.config import preset  # after the path is set
from emotion_llama.data.merr import load_annotations
from emotion_llama.training import encoder_pretraining
from emotion_llama.training.cache import RunCache
from emotion_llama.training.common import StageSettings
from emotion_llama.training.decoding import decode_clips
from emotion_llama.training.language_pretraining import untrained_model


def train_one(job_and_tag):
    job, tag = job_and_tag
    torch.set_num_threads(1)
    start = time.perf_counter()
    _, _, accuracy = encoder_pretraining._pretrain_encoder(job)
    return tag, accuracy, round(time.perf_counter() - start)


def jobs(args, annotations, cache) -> list:
    out = []
    for init in args.inits:
        torch.manual_seed(init)
        model = untrained_model(annotations[:200], "tiny", 512)  # the tokenizer's size does not touch the encoders
        for name, variant in json.loads(args.variants).items():
            settings = StageSettings(epochs=variant.get("epochs", 15), lr=variant.get("lr", 3e-3),
                                     batch_size=variant.get("batch", 32))
            job = encoder_pretraining._job(model, args.modality, annotations, cache, settings, 0, 0.0,
                                           variant.get("frames", 0))
            out.append((job, f"{name}, init {init}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--modality", choices=encoder_pretraining.TRAINING_ORDER, default="face")
    parser.add_argument("--variants", required=True, help="JSON: name -> settings")
    parser.add_argument("--inits", nargs="+", type=int, default=[0])
    args = parser.parse_args()
    corpus = Path(args.corpus)
    annotations = [a for a in load_annotations(corpus) if a.split in (None, "train", "val")]
    cache = RunCache(Path(args.work) / "cache")
    decode_clips(annotations, corpus, cache, preset("tiny"), 2, 1.15, 0.3)  # configs/tiny.json's face search
    annotations = [a for a in annotations if cache.has_clip(a.name)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        for tag, accuracy, seconds in pool.map(train_one, jobs(args, annotations, cache), chunksize=1):
            print(f"{tag}: train {accuracy['train']}, held out {accuracy['val']} ({seconds} s)", flush=True)


if __name__ == "__main__":
    main()
