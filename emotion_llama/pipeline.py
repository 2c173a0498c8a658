"""Clip -> Analysis: the one function the app, the CLI and scripts call.

``Engine`` owns a loaded model. ``Engine.analyze_iter`` yields progress events and
streamed answer text, then the finished ``Analysis``; ``Engine.analyze`` returns just
the ``Analysis``. ``ChatSession`` keeps the encoded clip so that follow-up questions do
not re-encode it.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .clip import PreparedClip, Subtitle
from .config import MERR_LABELS, GenerationSettings, tiny
from .data.merr import argued_label
from .errors import PromptError
from .explain import (
    attention_shares,
    heatmap_on_frame,
    key_weights,
    modality_shares,
    probabilities_from_scores,
    visual_heatmap,
)
from .model import AssembledSequence, EmotionLlama, EncodedClip
from .prompts import TASKS, Piece, answer_pieces, as_history, first_turn, later_turn, reason_after_label, user_turn

TINY_WEIGHTS = Path(__file__).parent / "weights" / "tiny"
GREEDY = GenerationSettings(do_sample=False)
# A redraft of the reasoning samples at least this hot, so that it can differ from the first.
REDRAFT_TEMPERATURE = 0.7


@dataclass(frozen=True)
class AnalysisOptions:
    task: str = "emotion"
    labels: tuple[str, ...] = MERR_LABELS
    question: str | None = None  # replaces the task's instruction (free questions)
    generation: GenerationSettings = GREEDY
    leave_out: tuple[str, ...] = ()  # any of global, face, temporal, audio, subtitle
    demo_parity: bool = False
    frame_choice: str = "peak"  # peak, middle or first
    explain: bool = True  # attention shares and heatmap (one extra forward pass)
    # ``reason``: ask for the reasoning as a follow-up to the label answer, so the two
    # agree (False: one turn, as the paper's evaluation and the reference demo ask it).
    reason_follows_label: bool = True
    # With the follow-up: when the reasoning concludes with another label than the top
    # one, write up to this many more drafts (sampled) and show the first that agrees;
    # if none does, show the first draft and say so. 0: always show the first draft.
    reasoning_redrafts: int = 3

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise PromptError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if len(self.labels) < 2:
            raise PromptError("give at least two candidate labels")
        if self.reasoning_redrafts < 0:
            raise ValueError("reasoning_redrafts must be 0 or more")


@dataclass(frozen=True)
class ReasoningCheck:
    """Whether the reasoning shown concludes with the label shown beside it.

    ``argued`` is the label the reasoning argues for (the last candidate it names),
    ``drafts`` how many reasonings were written.
    """

    label: str
    argued: str | None
    drafts: int

    @property
    def agrees(self) -> bool:
        return self.argued == self.label

    @property
    def first_agreed(self) -> bool:
        """The first draft, written with the requested settings, already agreed."""
        return self.agrees and self.drafts == 1

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "argued": self.argued, "agrees": self.agrees, "drafts": self.drafts,
                "first_agreed": self.first_agreed}


def redraft_settings(settings: GenerationSettings, draft: int) -> GenerationSettings:
    """Settings of redraft number ``draft`` (1, 2, ...): sampled, each with its own seed."""
    return replace(settings, do_sample=True, temperature=max(settings.temperature, REDRAFT_TEMPERATURE),
                   seed=(settings.seed or 0) + draft)


@dataclass
class Analysis:
    label: str
    probabilities: dict[str, float]
    answer: str
    task: str
    modality_attention: dict[str, float]
    span_attention: dict[str, float]
    modalities_present: dict[str, bool]
    filled_modalities: dict[str, str]
    subtitle: str | None
    subtitle_source: str
    frame_time: float
    warnings: list[str]
    timings: dict[str, float]
    engine: dict[str, str]
    # Pictures for the UI; not part of the JSON.
    frame: np.ndarray | None = field(default=None, repr=False)
    heatmap: np.ndarray | None = field(default=None, repr=False)
    face_crops: np.ndarray | None = field(default=None, repr=False)
    peak_frame_index: int | None = None
    reasoning_check: ReasoningCheck | None = None
    subtitle_note: str | None = None  # why there is no subtitle, or how it was made

    def overlay(self) -> np.ndarray | None:
        if self.frame is None or self.heatmap is None:
            return None
        return heatmap_on_frame(self.frame, self.heatmap)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "answer": self.answer,
            "task": self.task,
            "modality_attention": self.modality_attention,
            "span_attention": self.span_attention,
            "modalities_present": self.modalities_present,
            "filled_modalities": self.filled_modalities,
            "subtitle": {"text": self.subtitle, "source": self.subtitle_source, "note": self.subtitle_note},
            "frame_time": round(self.frame_time, 3),
            "warnings": self.warnings,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "engine": self.engine,
            "reasoning_check": self.reasoning_check.to_json() if self.reasoning_check else None,
        }


@dataclass(frozen=True)
class Event:
    """Progress of ``analyze_iter``: a stage that started, or answer text so far."""

    kind: str  # "stage" or "text"
    value: str


class Engine:
    """A loaded model plus what it needs per request. Safe to share between threads."""

    def __init__(self, model: EmotionLlama, info: dict[str, str], cache_size: int = 8):
        self.model = model
        self.info = info
        self._cache: OrderedDict[str, tuple[PreparedClip, EncodedClip]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    # -- stages ----------------------------------------------------------------------
    def prepare_and_encode(
        self, clip: str | Path | PreparedClip, subtitle: str | None, options: AnalysisOptions
    ) -> tuple[PreparedClip, EncodedClip]:
        """Decode, find faces, get the subtitle and encode; files are cached by content.

        A ``PreparedClip`` (media already decoded by the caller) is encoded as it is.
        """
        if isinstance(clip, PreparedClip):
            if subtitle:
                clip = replace(clip, subtitle=Subtitle(subtitle.strip(), "user"))
            return clip, self._encode(clip, options)
        from .prepare import PrepareOptions, prepare_clip

        key = "|".join(
            [_file_digest(clip), subtitle or "", options.frame_choice, ",".join(options.leave_out), str(options.demo_parity)]
        )
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        frame_choice = "first" if options.demo_parity else options.frame_choice
        prepared = prepare_clip(clip, subtitle=subtitle, options=PrepareOptions(frame_choice=frame_choice))
        encoded = self._encode(prepared, options)
        with self._cache_lock:
            self._cache[key] = (prepared, encoded)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return prepared, encoded

    def _encode(self, prepared: PreparedClip, options: AnalysisOptions) -> EncodedClip:
        return self.model.encode(
            prepared, leave_out=options.leave_out, demo_parity=options.demo_parity, timings=prepared.timings
        )

    def label_probabilities(
        self, projected: dict[str, torch.Tensor], subtitle: str | None, labels: tuple[str, ...], demo_parity: bool
    ) -> dict[str, float]:
        prompt = first_turn(user_turn("emotion", subtitle=subtitle, labels=labels), demo_parity=demo_parity)
        sequences = [self.model.assemble(prompt + answer_pieces(label, close=True), projected) for label in labels]
        return probabilities_from_scores(labels, self.model.label_log_likelihoods(sequences))

    def stream(self, sequence: AssembledSequence, settings: GenerationSettings) -> Iterator[str]:
        """Yield the answer text as it grows; the last value is the full answer."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.model.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["ids"] = self.model.generate(sequence, settings, streamer=streamer)
            except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
                result["error"] = error
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        text = ""
        for chunk in streamer:
            text += chunk
            yield text
        thread.join()
        if "error" in result:
            raise result["error"]
        yield self.model.tokenizer.decode(result["ids"], skip_special_tokens=True).strip()

    def write_reasoning(
        self, sequence: AssembledSequence, label: str, labels: tuple[str, ...], settings: GenerationSettings,
        redrafts: int, *, stream: bool = True,
    ) -> Generator[Event, None, tuple[str, ReasoningCheck]]:
        """Write the reasoning for ``label`` (``sequence`` asks for it as a follow-up),
        redrafting while it argues for another label; yields progress (text only when
        ``stream``) and returns the reasoning kept and its ``ReasoningCheck``. A first draft
        that names no label (cut short by the token limit, say) is kept as it is; a
        redraft that names none does not replace the first draft."""
        first: tuple[str, str | None] | None = None
        argued: str | None = None
        for draft in range(redrafts + 1):
            if draft:
                yield Event("stage", f"the reasoning argued for {argued or 'no label'}, not {label}: "
                                     f"draft {draft + 1} of {redrafts + 1}")
            current = settings if draft == 0 else redraft_settings(settings, draft)
            if stream:
                text = ""
                for text in self.stream(sequence, current):
                    yield Event("text", text)
            else:
                text = self.model.tokenizer.decode(self.model.generate(sequence, current), skip_special_tokens=True).strip()
            argued = argued_label(text, labels)
            if first is None:
                first = (text, argued)
            if argued == label or (argued is None and draft == 0):
                return text, ReasoningCheck(label, argued, draft + 1)
        assert first is not None
        if stream and redrafts:
            yield Event("text", first[0])
        return first[0], ReasoningCheck(label, first[1], redrafts + 1)

    def reasoning(self, sequence: AssembledSequence, label: str, labels: tuple[str, ...], settings: GenerationSettings,
                  redrafts: int) -> tuple[str, ReasoningCheck]:
        """``write_reasoning`` without streaming or progress: the reasoning and its check."""
        steps = self.write_reasoning(sequence, label, labels, settings, redrafts, stream=False)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    # -- the whole analysis ----------------------------------------------------------
    def analyze(self, clip: str | Path | PreparedClip, subtitle: str | None = None, options: AnalysisOptions = AnalysisOptions()) -> Analysis:
        result = None
        for item in self.analyze_iter(clip, subtitle, options):
            result = item
        assert isinstance(result, Analysis)
        return result

    def analyze_iter(
        self, clip: str | Path | PreparedClip, subtitle: str | None = None, options: AnalysisOptions = AnalysisOptions()
    ) -> Iterator[Event | Analysis]:
        timings: dict[str, float] = {}
        yield Event("stage", "reading the clip and encoding it")
        start = time.perf_counter()
        prepared, encoded = self.prepare_and_encode(clip, subtitle, options)
        timings.update(prepared.timings)
        timings["prepare_and_encode"] = time.perf_counter() - start
        words = None if "subtitle" in options.leave_out else prepared.subtitle.text
        projected = self.model.project(encoded)

        yield Event("stage", "scoring every label")
        start = time.perf_counter()
        probabilities = self.label_probabilities(projected, words, options.labels, options.demo_parity)
        timings["label_probabilities"] = time.perf_counter() - start

        yield Event("stage", "writing the answer")
        start = time.perf_counter()
        rng = random.Random(options.generation.seed)
        label = max(probabilities, key=probabilities.get)
        follow_up = options.task == "reason" and options.reason_follows_label and not options.demo_parity
        if follow_up:
            prompt = reason_after_label(label, subtitle=words, labels=options.labels, rng=rng)
        else:
            prompt = first_turn(
                user_turn(options.task, subtitle=words, question=options.question, labels=options.labels, rng=rng),
                demo_parity=options.demo_parity,
            )
        sequence = self.model.assemble(prompt, projected)
        check = None
        if follow_up:
            answer, check = yield from self.write_reasoning(
                sequence, label, options.labels, options.generation, options.reasoning_redrafts)
        else:
            answer = ""
            for answer in self.stream(sequence, options.generation):
                yield Event("text", answer)
        timings["generate"] = time.perf_counter() - start

        span_shares: dict[str, float] = {}
        heat = None
        if options.explain and answer:
            yield Event("stage", "measuring attention")
            start = time.perf_counter()
            full = self.model.assemble(prompt + answer_pieces(answer), projected)
            maps = self.model.attention_maps(full)
            kinds = full.kind_at()
            span_shares = attention_shares(maps, kinds)
            config = self.model.config
            heat = visual_heatmap(
                key_weights(maps, kinds, "visual"), config.visual_grid, config.global_vision["patch_size"]
            )
            timings["attention"] = time.perf_counter() - start

        warnings = list(prepared.warnings)
        if self.info.get("warning"):
            warnings.append(self.info["warning"])
        if check is not None and check.argued is not None and not check.agrees:
            warnings.append(
                f"The reasoning argues for {check.argued or 'no listed label'}, not for the top label {label}, "
                f"even after {check.drafts} drafts: the model is torn between them."
            )
        present = {**encoded.present, "subtitle": bool(words)}
        filled = dict(encoded.filled)
        if not words:
            filled["subtitle"] = "left out" if "subtitle" in options.leave_out else "none"
        yield Analysis(
            label=label,
            probabilities=probabilities,
            answer=answer,
            task=options.task,
            modality_attention=modality_shares(span_shares),
            span_attention=span_shares,
            modalities_present=present,
            filled_modalities=filled,
            subtitle=prepared.subtitle.text,
            subtitle_source=prepared.subtitle.source,
            frame_time=prepared.global_frame_time,
            warnings=warnings,
            timings=timings,
            engine=dict(self.info),
            frame=prepared.global_frame,
            heatmap=heat,
            face_crops=prepared.face_crops,
            peak_frame_index=prepared.peak_frame_index,
            reasoning_check=check,
            subtitle_note=prepared.subtitle.note,
        )

    def chat(self, clip: str | Path | PreparedClip, subtitle: str | None = None, options: AnalysisOptions = AnalysisOptions()) -> ChatSession:
        prepared, encoded = self.prepare_and_encode(clip, subtitle, options)
        return ChatSession(self, prepared, encoded, options)


