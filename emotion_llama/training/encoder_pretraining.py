"""Encoder pretraining: each encoder learns, with a linear head, to name the emotion its
own modality shows, and optionally the clues annotated for it (a supervised stand-in for
the reference's MER2023-pretrained MAE / VideoMAE / HuBERT); then it is frozen."""

from __future__ import annotations

import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..data.merr import Annotation, clue_vocabulary
from ..model import EmotionLlama
from ..vocab import MERR_LABELS
from .cache import RunCache
from .common import StageSettings, optimiser, stage_steps

# Which annotated modality each encoder learns to read.
ENCODER_TARGET = {"global": "face", "face": "face", "temporal": "face", "audio": "voice"}
AUDIO_TRAIN_SAMPLES = 32_000  # 2 s windows, so a batch needs no padding
# Which cached arrays each encoder reads (the cache is loaded per encoder, not whole).
ENCODER_INPUT = {"global": "global_frame", "face": "face_crops", "temporal": "face_sequence", "audio": "audio"}
# The slowest encoders first, so the pool's workers finish together.
TRAINING_ORDER = ("audio", "face", "temporal", "global")

Item = tuple[str, int, tuple[int, ...]]  # (clip name, target class, indices of its clues)


def _has_input(modality: str, array: np.ndarray) -> bool:
    return modality == "global" or array.size > 0


def _some_frames(crops: np.ndarray, frames: int, rng: random.Random) -> np.ndarray:
    """``frames`` of a clip's face crops, drawn at random (in time order); all when it has no more."""
    if frames <= 0 or len(crops) <= frames:
        return crops
    return crops[sorted(rng.sample(range(len(crops)), frames))]


def _batch_features(encoder: nn.Module, modality: str, inputs: list[np.ndarray],
                    rng: random.Random | None, frames: int = 0) -> torch.Tensor:
    """Pooled features of a batch of clips from one encoder, (batch, width), as ``encode``
    pools them. When ``rng`` is given (training), audio is cut to random 2 s windows and,
    with ``frames``, each clip's face crops to that many drawn at random; otherwise audio
    is read whole, one clip at a time, and every crop is used.
    """
    if modality == "global":
        return encoder(torch.cat([encoder.preprocess(x) for x in inputs]))[:, 1:].mean(dim=1)
    if modality == "face":
        if rng is not None:
            inputs = [_some_frames(x, frames, rng) for x in inputs]
        crops = [encoder.preprocess(x) for x in inputs]
        per_crop = encoder.frame_features(torch.cat(crops))
        return torch.stack([part.mean(dim=0) for part in per_crop.split([len(c) for c in crops])])
    if modality == "temporal":
        return encoder(torch.cat([encoder.preprocess(x) for x in inputs]))
    if rng is None:
        return torch.cat([encoder(encoder.preprocess(wave)) for wave in inputs])
    windows = []
    for wave in inputs:
        if wave.size > AUDIO_TRAIN_SAMPLES:
            start = rng.randrange(wave.size - AUDIO_TRAIN_SAMPLES)
            wave = wave[start : start + AUDIO_TRAIN_SAMPLES]
        windows.append(encoder.preprocess(np.pad(wave, (0, AUDIO_TRAIN_SAMPLES - wave.size))))
    return encoder(torch.cat(windows))


@dataclass(frozen=True)
class EncoderJob:
    modality: str
    config: dict  # the model's config: the worker builds only this job's encoder from it
    state: dict  # the encoder's initial weights (a module with weight norm cannot be pickled)
    width: int  # its feature width
    cache: RunCache
    train: list[Item]
    val: list[Item]
    settings: StageSettings
    seed: int
    n_clues: int = 0  # size of the modality's clue vocabulary; 0: no clue targets
    clue_weight: float = 0.0  # weight of the clue loss against the label's
    frames: int = 0  # face crops per clip in a training step, drawn at random; 0: all


def _one_thread() -> None:
    torch.set_num_threads(1)


def _build_encoder(job: EncoderJob) -> nn.Module:
    from ..config import EmotionLlamaConfig
    from ..encoders import FaceEncoder, FaceSequenceEncoder, GlobalFrameEncoder, SpeechEncoder

    kind = {"global": GlobalFrameEncoder, "face": FaceEncoder, "temporal": FaceSequenceEncoder,
            "audio": SpeechEncoder}[job.modality]
    encoder = kind(EmotionLlamaConfig.from_dict(job.config))
    encoder.load_state_dict(job.state)
    return encoder


def _load_items(job: EncoderJob, items: list[Item]) -> list[tuple[np.ndarray, int, torch.Tensor]]:
    """(input array, target class, multi-hot clues) of the clips that have this modality."""
    out = []
    for name, target, clues in items:
        array = job.cache.clip_array(name, ENCODER_INPUT[job.modality])
        if _has_input(job.modality, array):
            hot = torch.zeros(job.n_clues)
            hot[list(clues)] = 1.0
            out.append((array, target, hot))
    return out


