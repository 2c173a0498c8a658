"""Training: the paper's recipe as plain functions over a ``TrainConfig``.

``python -m emotion_llama train CONFIG.json`` runs every stage in order; each stage
writes its result into the work folder and is skipped when that result exists, so an
interrupted run resumes where it stopped.

0. ``prepare``: decode every clip once (faces, crops, audio) into a cache.
   ``encoders``: pretrain the encoders (each predicts the emotion its own modality shows,
   and optionally the clues annotated for it: a supervised stand-in for the reference's
   MER2023-pretrained MAE / VideoMAE / HuBERT), then freeze them and ``extract`` features
   into the reference layout.
1. ``tokenizer`` + ``language``: train a tokenizer and pretrain the LLM as a language
   model on the corpus text (the stand-in for LLaMA-2's pretraining).
2. ``stage1``: instruction tuning on labels (``[emotion]``) and coarse captions
   (``[reason]``), as the reference's first stage; only adapters and LoRA train.
3. ``stage2``: instruction tuning on fine-grained reasoning, labels mixed in so the
   label answer is kept; only adapters and LoRA train.

The same functions tune the ``official`` preset on a GPU: the stages read annotations in
the MERR / MER2023 formats (``data/merr.py``) and features in the reference layout.
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .clip import PreparedClip, Subtitle
from .config import MERR_LABELS, EmotionLlamaConfig, preset
from .data.merr import Annotation, clue_vocabulary, load_annotations
from .errors import EmotionLlamaError
from .features import FeatureStore
from .model import EmotionLlama, EncodedClip, without
from .prompts import EMOTION_INSTRUCTION, REASON_INSTRUCTIONS, answer_pieces, first_turn, reason_after_label, user_turn


@dataclass(frozen=True)
class StageSettings:
    epochs: float = 1.0
    lr: float = 1e-3
    batch_size: int = 16
    weight_decay: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    corpus: str  # folder (or file) of annotations; clips found through them
    work: str  # work folder: caches, stage checkpoints, logs
    export: str | None = None  # where the final weights go (save_pretrained)
    preset: str = "tiny"
    seed: int = 0
    vocab_size: int = 2048
    workers: int = 2
    limit: int | None = None  # use only the first N training clips (CI smoke runs)
    # Haar pyramid step while preparing training clips: 1.15 is 2.5x faster than the
    # default 1.05 and still finds every synthetic face; real footage wants 1.05.
    face_scale_factor: float = 1.05
    # Smallest face the detector looks for while preparing training clips, as a share of
    # the (downscaled) frame's short side. Synthetic faces are at least 92 of 256 px wide,
    # so 0.3 loses none and halves the time of preparing (the pyramid's largest images
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
    language: StageSettings = StageSettings(epochs=3, lr=3e-3, batch_size=32)
    stage1: StageSettings = StageSettings(epochs=6, lr=2e-3, batch_size=16)
    stage2: StageSettings = StageSettings(epochs=6, lr=1e-3, batch_size=16)
    label_share_stage2: float = 0.3  # share of label questions mixed into stage 2
    # Share of label questions asked with modalities left out (zeros, as inference fills
    # them): half keep one modality only, half drop one. Teaches the model to answer from
    # partial evidence and makes the modality ablation meaningful.
    modality_dropout: float = 0.0
    # Share of label questions asked without the subtitle. The words decide most clips, so
    # without this the model leans on them and learns little of reading face and voice,
    # which is what the clips whose words mislead (``conflict``) need. The same share of
    # reasoning questions goes without it where the annotations hold answers written for
    # that (``meta["without_subtitle"]``, see ``with_dropout``).
    subtitle_dropout: float = 0.0
    # Share of stage-2 reasoning questions asked as a follow-up to the label answer (the
    # app's layout, see ``prompts.reason_after_label``); the rest are single-turn, as in
    # the paper. Stage 1's coarse captions name no label, so they stay single-turn.
    follow_up_share: float = 0.0

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        data = json.loads(Path(path).read_text())
        for stage in ("encoders", "language", "stage1", "stage2"):
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


# -- stage 0a: decode once ----------------------------------------------------------------
def _prepare_one(job: tuple[str, str, str, tuple[int, int, int], float, float]) -> str | None:
    from .encoders import resize_images
    from .faces import HaarFaceDetector
    from .prepare import PrepareOptions, prepare_clip

    video, subtitle, target, (global_size, face_size, temporal_size), scale_factor, min_fraction = job
    options = PrepareOptions(face_detector=HaarFaceDetector(scale_factor=scale_factor, min_face_fraction=min_fraction))
    try:
        clip = prepare_clip(video, subtitle=subtitle or None, options=options)
    except EmotionLlamaError as error:
        return f"{Path(video).name}\t{error}"
    # Stored at the encoders' input sizes, resized exactly as their preprocessing does,
    # so the cache is small and the encoders see what they see at inference.
    empty = np.zeros((0, 1, 1, 3), np.uint8)
    np.savez(
        target,
        global_frame=resize_images(clip.global_frame, global_size)[0],
        face_crops=resize_images(clip.face_crops, face_size) if len(clip.face_crops) else empty,
        face_sequence=resize_images(clip.face_sequence, temporal_size) if len(clip.face_sequence) else empty,
        audio=clip.audio if clip.audio is not None else np.zeros(0, np.float32),
        frame_time=clip.global_frame_time,
    )
    return None


def prepare_all(annotations: list[Annotation], corpus_root: Path, cache: Path, config: EmotionLlamaConfig,
                workers: int, face_scale_factor: float = 1.05, face_min_fraction: float = 0.1) -> None:
    """Decode every clip into ``cache/NAME.npz`` (resumable, several processes)."""
    cache.mkdir(parents=True, exist_ok=True)
    sizes = (config.global_vision["image_size"], config.face["image_size"], config.temporal["image_size"])
    jobs = []
    for ann in annotations:
        target = cache / f"{ann.name}.npz"
        video = ann.video_path(corpus_root)
        if not target.exists() and video is not None:
            jobs.append((str(video), ann.subtitle or "", str(target), sizes, face_scale_factor, face_min_fraction))
    if not jobs:
        return
    failures = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for failure in tqdm(pool.map(_prepare_one, jobs, chunksize=4), total=len(jobs), desc="prepare clips", unit="clip"):
            if failure:
                failures.append(failure)
    if failures:
        (cache / "failed.log").write_text("\n".join(failures) + "\n")


def load_prepared(cache: Path, ann: Annotation) -> PreparedClip:
    data = np.load(cache / f"{ann.name}.npz")
    audio = data["audio"]
    return PreparedClip(
        global_frame=data["global_frame"],
        global_frame_time=float(data["frame_time"]),
        face_crops=data["face_crops"],
        face_sequence=data["face_sequence"],
        audio=audio if audio.size else None,
        subtitle=Subtitle(ann.subtitle, "annotation" if ann.subtitle else "none"),
    )


# -- stage 0b: encoder pretraining --------------------------------------------------------
# Which annotated modality each encoder learns to read.
ENCODER_TARGET = {"global": "face", "face": "face", "temporal": "face", "audio": "voice"}
AUDIO_TRAIN_SAMPLES = 32_000  # 2 s windows, so a batch needs no padding
# Which cached arrays each encoder reads (the cache is loaded per encoder, not whole).
ENCODER_INPUT = {"global": "global_frame", "face": "face_crops", "temporal": "face_sequence", "audio": "audio"}


def _has_input(modality: str, array: np.ndarray) -> bool:
    return modality == "global" or array.size > 0


def _batch_features(encoder: nn.Module, modality: str, inputs: list[np.ndarray],
                    rng: random.Random | None) -> torch.Tensor:
    """Pooled features of a batch of clips from one encoder, (batch, width), as ``encode``
    pools them. Audio is cut to random 2 s windows when ``rng`` is given (training) and
    read whole, one clip at a time, otherwise.
    """
    if modality == "global":
        return encoder(torch.cat([encoder.preprocess(x) for x in inputs]))[:, 1:].mean(dim=1)
    if modality == "face":
        crops = [encoder.preprocess(x) for x in inputs]
        frames = encoder.frame_features(torch.cat(crops))
        return torch.stack([part.mean(dim=0) for part in frames.split([len(c) for c in crops])])
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
    cache: str
    train: list[tuple[str, int, tuple[int, ...]]]  # (clip name, target class, indices of its clues)
    val: list[tuple[str, int, tuple[int, ...]]]
    settings: StageSettings
    seed: int
    n_clues: int = 0  # size of the modality's clue vocabulary; 0: no clue targets
    clue_weight: float = 0.0  # weight of the clue loss against the label's


def _encoder_module(encoders, modality: str) -> nn.Module:
    return {"global": encoders.global_frame, "face": encoders.face, "temporal": encoders.temporal,
            "audio": encoders.audio}[modality]


def _one_thread() -> None:
    torch.set_num_threads(1)


def _pretrain_encoder(job: EncoderJob) -> tuple[str, dict, dict[str, float]]:
    """Train one encoder with a linear head (in a worker process); returns its new
    weights and its accuracy on the training batches (last fifth) and on held-out clips."""
    from .config import EmotionLlamaConfig
    from .encoders import FaceEncoder, FaceSequenceEncoder, GlobalFrameEncoder, SpeechEncoder

    torch.manual_seed(job.seed)
    # HuBERT's SpecAugment draws its masks from NumPy's global generator: seed it too, or
    # the speech encoder (alone of the four) comes out different in every run.
    np.random.seed(job.seed)
    kind = {"global": GlobalFrameEncoder, "face": FaceEncoder, "temporal": FaceSequenceEncoder,
            "audio": SpeechEncoder}[job.modality]
    encoder = kind(EmotionLlamaConfig.from_dict(job.config))
    encoder.load_state_dict(job.state)
    key = ENCODER_INPUT[job.modality]

    def load(items):
        out = []
        for name, target, clues in items:
            array = np.load(Path(job.cache) / f"{name}.npz")[key]
            if _has_input(job.modality, array):
                hot = torch.zeros(job.n_clues)
                hot[list(clues)] = 1.0
                out.append((array, target, hot))
        return out

    train, val = load(job.train), load(job.val)
    n_labels = len(MERR_LABELS)
    head = nn.Linear(job.width, n_labels + job.n_clues)
    encoder.requires_grad_(True)
    encoder.train()
    rng = random.Random(job.seed)
    steps = stage_steps(len(train), job.settings)
    step_with = optimiser(list(encoder.parameters()) + list(head.parameters()), job.settings, steps)
    correct = seen = 0
    for step in tqdm(range(steps), desc=f"encoder {job.modality}", unit="step"):
        batch = rng.sample(train, min(job.settings.batch_size, len(train)))
        out = head(_batch_features(encoder, job.modality, [x for x, _, _ in batch], rng))
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
    hits = 0
    with torch.no_grad():
        for start in range(0, len(val), job.settings.batch_size):
            batch = val[start : start + job.settings.batch_size]
            logits = head(_batch_features(encoder, job.modality, [x for x, _, _ in batch], None))[:, :n_labels]
            hits += int((logits.argmax(-1) == torch.tensor([y for _, y, _ in batch])).sum())
    accuracy = {"train": round(correct / max(seen, 1), 4), "val": round(hits / len(val), 4) if val else None}
    return job.modality, encoder.state_dict(), accuracy


def pretrain_encoders(model: EmotionLlama, annotations: list[Annotation], cache: Path, settings: StageSettings,
                      seed: int, epochs: dict[str, float] | None = None, workers: int = 1,
                      clue_weights: dict[str, float] | None = None) -> dict[str, dict]:
    """Each encoder learns to name the emotion its own modality shows (a supervised
    stand-in for the reference's MER2023-pretrained encoders) and, where ``clue_weights``
    gives it a weight, which of its modality's annotated clues the clip shows (see
    ``TrainConfig.encoder_clue_weight``); the heads are then dropped
    and the encoders frozen. The four train in parallel processes, one thread each.
    Clips of the ``val`` split are held out to measure each encoder's accuracy.
    Returns ``{modality: {"train": acc, "val": acc}}``."""
    labels = {label: i for i, label in enumerate(MERR_LABELS)}
    vocabulary = clue_vocabulary()
    jobs = []
    # The slowest encoders first, so the pool's workers finish together.
    for modality in ("audio", "face", "temporal", "global"):
        target = ENCODER_TARGET[modality]
        # Clue targets only where asked for and the annotations have them (MERR-style data does).
        clue_weight = (clue_weights or {}).get(modality, 0.0)
        annotated = clue_weight > 0 and any(ann.clues.get(target) for ann in annotations)
        clue_index = {clue: i for i, clue in enumerate(vocabulary[target])} if annotated else {}
        items = {"train": [], "val": []}
        for ann in annotations:
            if ann.modalities.get(target) in labels:
                clues = tuple(clue_index[c] for c in ann.clues.get(target, []) if c in clue_index)
                items["val" if ann.split == "val" else "train"].append(
                    (ann.name, labels[ann.modalities[target]], clues))
        modality_settings = replace(settings, epochs=(epochs or {}).get(modality, settings.epochs))
        jobs.append(EncoderJob(modality, model.config.to_dict(), _encoder_module(model.encoders, modality).state_dict(),
                               model.encoders.feature_dims[modality], str(cache), items["train"], items["val"],
                               modality_settings, seed, len(clue_index), clue_weight))
    accuracy = {}
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=_one_thread) as pool:
            results = list(pool.map(_pretrain_encoder, jobs))
    else:
        results = [_pretrain_encoder(job) for job in jobs]
    for modality, state, acc in results:
        _encoder_module(model.encoders, modality).load_state_dict(state)
        accuracy[modality] = acc
    model.encoders.requires_grad_(False)
    model.encoders.eval()
    return accuracy


# -- stage 1: tokenizer and language pretraining --------------------------------------------
def corpus_texts(annotations: list[Annotation]) -> list[str]:
    texts = []
    for ann in annotations:
        texts += [t for t in (ann.subtitle, ann.coarse_caption, ann.fine_reasoning, ann.label) if t]
    return texts


def chat_text(ann: Annotation, task: str, rng: random.Random) -> str:
    """A text-only rendering of a tuning conversation, for language pretraining."""
    answer = ann.label if task == "emotion" else rng.choice([ann.coarse_caption, ann.fine_reasoning])
    subtitle = f"The person in video says: {ann.subtitle}. " if ann.subtitle else ""
    instruction = rng.choice(REASON_INSTRUCTIONS) if task == "reason" else EMOTION_INSTRUCTION
    return f"[INST] <video></video> <feature></feature> {subtitle}[{task}] {instruction} [/INST] {answer}"


def pretrain_language(model: EmotionLlama, annotations: list[Annotation], settings: StageSettings, seed: int) -> dict:
    """Full training of the (tiny) LLM on corpus text; LoRA stays untouched."""
    tok = model.tokenizer
    llm = model.llama_model.get_base_model()
    base_params = [p for n, p in llm.named_parameters() if ".lora_" not in n]
    for p in base_params:
        p.requires_grad_(True)
    rng = random.Random(seed)
    # Every clip's label question (the words alone already hint at the label) and one of
    # its explanations.
    texts = [chat_text(ann, task, rng) for ann in annotations for task in ("emotion", "reason")]
    rng.shuffle(texts)
    steps = stage_steps(len(texts), settings)
    step_with = optimiser(base_params, settings, steps)

    def text_loss(batch: list[str]) -> torch.Tensor:
        enc = tok([tok.bos_token + t + tok.eos_token for t in batch], return_tensors="pt", padding=True,
                  truncation=True, max_length=512, add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        return llm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss

    probe = texts[:PROBE_SIZE]
    losses = []
    with model.llama_model.disable_adapter():
        before = _probe(llm, lambda: text_loss(probe))
        llm.train()
        for _ in tqdm(range(steps), desc="language model", unit="step"):
            losses.append(step_with(text_loss(rng.sample(texts, min(settings.batch_size, len(texts))))))
        after = _probe(llm, lambda: text_loss(probe))
    for p in base_params:
        p.requires_grad_(False)
    return {**loss_summary(losses), "probe_before": before, "probe_after": after}


PROBE_SIZE = 8  # examples held fixed to measure each stage's loss before and after it


@torch.no_grad()
def _probe(module: nn.Module, loss_fn) -> float:
    """The loss on a fixed batch with dropout off: comparable before and after a stage."""
    module.eval()
    return round(loss_fn().item(), 4)


# -- stages 2 and 3: instruction tuning -------------------------------------------------------
@dataclass
class TuningSample:
    name: str
    encoded: EncodedClip
    subtitle: str | None
    annotation: Annotation


ABLATABLE = ("global", "face", "temporal", "audio", "subtitle")


def conversation(sample: TuningSample, task: str, rng: random.Random, stage: int, subtitle: str | None = None,
                 follow_up: float = 0.0):
    """One training conversation. A ``follow_up`` share of reasoning questions come as the
    second turn after the label answer (both answers are targets), as the app asks them."""
    ann = sample.annotation
    if task == "emotion":
        return first_turn(user_turn(task, subtitle=subtitle, rng=rng)) + answer_pieces(ann.label, close=True)
    answer = ann.coarse_caption if stage == 1 else ann.fine_reasoning
    texts = without_subtitle(ann)
    if subtitle is None and sample.subtitle and texts:
        # Shown without its subtitle: the answer must not quote words it was not given.
        answer = texts["coarse_caption" if stage == 1 else "fine_reasoning"]
    if rng.random() < follow_up:
        prompt = reason_after_label(ann.label, subtitle=subtitle, rng=rng, label_kind="answer")
    else:
        prompt = first_turn(user_turn(task, subtitle=subtitle, rng=rng))
    return prompt + answer_pieces(answer, close=True)


def without_subtitle(ann: Annotation) -> dict[str, str]:
    """The caption and reasoning written for the clip shown without its subtitle
    (``meta["without_subtitle"]``, which the synthetic corpus has); empty if there are none."""
    texts = ann.meta.get("without_subtitle")
    if isinstance(texts, dict) and all(isinstance(texts.get(k), str) for k in ("coarse_caption", "fine_reasoning")):
        return texts
    return {}


def with_dropout(sample: TuningSample, task: str, rng: random.Random, share: float,
                 subtitle_share: float = 0.0) -> tuple[EncodedClip, str | None]:
    """The sample's inputs, some modalities left out for a ``share`` of label questions
    and the subtitle alone for a further ``subtitle_share``. Reasoning answers cite every
    modality, so reasoning questions see all of them, except that the subtitle is left
    out for a ``subtitle_share`` of them when the annotation has answers written without
    it (:func:`without_subtitle`): otherwise the model learns to quote words it never saw."""
    if task != "emotion":
        if subtitle_share and sample.subtitle and without_subtitle(sample.annotation) and rng.random() < subtitle_share:
            return sample.encoded, None
        return sample.encoded, sample.subtitle
    if rng.random() >= share:
        if subtitle_share and rng.random() < subtitle_share:
            return sample.encoded, None
        return sample.encoded, sample.subtitle
    if rng.random() < 0.5:
        keep = rng.choice(ABLATABLE)
        dropped = tuple(m for m in ABLATABLE if m != keep)
    else:
        dropped = (rng.choice(ABLATABLE),)
    encoded = without(sample.encoded, tuple(m for m in dropped if m != "subtitle"))
    return encoded, None if "subtitle" in dropped else sample.subtitle


def instruction_loss(model: EmotionLlama, batch: list[list], projected: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Cross-entropy on the answer and its ``</s>``, every other position masked."""
    sequences = [model.assemble(pieces, proj) for pieces, proj in zip(batch, projected)]
    length = max(len(s) for s in sequences)
    hidden = sequences[0].inputs_embeds.shape[-1]
    embeds = torch.zeros(len(sequences), length, hidden)
    mask = torch.zeros(len(sequences), length, dtype=torch.long)
    labels = torch.full((len(sequences), length), -100)
    for row, seq in enumerate(sequences):
        embeds[row, : len(seq)] = seq.inputs_embeds[0]
        mask[row, : len(seq)] = 1
        for i, kind in enumerate(seq.kind_at()):
            if kind in ("answer", "eos"):
                labels[row, i] = seq.token_ids[i]
    return model.llama_model(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss


@torch.no_grad()
def calibrate_adapters(model: EmotionLlama, samples: list[TuningSample], n: int = 64) -> dict[str, float]:
    """Scale each freshly initialised adapter so its outputs have the RMS of the LLM's
    token embeddings. Untouched, they come out about 20x larger in the tiny preset and
    drown the prompt text in the residual stream before training can adjust them."""
    target = model.llama_model.get_input_embeddings().weight.float().pow(2).mean().sqrt()
    slots = {"visual": "llama_proj", "cls": "cls_tk_llama_proj", "face": "feats_llama_proj1",
             "temporal": "feats_llama_proj2", "audio": "feats_llama_proj3"}
    outputs: dict[str, list[torch.Tensor]] = {slot: [] for slot in slots}
    for sample in samples[:n]:
        for slot, tokens in model.project(sample.encoded).items():
            outputs[slot].append(tokens.float())
    scales = {}
    adapters = model.adapters()
    for slot, name in slots.items():
        rms = torch.cat(outputs[slot]).pow(2).mean().sqrt()
        scale = float(target / rms.clamp_min(1e-8))
        adapters[name].weight.mul_(scale)
        adapters[name].bias.mul_(scale)
        scales[name] = round(scale, 4)
    return scales


def trainable_parameters(model: EmotionLlama) -> list[nn.Parameter]:
    params = [p for layer in model.adapters().values() for p in layer.parameters()]
    params += [p for n, p in model.llama_model.named_parameters() if ".lora_" in n]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return params


def instruction_tune(model: EmotionLlama, samples: list[TuningSample], settings: StageSettings, stage: int,
                     seed: int, label_share: float = 0.5, modality_dropout: float = 0.0, follow_up: float = 0.0,
                     subtitle_dropout: float = 0.0) -> dict:
    params = trainable_parameters(model)
    steps = stage_steps(len(samples), settings)
    step_with = optimiser(params, settings, steps, clip_norm=1.0)
    rng = random.Random(seed + stage)
    probe_rng = random.Random(seed)
    probe = [conversation(s, "emotion" if i % 2 else "reason", probe_rng, stage, s.subtitle)
             for i, s in enumerate(samples[:PROBE_SIZE])]

    def probe_loss() -> torch.Tensor:
        return instruction_loss(model, probe, [model.project(s.encoded) for s in samples[:PROBE_SIZE]])

    before = _probe(model, probe_loss)
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc=f"instruction tuning, stage {stage}", unit="step"):
        chosen = rng.sample(samples, min(settings.batch_size, len(samples)))
        tasks = ["emotion" if rng.random() < label_share else "reason" for _ in chosen]
        inputs = [with_dropout(s, t, rng, modality_dropout, subtitle_dropout) for s, t in zip(chosen, tasks)]
        batch = [conversation(s, t, rng, stage, words, follow_up) for s, t, (_, words) in zip(chosen, tasks, inputs)]
        projected = [model.project(encoded) for encoded, _ in inputs]
        losses.append(step_with(instruction_loss(model, batch, projected)))
    after = _probe(model, probe_loss)
    for p in params:
        p.requires_grad_(False)
    return {**loss_summary(losses), "probe_before": before, "probe_after": after}


