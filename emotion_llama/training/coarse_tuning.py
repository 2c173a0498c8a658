"""Stage 1, coarse-grained tuning: label questions (``[emotion]``) and coarse captions
(``[reason]``), half each, as the reference's first stage. The freshly initialised
adapters are first scaled to the LLM's embeddings."""

from __future__ import annotations

import torch

from ..model import EmotionLlama
from ..vocab import SLOTS
from .common import TrainConfig
from .tuning import TuningSample, TuningStage, instruction_tune

COARSE_TUNING = TuningStage(1, "coarse_tuning", "stage 1, coarse-grained tuning", "coarse_caption")
LABEL_SHARE = 0.5  # half label questions, half coarse captions


@torch.no_grad()
def calibrate_adapters(model: EmotionLlama, samples: list[TuningSample], n: int = 64) -> dict[str, float]:
    """Scale each freshly initialised adapter so its outputs have the RMS of the LLM's
    token embeddings. Untouched, they come out about 20x larger in the tiny preset and
    drown the prompt text in the residual stream before training can adjust them."""
    target = model.llama_model.get_input_embeddings().weight.float().pow(2).mean().sqrt()
    outputs: dict[str, list[torch.Tensor]] = {slot: [] for slot in SLOTS}
    for sample in samples[:n]:
        for slot, tokens in model.project(sample.encoded).items():
            outputs[slot].append(tokens.float())
    scales = {}
    adapters = model.adapters()
    for slot, (_, name) in SLOTS.items():
        rms = torch.cat(outputs[slot]).pow(2).mean().sqrt()
        scale = float(target / rms.clamp_min(1e-8))
        adapters[name].weight.mul_(scale)
        adapters[name].bias.mul_(scale)
        scales[name] = round(scale, 4)
    return scales


def tune_coarse(model: EmotionLlama, samples: list[TuningSample], config: TrainConfig) -> dict:
    """Coarse captions name no label, so no reasoning question comes as a follow-up here."""
    return instruction_tune(model, samples, config.coarse_tuning, COARSE_TUNING, config.seed, LABEL_SHARE,
                            config.input_dropout(), follow_up=0.0)
