"""Clip -> Analysis: the one entry the app, the API, the CLI and ``evaluate`` call.

``Engine.prepare`` takes a path or an already decoded ``PreparedClip`` and returns it
encoded, through one content-addressed cache (``cache.py``). ``Engine.analyze_iter``
runs the stages in order, each a short method or a module of its own: label
probabilities (``explain.probabilities_from_scores``), writing (``writing.Writer``),
explaining (``explain.explain_answer``) and assembling the ``Analysis``. ``ChatSession``
keeps the encoded clip so that follow-up questions do not re-encode it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from . import runtime
from .analysis import DEFAULT_OPTIONS, Analysis, AnalysisOptions, Event, ReasoningCheck, torn_warning
from .asr import find_subtitle
from .cache import SHARED, ClipCache, file_digest
from .chat import ChatSession
from .clip import PreparedClip
from .config import tiny
from .encoders import without
from .explain import Explanation, explain_answer, probabilities_from_scores
from .familiarity import FeatureStats
from .model import EmotionLlama, EncodedClip
from .prompts import Piece, answer_pieces, first_turn, reason_after_label, user_turn
from .text_limits import check_labels, check_prompt_length, check_text
from .vocab import GREEDY, frame_for
from .writing import Writer

__all__ = ["Analysis", "AnalysisOptions", "ChatSession", "Engine", "Event", "ReasoningCheck", "load_engine"]
TINY_WEIGHTS = Path(__file__).parent / "weights" / "tiny"


class Engine:
    """A loaded model plus what it needs per request. Safe to share between threads."""

    def __init__(self, model: EmotionLlama, info: dict[str, str], cache: ClipCache | None = None,
                 familiarity: FeatureStats | None = None):
        self.model = model
        self.info = info
        self.cache = cache if cache is not None else SHARED
        self.familiarity = familiarity  # the training clips' statistics (familiarity.py), when the weights have them
        self.writer = Writer(model)
        self._encoders_key: str | None = None

    # -- 0. bound the cost ----------------------------------------------------------------
    def check_text(self, options: AnalysisOptions, subtitle: str | None) -> None:
        """Every text of a request within its limits (``text_limits``), before any work."""
        tokenizer = self.model.tokenizer
        check_text("subtitle", subtitle, tokenizer)
        check_text("question", options.question, tokenizer)
        check_labels(options.labels, tokenizer)

    def words_of(self, prepared: PreparedClip, options: AnalysisOptions) -> str | None:
        """The subtitle the prompt carries (None when left out), within its limits whatever
        its source: typed, a subtitle file or Whisper."""
        words = None if "subtitle" in options.leave_out else prepared.subtitle.text
        check_text("subtitle", words, self.model.tokenizer)
        return words

    # -- 1. prepare and encode ---------------------------------------------------------
    def decoded(self, clip: str | Path | PreparedClip, subtitle: str | None = None,
                options: AnalysisOptions = DEFAULT_OPTIONS) -> PreparedClip:
        """The clip decoded for ``options`` (media, faces, subtitle: CPU work only, which on
        ZeroGPU runs outside the borrowed GPU), through the cache. A typed ``subtitle``
        replaces the clip's own."""
        if isinstance(clip, PreparedClip):
            if subtitle and subtitle.strip():
                clip = replace(clip, subtitle=find_subtitle(None, None, typed=subtitle))
            return clip
        key = self.cache.key(clip)
        decoded = self.cache.decoded(key, clip, options.person)
        frame = frame_for(options.frame_choice, options.demo_parity)
        return decoded.prepared(frame, self.cache.subtitle(key, clip, decoded, subtitle))

    def prepare(self, clip: str | Path | PreparedClip, subtitle: str | None = None,
                options: AnalysisOptions = DEFAULT_OPTIONS) -> tuple[PreparedClip, EncodedClip]:
        """The clip decoded and encoded for ``options``: from a file through the cache, or
        a ``PreparedClip`` (media decoded by the caller) encoded as it is."""
        prepared = self.decoded(clip, subtitle, options)
        if isinstance(clip, PreparedClip):
            return prepared, without(self.model.encode(prepared, timings=prepared.timings), options.zeroed)
        key = (self.cache.key(clip), prepared.person, frame_for(options.frame_choice, options.demo_parity),
               self.encoders_key)
        encoded = self.cache.encoded(key, lambda: self.model.encode(prepared, timings=prepared.timings))
        return prepared, without(encoded, options.zeroed)

    @property
    def encoders_key(self) -> str:
        """Which encoders made a cached encoding (their weights' fingerprint)."""
        if self._encoders_key is None:
            self._encoders_key = self.model.encoder_fingerprint()
        return self._encoders_key

    # -- 2. label probabilities ----------------------------------------------------------
    def label_probabilities(self, projected: dict[str, torch.Tensor], subtitle: str | None,
                            labels: tuple[str, ...], demo_parity: bool = False,
                            context: int = GREEDY.max_context_tokens) -> dict[str, float]:
        """Every candidate label's probability as the answer to the label question. The
        question (everything before the answer) is run once and every label is scored
        from its KV cache (``EmotionLlama.label_log_likelihoods``)."""
        prompt = first_turn(user_turn("emotion", subtitle=subtitle, labels=labels), demo_parity=demo_parity)
        prefix = self.model.assemble(prompt, projected)
        # Answers are tokenised on their own (``Piece.standalone``), so they are exactly the
        # tail the whole sequence would have.
        answers = [self.model.assemble(answer_pieces(label, close=True), projected) for label in labels]
        check_prompt_length("label question", len(prefix) + max(len(a) for a in answers), context)
        return probabilities_from_scores(labels, self.model.label_log_likelihoods(prefix, answers))

    # -- 3. the whole analysis -------------------------------------------------------------
    def analyze(self, clip: str | Path | PreparedClip, subtitle: str | None = None,
                options: AnalysisOptions = DEFAULT_OPTIONS) -> Analysis:
        result = None
        for result in self.analyze_iter(clip, subtitle, options):
            pass
        assert isinstance(result, Analysis)
        return result

    def analyze_iter(self, clip: str | Path | PreparedClip, subtitle: str | None = None,
                     options: AnalysisOptions = DEFAULT_OPTIONS) -> Iterator[Event | Analysis]:
        """Progress events and streamed answer text, then the finished ``Analysis``."""
        timings: dict[str, float] = {}
        self.check_text(options, subtitle)
        yield Event("stage", "reading the clip and encoding it")
        with _timed(timings, "prepare_and_encode"):
            prepared, encoded = self.prepare(clip, subtitle, options)
        timings = {**prepared.timings, **timings}
        words = self.words_of(prepared, options)
        projected = self.model.project(encoded)

        yield Event("stage", "scoring every label")
        with _timed(timings, "label_probabilities"):
            probabilities = self.label_probabilities(projected, words, options.labels, options.demo_parity,
                                                     options.generation.max_context_tokens)
        label = max(probabilities, key=probabilities.get)

        yield Event("stage", "writing the answer")
        with _timed(timings, "generate"):
            prompt = answer_prompt(options, label, words)
            answer, check = yield from self._answer(self.model.assemble(prompt, projected), label, options)

        explanation = None
        if options.explain and answer:
            yield Event("stage", "measuring attention")
            with _timed(timings, "attention"):
                explanation = explain_answer(self.model, self.model.assemble(prompt + answer_pieces(answer), projected))
        yield _result(self, prepared, encoded, options, words, probabilities, answer, check, explanation, timings)

    def _answer(self, sequence, label: str, options: AnalysisOptions):
        """Stream the answer; a follow-up reasoning is checked against ``label`` and redrafted."""
        if options.follow_up:
            return (yield from self.writer.reasoning(sequence, label, options.labels, options.generation,
                                                     options.reasoning_redrafts))
        answer = ""
        for answer in self.writer.stream(sequence, options.generation):
            yield Event("text", answer)
        return answer, None

    def chat(self, clip: str | Path | PreparedClip, subtitle: str | None = None,
             options: AnalysisOptions = DEFAULT_OPTIONS) -> ChatSession:
        self.check_text(options, subtitle)
        prepared, encoded = self.prepare(clip, subtitle, options)
        return ChatSession(self.model, self.writer, self.words_of(prepared, options), self.model.project(encoded),
                           options)