def loss_summary(losses: list[float]) -> dict[str, float]:
    """Mean loss over the first and the last quarter of the steps."""
    quarter = max(1, len(losses) // 4)
    return {"first": round(float(np.mean(losses[:quarter])), 4), "last": round(float(np.mean(losses[-quarter:])), 4),
            "steps": len(losses)}


# -- the whole recipe ---------------------------------------------------------------------
def run(config: TrainConfig) -> dict:
    """Run every stage that has not run yet; returns the training report."""
    from .checkpoints import from_pretrained, save_pretrained
    from .tokenizer import train_tokenizer

    torch.manual_seed(config.seed)
    work = Path(config.work)
    work.mkdir(parents=True, exist_ok=True)
    report_path = work / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {"seconds": {}}

    def timed(name: str, fn):
        start = time.perf_counter()
        result = fn()
        report["seconds"][name] = round(time.perf_counter() - start, 1)
        report_path.write_text(json.dumps(report, indent=1))
        return result

    corpus_root = Path(config.corpus) if Path(config.corpus).is_dir() else Path(config.corpus).parent
    annotations = [a for a in load_annotations(config.corpus) if a.split in (None, "train", "val")]
    annotations = annotations[: config.limit] if config.limit else annotations
    if not annotations:
        raise EmotionLlamaError(f"no training annotations in {config.corpus}")
    cache = work / "prepared"
    timed("prepare", lambda: prepare_all(annotations, corpus_root, cache, preset(config.preset), config.workers,
                                         config.face_scale_factor, config.face_min_fraction))
    annotations = [a for a in annotations if (cache / f"{a.name}.npz").exists()]

    stages = work / "stages"
    after_encoders = stages / "0_encoders"
    if not (after_encoders / "model.safetensors").exists():
        tokenizer = train_tokenizer(corpus_texts(annotations), vocab_size=config.vocab_size)
        model_config = replace(preset(config.preset), llm={**preset(config.preset).llm, "vocab_size": len(tokenizer)})
        model = EmotionLlama(model_config, tokenizer=tokenizer)
        report["encoder_accuracy"] = timed("encoders", lambda: pretrain_encoders(
            model, annotations, cache, config.encoders, config.seed, config.encoder_epochs, config.workers,
            config.encoder_clue_weight))
        save_pretrained(model, after_encoders)
    model = from_pretrained(after_encoders)

    features = FeatureStore(work / "features")

    def extract() -> None:
        for ann in tqdm([a for a in annotations if not features.has(a.name)], desc="extract features", unit="clip"):
            clip = load_prepared(cache, ann)
            features.write(ann.name, model.encode(clip), clip)

    timed("extract", extract)

    after_language = stages / "1_language"
    if not (after_language / "model.safetensors").exists():
        report["language_loss"] = timed("language", lambda: pretrain_language(model, annotations, config.language, config.seed))
        save_pretrained(model, after_language)
    model = from_pretrained(after_language)

    tuning = [TuningSample(a.name, features.read(a.name).encoded, a.subtitle, a) for a in annotations]
    if not (stages / "2_stage1" / "model.safetensors").exists():
        report["adapter_scales"] = calibrate_adapters(model, tuning)
    for stage, settings, share in ((1, config.stage1, 0.5), (2, config.stage2, config.label_share_stage2)):
        folder = stages / f"{stage + 1}_stage{stage}"
        if not (folder / "model.safetensors").exists():
            report[f"stage{stage}_loss"] = timed(f"stage{stage}", functools.partial(
                instruction_tune, model, tuning, settings, stage, config.seed, share, config.modality_dropout,
                config.follow_up_share if stage == 2 else 0.0, config.subtitle_dropout,
            ))
            save_pretrained(model, folder)
        model = from_pretrained(folder)

    if config.export:
        save_pretrained(model, config.export)
        (Path(config.export) / "training.json").write_text(
            json.dumps({"config": _jsonable(config), "report": report}, indent=1)
        )
    report_path.write_text(json.dumps(report, indent=1))
    return report


def _jsonable(config: TrainConfig) -> dict:
    data = asdict(config)
    for key in ("corpus", "work", "export"):
        if data.get(key):
            data[key] = Path(data[key]).name
    return data
