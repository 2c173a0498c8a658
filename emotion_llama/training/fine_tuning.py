"""Stage 2, fine-grained tuning: the fine-grained reasoning (``[reason]``), with a share
of label questions mixed in so the label answer is kept; a share of the reasoning
questions come as a follow-up to the label answer, as the app asks them."""

from __future__ import annotations

from ..model import EmotionLlama
from .common import TrainConfig
from .tuning import TuningSample, TuningStage, instruction_tune

FINE_TUNING = TuningStage(2, "fine_tuning", "stage 2, fine-grained tuning", "fine_reasoning")


def tune_fine(model: EmotionLlama, samples: list[TuningSample], config: TrainConfig) -> dict:
    return instruction_tune(model, samples, config.fine_tuning, FINE_TUNING, config.seed, config.fine_label_share,
                            config.input_dropout(), config.follow_up_share)