def _result(engine: Engine, prepared: PreparedClip, encoded: EncodedClip, options: AnalysisOptions, words: str | None,
            probabilities: dict[str, float], answer: str, check: ReasoningCheck | None,
            explanation: Explanation | None, timings: dict[str, float]) -> Analysis:
    filled = dict(encoded.filled)
    if not words:
        filled["subtitle"] = "left out" if "subtitle" in options.leave_out else "none"
    domain = engine.familiarity.check(prepared, encoded) if engine.familiarity else None
    warnings = [*([domain.warning] if domain and domain.warning else []), *prepared.warnings,
                *([engine.info["warning"]] if engine.info.get("warning") else []), *torn_warning(check)]
    return Analysis(
        label=max(probabilities, key=probabilities.get), probabilities=probabilities, answer=answer,
        task=options.task,
        modality_attention=explanation.modality_shares if explanation else {},
        span_attention=explanation.span_shares if explanation else {},
        modalities_present={**encoded.present, "subtitle": bool(words)}, filled_modalities=filled,
        subtitle=prepared.subtitle.text, subtitle_source=prepared.subtitle.source,
        frame_time=prepared.global_frame_time, warnings=warnings, timings=timings, engine=dict(engine.info),
        frame=prepared.global_frame, heatmap=explanation.heatmap if explanation else None,
        face_crops=prepared.face_crops, peak_frame_index=prepared.peak_frame_index, reasoning_check=check,
        subtitle_note=prepared.subtitle.note, out_of_domain=domain, face_coverage=prepared.face_coverage,
        face_note=prepared.face_note, people=prepared.people, person=prepared.person,
        audio_note=prepared.audio_note,
    )