class ChatSession:
    """Multi-turn chat about one clip; the clip is encoded once."""

    def __init__(self, engine: Engine, prepared: PreparedClip, encoded: EncodedClip, options: AnalysisOptions):
        self.engine = engine
        self.prepared = prepared
        self.options = options
        self.projected = engine.model.project(encoded)
        self.turns: list[tuple[list[Piece], str]] = []  # (user pieces, answer)

    def _prompt(self, user: list[Piece], cap: int) -> tuple[list[Piece], int]:
        """Pieces of the whole chat; the oldest turns after the first are dropped to fit."""
        turns = list(self.turns)
        dropped = 0
        while True:
            pieces = first_turn(turns[0][0] if turns else user, demo_parity=self.options.demo_parity)
            if turns:
                pieces = as_history(pieces) + answer_pieces(turns[0][1], kind="history", close=True)
                for old_user, old_answer in turns[1:]:
                    pieces += as_history(later_turn(old_user)) + answer_pieces(old_answer, kind="history", close=True)
                pieces += later_turn(user)
            sequence_length = len(self.engine.model.assemble(pieces, self.projected))
            if sequence_length <= cap or len(turns) <= 1:
                return pieces, dropped
            turns.pop(1)
            dropped += 1

    def ask(self, question: str, task: str = "free", settings: GenerationSettings = GREEDY) -> Iterator[str]:
        """Stream the reply to one user turn; the turn is kept once the reply is complete."""
        words = None if "subtitle" in self.options.leave_out else self.prepared.subtitle.text
        user = user_turn(task, subtitle=words if not self.turns else None, question=question or None,
                         labels=self.options.labels)
        budget = settings.max_context_tokens - min(settings.max_new_tokens, settings.max_context_tokens // 2)
        pieces, _ = self._prompt(user, budget)
        sequence = self.engine.model.assemble(pieces, self.projected)
        answer = ""
        for answer in self.engine.stream(sequence, settings):
            yield answer
        self.turns.append((user, answer))

    def reset(self) -> None:
        self.turns.clear()


def _file_digest(path: str | Path) -> str:
    from .errors import UnreadableFileError

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise UnreadableFileError(f"cannot open {Path(path).name}: {error.strerror.lower()}") from error
    return digest.hexdigest()


# -- loading ------------------------------------------------------------------------------
def random_tiny_model(seed: int = 0) -> EmotionLlama:
    """A tiny model with random weights: for tests, and as a last resort with a warning."""
    from .tokenizer import train_tokenizer

    tokenizer = train_tokenizer([], vocab_size=512)
    torch.manual_seed(seed)
    return EmotionLlama(tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer).eval()


def load_engine(weights: str | None = None, *, device: str | None = None) -> Engine:
    """``weights``: a folder saved by ``save_pretrained``, ``"official"``, or None for the
    default (``EMOTION_LLAMA_WEIGHTS``, else the shipped tiny model)."""
    from .checkpoints import from_pretrained, load_official

    weights = weights or os.environ.get("EMOTION_LLAMA_WEIGHTS")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if weights == "official":
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        model = load_official(device=device, dtype=dtype)
        return Engine(model, {"weights": "official", "device": device, "dtype": str(dtype).removeprefix("torch.")})
    folder = Path(weights) if weights else TINY_WEIGHTS
    if folder.is_dir() and (folder / "model.safetensors").is_file():
        model = from_pretrained(folder, device=device)
        return Engine(model, {"weights": model.config.preset, "device": device, "dtype": "float32"})
    if weights:
        from .errors import WeightsUnavailableError

        raise WeightsUnavailableError(f"no Emotion-LLaMA weights in {weights}")
    model = random_tiny_model().to(device)
    return Engine(
        model,
        {
            "weights": "tiny (random)",
            "device": device,
            "dtype": "float32",
            "warning": "untrained tiny model: answers are noise until trained weights are installed",
        },
    )