def _train_encoder(job: EncoderJob, encoder: nn.Module, head: nn.Linear, train: list) -> float:
    """The training loop; returns the accuracy on the training batches of the last fifth."""
    n_labels = len(MERR_LABELS)
    encoder.requires_grad_(True)
    encoder.train()
    rng = random.Random(job.seed)
    steps = stage_steps(len(train), job.settings)
    step_with = optimiser(list(encoder.parameters()) + list(head.parameters()), job.settings, steps)
    correct = seen = 0
    for step in tqdm(range(steps), desc=f"encoder {job.modality}", unit="step"):
        batch = rng.sample(train, min(job.settings.batch_size, len(train)))
        out = head(_batch_features(encoder, job.modality, [x for x, _, _ in batch], rng, job.frames))
        logits, targets = out[:, :n_labels], torch.tensor([y for _, y, _ in batch])
        loss = nn.functional.cross_entropy(logits, targets)
        if job.n_clues:
            clues = torch.stack([hot for _, _, hot in batch])
            loss = loss + job.clue_weight * nn.functional.binary_cross_entropy_with_logits(out[:, n_labels:], clues)
        step_with(loss)
        if step >= steps * 0.8:
            correct += int((logits.argmax(-1) == targets).sum())
            seen += len(batch)
    encoder.eval()
    encoder.requires_grad_(False)
    return round(correct / max(seen, 1), 4)


@torch.no_grad()
def _held_out_accuracy(job: EncoderJob, encoder: nn.Module, head: nn.Linear, val: list) -> float | None:
    hits = 0
    for start in range(0, len(val), job.settings.batch_size):
        batch = val[start : start + job.settings.batch_size]
        logits = head(_batch_features(encoder, job.modality, [x for x, _, _ in batch], None))[:, : len(MERR_LABELS)]
        hits += int((logits.argmax(-1) == torch.tensor([y for _, y, _ in batch])).sum())
    return round(hits / len(val), 4) if val else None


def _pretrain_encoder(job: EncoderJob) -> tuple[str, dict, dict[str, float]]:
    """Train one encoder with a linear head (in a worker process); returns its new
    weights and its accuracy on the training batches (last fifth) and on held-out clips."""
    torch.manual_seed(job.seed)
    # HuBERT's SpecAugment draws its masks from NumPy's global generator: seed it too, or
    # the speech encoder (alone of the four) comes out different in every run.
    np.random.seed(job.seed)
    encoder = _build_encoder(job)
    train, val = _load_items(job, job.train), _load_items(job, job.val)
    head = nn.Linear(job.width, len(MERR_LABELS) + job.n_clues)
    accuracy = {"train": _train_encoder(job, encoder, head, train)}
    accuracy["val"] = _held_out_accuracy(job, encoder, head, val)
    return job.modality, encoder.state_dict(), accuracy


def _job(model: EmotionLlama, modality: str, annotations: list[Annotation], cache: RunCache,
         settings: StageSettings, seed: int, clue_weight: float, frames: int = 0) -> EncoderJob:
    """One encoder's job: its targets, split into training and held-out (``val``) clips;
    ``frames`` applies to the face encoder only."""
    labels = {label: i for i, label in enumerate(MERR_LABELS)}
    target = ENCODER_TARGET[modality]
    # Clue targets only where asked for and the annotations have them (MERR-style data does).
    annotated = clue_weight > 0 and any(ann.clues.get(target) for ann in annotations)
    clue_index = {clue: i for i, clue in enumerate(clue_vocabulary()[target])} if annotated else {}
    items: dict[str, list[Item]] = {"train": [], "val": []}
    for ann in annotations:
        if ann.modalities.get(target) in labels:
            clues = tuple(clue_index[c] for c in ann.clues.get(target, []) if c in clue_index)
            items["val" if ann.split == "val" else "train"].append((ann.name, labels[ann.modalities[target]], clues))
    return EncoderJob(modality, model.config.to_dict(), model.encoders.of(modality).state_dict(),
                      model.encoders.feature_dims[modality], cache, items["train"], items["val"], settings, seed,
                      len(clue_index), clue_weight, frames if modality == "face" else 0)


def pretrain_encoders(model: EmotionLlama, annotations: list[Annotation], cache: RunCache, settings: StageSettings,
                      seed: int, epochs: dict[str, float] | None = None, workers: int = 1,
                      clue_weights: dict[str, float] | None = None, face_frames: int = 0) -> dict[str, dict]:
    """Each encoder learns to name the emotion its own modality shows (a supervised
    stand-in for the reference's MER2023-pretrained encoders) and, where ``clue_weights``
    gives it a weight, which of its modality's annotated clues the clip shows (see
    ``TrainConfig.encoder_clue_weight``), with the face encoder seeing ``face_frames``
    random crops of a clip a step (all when 0); the heads are then dropped
    and the encoders frozen. The four train in parallel processes, one thread each.
    Clips of the ``val`` split are held out to measure each encoder's accuracy.
    Returns ``{modality: {"train": acc, "val": acc}}``."""
    jobs = [_job(model, modality, annotations, cache,
                 replace(settings, epochs=(epochs or {}).get(modality, settings.epochs)), seed,
                 (clue_weights or {}).get(modality, 0.0), face_frames)
            for modality in TRAINING_ORDER]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=_one_thread,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:  # see decoding.py
            results = list(pool.map(_pretrain_encoder, jobs))
    else:
        results = [_pretrain_encoder(job) for job in jobs]
    accuracy = {}
    for modality, state, acc in results:
        model.encoders.of(modality).load_state_dict(state)
        accuracy[modality] = acc
    model.encoders.requires_grad_(False)
    model.encoders.eval()
    return accuracy