def answer_prompt(options: AnalysisOptions, label: str, words: str | None) -> list[Piece]:
    """The prompt the answer is written after: a follow-up to the label for a reasoning,
    else the task's question in one turn."""
    rng = random.Random(options.generation.seed)
    if options.follow_up:
        return reason_after_label(label, subtitle=words, labels=options.labels, rng=rng)
    user = user_turn(options.task, subtitle=words, question=options.question, labels=options.labels, rng=rng)
    return first_turn(user, demo_parity=options.demo_parity)


@contextmanager
def _timed(timings: dict[str, float], name: str):
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


# -- loading ------------------------------------------------------------------------------
def random_tiny_model(seed: int = 0) -> EmotionLlama:
    """A tiny model with random weights: for tests, and as a last resort with a warning."""
    from .tokenizer import train_tokenizer

    tokenizer = train_tokenizer([], vocab_size=512)
    torch.manual_seed(seed)
    return EmotionLlama(tiny(vocab_size=len(tokenizer)), tokenizer=tokenizer).eval()


def load_engine(weights: str | None = None, *, device: str | None = None) -> Engine:
    """``weights``: a folder saved by ``save_pretrained``, ``"official"``, or None for the
    default (``EMOTION_LLAMA_WEIGHTS``, else the shipped tiny model). The engine's model has
    its LoRA merged (``EmotionLlama.merge_lora``) unless its LLM is quantised: it answers, it
    is not trained or saved. ``runtime.py`` settings choose precision, quantisation and
    compiled decoding. ``info["weights_sha256"]`` names the weights in reports: the folder's
    ``model.safetensors``, the official Emotion-LLaMA checkpoint, or ``"random"``."""
    from .checkpoints import from_pretrained
    from .errors import WeightsUnavailableError

    weights = weights or os.environ.get("EMOTION_LLAMA_WEIGHTS")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if weights == "official":
        engine = _official_engine(device)
    else:
        folder = Path(weights) if weights else TINY_WEIGHTS
        if folder.is_dir() and (folder / "model.safetensors").is_file():
            model = from_pretrained(folder, device=device).merge_lora()
            engine = Engine(model, {"weights": model.config.preset, "device": device, "dtype": "float32",
                                    "weights_sha256": file_digest(folder / "model.safetensors")},
                            familiarity=FeatureStats.load(folder, model.encoder_fingerprint()))
        elif weights:
            raise WeightsUnavailableError(f"no Emotion-LLaMA weights in {weights}")
        else:
            warning = "untrained tiny model: answers are noise until trained weights are installed"
            engine = Engine(random_tiny_model().to(device).merge_lora(),
                            {"weights": "tiny (random)", "device": device, "dtype": "float32", "weights_sha256": "random",
                             "warning": warning})
    engine.model.static_decoding = runtime.compiled_decoding(device)
    engine.info["decoding"] = "static cache, compiled" if engine.model.static_decoding else "dynamic cache"
    return engine


def _official_engine(device: str) -> Engine:
    """The official weights at ``EMOTION_LLAMA_DTYPE``, quantised when ``EMOTION_LLAMA_QUANT`` asks."""
    from .checkpoints import load_official

    dtype = runtime.llm_dtype(device)
    quantization = runtime.quantization(device, dtype)
    runtime.compiled_decoding(device)  # a bad setting is refused before 14 GB are fetched
    model = load_official(device=device, dtype=dtype, quantization=quantization)
    if quantization is None:
        model = model.merge_lora()
    info = {"weights": "official", "device": device, "dtype": str(dtype).removeprefix("torch."),
            "quantization": runtime.choice("quant"), "weights_sha256": official_sha256(model.config.sources.checkpoint)}
    return Engine(model, info)


def official_sha256(checkpoint: str | None) -> str:
    """The official model's fingerprint: the Emotion-LLaMA checkpoint's hash (the file that makes
    the frozen published encoders and LLaMA-2 this model; their sources are named in the config)."""
    return file_digest(checkpoint) if checkpoint and Path(checkpoint).is_file() else "none (no Emotion-LLaMA checkpoint)"
