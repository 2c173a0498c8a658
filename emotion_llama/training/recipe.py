"""The recipe: every stage in order over one ``TrainConfig``, each skipped when its result
is already in the work folder, so an interrupted run resumes where it stopped.

Work folder: ``cache/`` (decoded clips and features, ``RunCache``), ``stages/encoders``,
``stages/language``, ``stages/coarse_tuning``, ``stages/fine_tuning`` (the model after
each stage) and ``report.json`` (each stage's time and losses).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from ..checkpoints import from_pretrained, save_pretrained
from ..config import preset
from ..data.merr import Annotation, load_annotations
from ..errors import EmotionLlamaError
from ..model import EmotionLlama
from .cache import RunCache
from .coarse_tuning import COARSE_TUNING, calibrate_adapters, tune_coarse
from .common import TrainConfig
from .decoding import decode_clips
from .encoder_pretraining import pretrain_encoders
from .extraction import extract_features
from .fine_tuning import FINE_TUNING, tune_fine
from .language_pretraining import pretrain_language, untrained_model
from .tuning import TuningSample, tuning_samples


class Report:
    """The training report, saved after every stage so an interrupted run keeps its times."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {"seconds": {}}

    def timed(self, name: str, fn: Callable):
        start = time.perf_counter()
        result = fn()
        self.data["seconds"][name] = round(time.perf_counter() - start, 1)
        self.save()
        return result

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1))


def run(config: TrainConfig) -> dict:
    """Run every stage that has not run yet; returns the training report."""
    torch.manual_seed(config.seed)
    work = Path(config.work)
    work.mkdir(parents=True, exist_ok=True)
    report = Report(work / "report.json")
    cache = RunCache(work / "cache")
    annotations = _decoded(config, cache, report)
    stages = work / "stages"
    model = _checkpoint(stages / "encoders", functools.partial(_pretrain_encoders, config, annotations, cache, report))
    report.timed("extract", lambda: extract_features(model, annotations, cache))
    model = _checkpoint(stages / "language", functools.partial(
        _stage, report, "language", model, lambda m: pretrain_language(m, annotations, config.language, config.seed)))
    samples = tuning_samples(annotations, cache)
    if not _done(stages / COARSE_TUNING.name):
        report.data["adapter_scales"] = calibrate_adapters(model, samples)
    model = _tuned(model, samples, config, report, stages)
    if config.export:
        save_pretrained(model, config.export)
        (Path(config.export) / "training.json").write_text(
            json.dumps({"config": _jsonable(config), "report": report.data}, indent=1)
        )
    report.save()
    return report.data


def _decoded(config: TrainConfig, cache: RunCache, report: Report) -> list[Annotation]:
    """The training clips (splits ``train`` and ``val``), decoded into the cache; those
    that could not be decoded are left out."""
    corpus_root = Path(config.corpus) if Path(config.corpus).is_dir() else Path(config.corpus).parent
    annotations = [a for a in load_annotations(config.corpus) if a.split in (None, "train", "val")]
    annotations = annotations[: config.limit] if config.limit else annotations
    if not annotations:
        raise EmotionLlamaError(f"no training annotations in {config.corpus}")
    report.timed("decode", lambda: decode_clips(annotations, corpus_root, cache, preset(config.preset),
                                                config.workers, config.face_scale_factor, config.face_min_fraction))
    return [a for a in annotations if cache.has_clip(a.name)]


def _done(folder: Path) -> bool:
    return (folder / "model.safetensors").exists()


def _checkpoint(folder: Path, train: Callable[[], EmotionLlama]) -> EmotionLlama:
    """The model saved in ``folder``; ``train()`` makes it first unless an earlier run did.
    Reloaded either way, so a resumed run continues from exactly what a fresh one saved."""
    if not _done(folder):
        save_pretrained(train(), folder)
    return from_pretrained(folder)


def _stage(report: Report, name: str, model: EmotionLlama, train: Callable[[EmotionLlama], dict]) -> EmotionLlama:
    """Train ``model`` in place as stage ``name``; its time and losses go into the report."""
    report.data[f"{name}_loss"] = report.timed(name, lambda: train(model))
    return model


def _pretrain_encoders(config: TrainConfig, annotations: list[Annotation], cache: RunCache,
                       report: Report) -> EmotionLlama:
    model = untrained_model(annotations, config.preset, config.vocab_size)
    report.data["encoder_accuracy"] = report.timed("encoders", lambda: pretrain_encoders(
        model, annotations, cache, config.encoders, config.seed, config.encoder_epochs, config.workers,
        config.encoder_clue_weight, config.face_train_frames))
    return model


def _tuned(model: EmotionLlama, samples: list[TuningSample], config: TrainConfig, report: Report,
           stages: Path) -> EmotionLlama:
    """Stage 1, coarse-grained tuning, then stage 2, fine-grained tuning."""
    for stage, tune in ((COARSE_TUNING, tune_coarse), (FINE_TUNING, tune_fine)):
        train = functools.partial(tune, samples=samples, config=config)
        model = _checkpoint(stages / stage.name, functools.partial(_stage, report, stage.name, model, train))
    return model


def _jsonable(config: TrainConfig) -> dict:
    data = asdict(config)
    for key in ("corpus", "work", "export"):
        if data.get(key):
            data[key] = Path(data[key]).name
    return data
