"""What both instruction-tuning stages share (stage 1, coarse-grained tuning, and stage 2,
fine-grained tuning): the samples, the conversations asked of them, modality and subtitle
dropout, the answer-only loss and the training loop. Only the adapters and LoRA train."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from ..data.merr import Annotation
from ..encoders import EncodedClip, without
from ..model import EmotionLlama
from ..prompts import answer_pieces, first_turn, reason_after_label, user_turn
from ..vocab import ENCODED_MODALITIES, MER2023_LABELS, MERR_LABELS, MODALITIES
from .cache import RunCache
from .common import PROBE_SIZE, InputDropout, StageSettings, length_groups, loss_summary, optimiser, probe, stage_steps


@dataclass(frozen=True)
class TuningStage:
    """What sets one instruction-tuning stage apart from the other."""

    number: int  # the paper's stage number; the stage's draws are seeded with seed + number
    name: str  # its config key, report key and work folder
    title: str  # what its progress bar says
    reasoning: str  # the annotation field that answers its ``[reason]`` questions


@dataclass
class TuningSample:
    name: str
    encoded: EncodedClip
    subtitle: str | None
    annotation: Annotation


def tuning_samples(annotations: list[Annotation], cache: RunCache) -> list[TuningSample]:
    """Every clip with its features as extracted into the cache."""
    return [TuningSample(a.name, cache.features.read(a.name).encoded, a.subtitle, a) for a in annotations]


def without_subtitle(ann: Annotation) -> dict[str, str]:
    """The caption and reasoning written for the clip shown without its subtitle
    (``meta["without_subtitle"]``, which the synthetic corpus has); empty if there are none."""
    texts = ann.meta.get("without_subtitle")
    if isinstance(texts, dict) and all(isinstance(texts.get(k), str) for k in ("coarse_caption", "fine_reasoning")):
        return texts
    return {}


# How often a label question offers each kind of candidate list: the nine MERR labels
# (the reference's instruction), the six of MER2023 (when they hold the clip's label) and
# a list of the user's own (two to eight MERR labels in any order, the clip's among them),
# as the app's label-set choice asks them. Trained only on the nine, the label answer
# rambled under the six-label instruction.
LABEL_SET_SHARES = {"merr": 0.6, "mer2023": 0.2, "custom": 0.2}


def offered_labels(label: str, rng: random.Random) -> tuple[str, ...] | None:
    """The candidate labels one training label question offers (``None``: the nine MERR
    labels, asked with the reference's own instruction); the clip's ``label`` is always
    among them."""
    kind = rng.choices(list(LABEL_SET_SHARES), weights=list(LABEL_SET_SHARES.values()))[0]
    if kind == "merr" or label not in MERR_LABELS:
        return None
    if kind == "mer2023" and label in MER2023_LABELS:
        return MER2023_LABELS
    others = [x for x in MERR_LABELS if x != label]
    chosen = [label, *rng.sample(others, rng.randint(1, len(others) - 1))]
    rng.shuffle(chosen)
    return tuple(chosen)


def conversation(sample: TuningSample, task: str, rng: random.Random, stage: TuningStage,
                 subtitle: str | None = None, follow_up: float = 0.0):
    """One training conversation. A ``follow_up`` share of reasoning questions come as the
    second turn after the label answer (both answers are targets), as the app asks them."""
    ann = sample.annotation
    if task == "emotion":
        labels = offered_labels(ann.label, rng)
        return first_turn(user_turn(task, subtitle=subtitle, labels=labels)) + answer_pieces(ann.label, close=True)
    answer = getattr(ann, stage.reasoning)
    texts = without_subtitle(ann)
    if subtitle is None and sample.subtitle and texts:
        # Shown without its subtitle: the answer must not quote words it was not given.
        answer = texts[stage.reasoning]
    if rng.random() < follow_up:
        prompt = reason_after_label(ann.label, subtitle=subtitle, labels=offered_labels(ann.label, rng), rng=rng,
                                    label_kind="answer")
    else:
        prompt = first_turn(user_turn(task, subtitle=subtitle, rng=rng))
    return prompt + answer_pieces(answer, close=True)


# What a clip looks like to the model when its voice or its face is missing: the encoders
# that read them give zeros (a missing sound track; no face found, ``encoders.encode``).
MISSING_AS_ZEROS = {"voice": ("audio",), "face": ("face", "temporal")}


def as_if_missing(sample: TuningSample, rng: random.Random) -> EncodedClip | None:
    """The clip with its voice or its face left out, when it has both and its words agree
    with its label; otherwise None. In the synthetic corpus a clip that lacks one of them
    has words that agree, and 5 % of clips each were too few for the model to learn to
    let the words and the remaining modality decide when one is gone."""
    ann = sample.annotation
    if ann.missing or ann.modalities.get("words") != ann.label:
        return None
    return without(sample.encoded, MISSING_AS_ZEROS[rng.choice(sorted(MISSING_AS_ZEROS))])


def with_dropout(sample: TuningSample, task: str, rng: random.Random,
                 dropout: InputDropout) -> tuple[EncodedClip, str | None]:
    """The sample's inputs, some left out as ``dropout`` says. Reasoning answers cite every
    modality, so reasoning questions see all of them, except that the subtitle is left
    out for a ``dropout.subtitle`` share of them when the annotation has answers written
    without it (:func:`without_subtitle`): otherwise the model learns to quote words it
    never saw."""
    if task != "emotion":
        if dropout.subtitle and sample.subtitle and without_subtitle(sample.annotation) and rng.random() < dropout.subtitle:
            return sample.encoded, None
        return sample.encoded, sample.subtitle
    if dropout.missing and rng.random() < dropout.missing:
        encoded = as_if_missing(sample, rng)
        if encoded is not None:
            return encoded, sample.subtitle
    if rng.random() >= dropout.modality:
        if dropout.subtitle and rng.random() < dropout.subtitle:
            return sample.encoded, None
        return sample.encoded, sample.subtitle
    if rng.random() < 0.5:
        keep = rng.choice(MODALITIES)
        dropped = tuple(m for m in MODALITIES if m != keep)
    else:
        dropped = (rng.choice(MODALITIES),)
    encoded = without(sample.encoded, tuple(m for m in dropped if m in ENCODED_MODALITIES))
    return encoded, None if "subtitle" in dropped else sample.subtitle


def instruction_loss(model: EmotionLlama, batch: list[list], projected: list[dict[str, torch.Tensor]],
                     by_length: bool = True) -> torch.Tensor:
    """Cross-entropy on the answers and their ``</s>``, every other position masked: the
    mean over the batch's answer tokens. With ``by_length`` the sequences run shortest first in
    two groups, each padded to its own longest, so short label questions do not pay for the
    padding of long reasoning answers (a batch padded whole was 30 % padding)."""
    sequences = sorted((model.assemble(pieces, proj) for pieces, proj in zip(batch, projected)), key=len)
    targets = [_answer_targets(seq) for seq in sequences]
    answer_tokens = sum(int((t != -100).sum()) for t in targets)
    groups = length_groups([len(s) for s in sequences]) if by_length else [(0, len(sequences))]
    return sum(_group_loss(model, sequences[start:end], targets[start:end], answer_tokens) for start, end in groups)


def _answer_targets(seq) -> torch.Tensor:
    """The sequence's token ids where the loss reads them (the answer and its ``</s>``), -100 elsewhere."""
    answer = torch.tensor([kind in ("answer", "eos") for kind in seq.kind_at()])
    return torch.as_tensor(seq.token_ids).masked_fill(~answer, -100)


def _group_loss(model: EmotionLlama, sequences: list, targets: list[torch.Tensor], answer_tokens: int) -> torch.Tensor:
    """Summed cross-entropy of one group's answer tokens over the whole batch's count."""
    length = max(len(s) for s in sequences)
    hidden = sequences[0].inputs_embeds.shape[-1]
    embeds = torch.zeros(len(sequences), length, hidden)
    mask = torch.zeros(len(sequences), length, dtype=torch.long)
    labels = torch.full((len(sequences), length), -100)
    for row, (seq, target) in enumerate(zip(sequences, targets)):
        embeds[row, : len(seq)] = seq.inputs_embeds[0]
        mask[row, : len(seq)] = 1
        labels[row, : len(seq)] = target
    return model.llama_model(inputs_embeds=embeds, attention_mask=mask, labels=labels,
                             num_items_in_batch=answer_tokens).loss


def trainable_parameters(model: EmotionLlama) -> list[nn.Parameter]:
    """The adapters' and LoRA's parameters, the only ones left trainable."""
    params = [p for layer in model.adapters().values() for p in layer.parameters()]
    params += [p for n, p in model.llama_model.named_parameters() if ".lora_" in n]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return params


def draw_batch(samples: list[TuningSample], rng: random.Random, size: int, stage: TuningStage, label_share: float,
               dropout: InputDropout, follow_up: float) -> tuple[list[list], list[EncodedClip]]:
    """One training batch: ``size`` clips, each asked a label (``label_share``) or a reasoning
    question with some inputs left out as ``dropout`` says; returns the conversations and
    the clips' encoded inputs."""
    chosen = rng.sample(samples, min(size, len(samples)))
    tasks = ["emotion" if rng.random() < label_share else "reason" for _ in chosen]
    inputs = [with_dropout(s, t, rng, dropout) for s, t in zip(chosen, tasks)]
    batch = [conversation(s, t, rng, stage, words, follow_up) for s, t, (_, words) in zip(chosen, tasks, inputs)]
    return batch, [encoded for encoded, _ in inputs]


def instruction_tune(model: EmotionLlama, samples: list[TuningSample], settings: StageSettings, stage: TuningStage,
                     seed: int, label_share: float, dropout: InputDropout,
                     follow_up: float = 0.0) -> dict:
    """One tuning stage: batches of label (``label_share``) and reasoning questions. Its
    random draws (LoRA's dropout included) are seeded with ``seed`` and the stage number, so
    a run resumed after an earlier stage trains it exactly as a run from the start does."""
    torch.manual_seed(seed + stage.number)
    params = trainable_parameters(model)
    steps = stage_steps(len(samples), settings)
    step_with = optimiser(params, settings, steps, clip_norm=1.0)
    rng = random.Random(seed + stage.number)
    probe_rng = random.Random(seed)
    fixed = [conversation(s, "emotion" if i % 2 else "reason", probe_rng, stage, s.subtitle)
             for i, s in enumerate(samples[:PROBE_SIZE])]

    def probe_loss() -> torch.Tensor:
        return instruction_loss(model, fixed, [model.project(s.encoded) for s in samples[:PROBE_SIZE]])

    before = probe(model, probe_loss)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc=stage.title, unit="step"):
        batch, encoded = draw_batch(samples, rng, settings.batch_size, stage, label_share, dropout, follow_up)
        losses.append(step_with(instruction_loss(model, batch, [model.project(e) for e in encoded])))
    after = probe(model, probe_loss)
    for p in params:
        p.requires_grad_(False)
    return {**loss_summary(losses), "probe_before": before, "probe_after": after}
