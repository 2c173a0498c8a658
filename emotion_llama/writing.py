"""Writing answers: streaming generation, and redrafts of a reasoning that argues for
another label than the one shown beside it."""

from __future__ import annotations

import re
import threading
from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import replace
from typing import Any

from .analysis import Event, ReasoningCheck
from .model import generate_ids
from .processor import AssembledSequence
from .vocab import REDRAFT_TEMPERATURE, GenerationSettings


def argued_label(text: str, labels: tuple[str, ...]) -> str | None:
    """The label a reasoning text argues for: the last candidate label it names, as the
    candidate is spelled."""
    by_lower = {label.lower(): label for label in labels}
    pattern = re.compile(r"\b(" + "|".join(re.escape(x) for x in sorted(labels, key=len, reverse=True)) + r")\b",
                         re.IGNORECASE)
    found = pattern.findall(text)
    return by_lower[found[-1].lower()] if found else None


def redraft_settings(settings: GenerationSettings, draft: int) -> GenerationSettings:
    """Settings of redraft number ``draft`` (1, 2, ...): sampled, each with its own seed."""
    return replace(settings, do_sample=True, temperature=max(settings.temperature, REDRAFT_TEMPERATURE),
                   seed=(settings.seed or 0) + draft)


GENERATION_THREAD = "emotion-llama-generate"


class Writer:
    """Generates answer text with one model; safe to share between threads."""

    def __init__(self, model):
        self.model = model

    def stream(self, sequence: AssembledSequence, settings: GenerationSettings) -> Iterator[str]:
        """Yield the answer text as it grows; the last value is the full answer. Closing the
        generator early (a visitor who left) stops the generation at its next token and
        frees the model before ``close()`` returns."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.model.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = threading.Event()
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["ids"] = self.model.generate(sequence, settings, streamer=streamer, stop=stop)
            except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
                result["error"] = error
                streamer.end()

        thread = threading.Thread(target=work, name=GENERATION_THREAD, daemon=True)
        thread.start()
        text = ""
        try:
            for chunk in streamer:
                text += chunk
                yield text
        finally:
            stop.set()
            thread.join()
        if "error" in result:
            raise result["error"]
        yield self.model.tokenizer.decode(result["ids"], skip_special_tokens=True).strip()

    def write(self, sequence: AssembledSequence, settings: GenerationSettings, stream: bool) -> Iterator[str]:
        """The answer as it grows (``stream``), or once, whole."""
        if stream:
            yield from self.stream(sequence, settings)
        else:
            yield self.model.tokenizer.decode(self.model.generate(sequence, settings), skip_special_tokens=True).strip()

    def reasoning(
        self, sequence: AssembledSequence, label: str, labels: tuple[str, ...], settings: GenerationSettings,
        redrafts: int, *, stream: bool = True,
    ) -> Generator[Event, None, tuple[str, ReasoningCheck]]:
        """Write the reasoning for ``label`` (``sequence`` asks for it as a follow-up); when it
        argues for another label, sample ``redrafts`` more drafts as one batch and keep the
        first that agrees. Yields progress (text only when ``stream``) and returns the
        reasoning kept and its ``ReasoningCheck``. A first draft that names no label (cut
        short by the token limit, say) is kept as it is; so is the first draft when no
        redraft agrees. The wait is at most two generations: the first draft, then the batch."""
        text = ""
        with closing(self.write(sequence, settings, stream)) as drafts:
            for text in drafts:
                if stream:
                    yield Event("text", text)
        argued = argued_label(text, labels)
        if argued == label or argued is None or not redrafts:
            return text, ReasoningCheck(label, argued, 1)
        yield Event("stage", f"the reasoning argued for {argued}, not {label}: "
                             f"writing {redrafts} more draft{'s' if redrafts > 1 else ''} at once")
        for number, redraft in enumerate(self.redrafts(sequence, redraft_settings(settings, 1), redrafts),
                                           start=2):
            if argued_label(redraft, labels) == label:
                if stream:
                    yield Event("text", redraft)
                return redraft, ReasoningCheck(label, label, number)
        return text, ReasoningCheck(label, argued, redrafts + 1)

    def redrafts(self, sequence: AssembledSequence, settings: GenerationSettings, count: int) -> list[str]:
        """``count`` drafts of the answer to ``sequence`` (sampled when ``settings`` say so),
        generated as one batch."""
        ids = generate_ids(self.model, sequence, settings, count=count)
        return [self.model.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]

    def reasoning_quietly(self, sequence: AssembledSequence, label: str, labels: tuple[str, ...],
                          settings: GenerationSettings, redrafts: int) -> tuple[str, ReasoningCheck]:
        """``reasoning`` without streaming or progress: the reasoning and its check."""
        steps = self.reasoning(sequence, label, labels, settings, redrafts, stream=False)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value
