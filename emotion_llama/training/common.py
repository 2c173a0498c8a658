"""What every training stage shares: the run's settings, the optimiser, step counts, the
fixed probe batch and loss summaries."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class StageSettings:
    epochs: float = 1.0
    lr: float = 1e-3
    batch_size: int = 16
    weight_decay: float = 0.0


# The config keys that hold a stage's ``StageSettings``, in the order the stages run.
STAGE_KEYS = ("encoders", "language", "coarse_tuning", "fine_tuning")
# Keys of configs written before the stages took the paper's names, so old configs still load.
RENAMED_KEYS = {"stage1": "coarse_tuning", "stage2": "fine_tuning", "label_share_stage2": "fine_label_share"}


@dataclass(frozen=True)
class InputDropout:
    """The shares of questions asked with some of the clip's inputs left out."""

    modality: float = 0.0  # label questions with random modalities left out
    subtitle: float = 0.0  # questions without the subtitle
    missing: float = 0.0  # label questions with the voice or the face left out (``as_if_missing``)


@dataclass(frozen=True)
class TrainConfig:
    corpus: str  # folder (or file) of annotations; clips found through them
    work: str  # work folder: the run's cache, stage checkpoints, report
    export: str | None = None  # where the final weights go (save_pretrained)
    preset: str = "tiny"
    seed: int = 0
    vocab_size: int = 2048
    workers: int = 2
    limit: int | None = None  # use only the first N training clips (CI smoke runs)
    # Haar pyramid step while decoding training clips: 1.15 is 2.5x faster than the
    # default 1.05 and still finds every synthetic face; real footage wants 1.05.
    face_scale_factor: float = 1.05
    # Smallest face the detector looks for while decoding training clips, as a share of
    # the (downscaled) frame's short side. Synthetic faces are at least 92 of 256 px wide,
    # so 0.3 loses none and halves the time of decoding (the pyramid's largest images
    # are the ones that look for small faces); the app keeps 0.1 for real footage.
    face_min_fraction: float = 0.1
    encoders: StageSettings = StageSettings(epochs=8, lr=2e-3, batch_size=32)
    # Epochs per encoder, overriding ``encoders.epochs`` (the face and voice readers need
    # the most; the global frame adds scene context the others lack).
    encoder_epochs: dict[str, float] | None = None
    # Weight, per encoder, of a second loss: predicting which of its modality's annotated
    # clues a clip shows (multi-label; prosody and voice quality for the speech encoder,
    # action units for the visual ones). A label lumps look-alike voices together; the
    # clues say what to listen for. On the speech encoder its held-out accuracy went
    # 0.33 -> 0.37-0.38, though a linear probe on its features did not improve; on the
    # visual encoders accuracy fell, so configs/tiny.json gives them none.
    encoder_clue_weight: dict[str, float] | None = None
    # Face crops per clip in each of the face encoder's training steps, drawn at random
    # (inference averages all of a clip's crops): fewer images a step make steps cheaper,
    # so more epochs fit in the same time. 0: all crops.
    face_train_frames: int = 0
    language: StageSettings = StageSettings(epochs=3, lr=3e-3, batch_size=32)
    coarse_tuning: StageSettings = StageSettings(epochs=6, lr=2e-3, batch_size=16)
    fine_tuning: StageSettings = StageSettings(epochs=6, lr=1e-3, batch_size=16)
    fine_label_share: float = 0.3  # share of label questions mixed into fine-grained tuning
    # Share of label questions asked with modalities left out (zeros, as inference fills
    # them): half keep one modality only, half drop one. Teaches the model to answer from
    # partial evidence and makes the modality ablation meaningful.
    modality_dropout: float = 0.0
    # Share of label questions asked without the subtitle. The words decide most clips, so
    # without this the model leans on them and learns little of reading face and voice,
    # which is what the clips whose words mislead (``conflict``) need. The same share of
    # reasoning questions goes without it where the annotations hold answers written for
    # that (``meta["without_subtitle"]``, see ``tuning.with_dropout``).
    subtitle_dropout: float = 0.0
    # Share of fine-grained reasoning questions asked as a follow-up to the label answer
    # (the app's layout, see ``prompts.reason_after_label``); the rest are single-turn, as
    # in the paper. Coarse captions name no label, so coarse-grained tuning stays single-turn.
    follow_up_share: float = 0.0
    # Share of label questions on clips that have every modality and words that agree with
    # the label asked with the voice or the face left out (``tuning.as_if_missing``): the
    # corpus's own missing cases were too few to teach the model to let the rest decide.
    missing_dropout: float = 0.0

    def input_dropout(self) -> InputDropout:
        return InputDropout(self.modality_dropout, self.subtitle_dropout, self.missing_dropout)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        data = {RENAMED_KEYS.get(key, key): value for key, value in json.loads(Path(path).read_text()).items()}
        for stage in STAGE_KEYS:
            if stage in data:
                data[stage] = StageSettings(**data[stage])
        base = Path(path).parent
        for key in ("corpus", "work", "export"):
            if data.get(key) and not Path(data[key]).is_absolute():
                data[key] = str((base / data[key]).resolve())
        return cls(**data)


def optimiser(params: list[nn.Parameter], settings: StageSettings, steps: int, clip_norm: float | None = None):
    """AdamW with a one-cycle schedule; returns ``step(loss) -> float``."""
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=steps)

    def step(loss: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss.backward()
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        optimizer.step()
        scheduler.step()
        return loss.item()

    return step


def stage_steps(examples: int, settings: StageSettings) -> int:
    return max(1, math.ceil(examples * settings.epochs / settings.batch_size))


# A second group costs a second pass through the LLM: worth it only when it saves this
# share of the positions the batch padded whole has.
GROUP_SAVING = 0.1


def length_groups(lengths: list[int]) -> list[tuple[int, int]]:
    """Ascending ``lengths`` cut into the two consecutive groups (start, end) that leave the
    fewest padded positions; one group when no cut saves ``GROUP_SAVING``."""
    whole = len(lengths) * lengths[-1]
    groups, cost = [(0, len(lengths))], whole * (1 - GROUP_SAVING)
    for cut in range(1, len(lengths)):
        padded = cut * lengths[cut - 1] + (len(lengths) - cut) * lengths[-1]
        if padded <= cost:
            groups, cost = [(0, cut), (cut, len(lengths))], padded
    return groups


PROBE_SIZE = 8  # examples held fixed to measure each stage's loss before and after it


@torch.no_grad()
def probe(module: nn.Module, loss_fn) -> float:
    """The loss on a fixed batch with dropout off: comparable before and after a stage."""
    module.eval()
    return round(loss_fn().item(), 4)


def loss_summary(losses: list[float]) -> dict[str, float]:
    """Mean loss over the first and the last quarter of the steps."""
    quarter = max(1, len(losses) // 4)
    return {"first": round(float(np.mean(losses[:quarter])), 4), "last": round(float(np.mean(losses[-quarter:])), 4),
            "steps": len(losses)}
