"""Prompt pieces -> LLM input embeddings with a named span for every position.

The model's processor, in the transformers sense: it knows the tokenizer and the
embedding table, not the network. ``prompts.py`` says *what* the prompt is; this says
how it becomes ``inputs_embeds``. Consecutive text pieces are tokenised together, as
the reference tokenises the text between placeholders; each token is labelled with the
piece holding its last character. Slots, ``standalone`` pieces (answers) and
``bos``/``eos`` break runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .prompts import Piece


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int  # exclusive

    def __len__(self) -> int:
        return self.end - self.start


@dataclass
class AssembledSequence:
    """LLM input embeddings with every position labelled by the span it belongs to."""

    inputs_embeds: torch.Tensor  # (1, length, hidden)
    token_ids: list[int]  # -1 where a modality embedding sits
    spans: list[Span]

    def __len__(self) -> int:
        return len(self.token_ids)

    def spans_of(self, kind: str) -> list[Span]:
        return [s for s in self.spans if s.kind == kind]

    def kind_at(self) -> list[str]:
        kinds = [""] * len(self)
        for span in self.spans:
            kinds[span.start : span.end] = [span.kind] * len(span)
        return kinds


class Processor:
    """Turns prompt pieces and projected modality tokens into an ``AssembledSequence``.
    Keeps no state between calls, so threads may share it."""

    def __init__(self, tokenizer, embed: torch.nn.Embedding, reference_spacing: bool = False):
        self.tokenizer = tokenizer
        self.embed = embed
        self.reference_spacing = reference_spacing

    def __call__(self, pieces: list[Piece], projected: dict[str, torch.Tensor]) -> AssembledSequence:
        out = _Builder()
        run: list[Piece] = []
        for piece in styled(pieces, self.reference_spacing):
            if piece.slot or piece.standalone:
                self._text(out, run)
                run = []
            if piece.slot:
                self._slot(out, piece.kind, projected)
            elif piece.standalone:
                self._text(out, [piece])
            elif piece.text:
                run.append(piece)
        self._text(out, run)
        return AssembledSequence(torch.cat(out.chunks, dim=0)[None], out.ids, _spans(out.kinds))

    def _emit(self, out: _Builder, ids: list[int], kinds: list[str]) -> None:
        if ids:
            out.add(self.embed(torch.tensor(ids, device=self.embed.weight.device)), ids, kinds)

    def _slot(self, out: _Builder, kind: str, projected: dict[str, torch.Tensor]) -> None:
        if kind in ("bos", "eos"):
            token = self.tokenizer.bos_token_id if kind == "bos" else self.tokenizer.eos_token_id
            self._emit(out, [token], [kind])
        else:
            tokens = projected[kind]
            out.add(tokens, [-1] * tokens.shape[0], [kind] * tokens.shape[0])

    def _text(self, out: _Builder, run: list[Piece]) -> None:
        if not run:
            return
        text = "".join(p.text for p in run)
        owner = np.concatenate([np.full(len(p.text), i) for i, p in enumerate(run)])
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                                  split_special_tokens=True)
        kinds = []
        for start, end in encoding["offset_mapping"]:
            index = max(min(end, len(text)) - 1, start, 0)
            kinds.append(run[int(owner[min(index, len(owner) - 1)])].kind)
        self._emit(out, list(encoding["input_ids"]), kinds)


def styled(pieces: list[Piece], reference_spacing: bool) -> list[Piece]:
    """The pieces a model reads: the reference's extra spaces kept only for the weights trained with them."""
    return [piece for piece in pieces if reference_spacing or not piece.spacing]


def prompt_text(pieces: list[Piece], reference_spacing: bool) -> str:
    """The prompt as text, the reference's way: ``<s>``, ``<VideoHere>`` for the visual tokens,
    one ``<FeatureHere>`` for the face, temporal, audio and CLS tokens."""
    text, previous = "", None
    for piece in styled(pieces, reference_spacing):
        if piece.kind in ("bos", "eos"):
            text += "<s>" if piece.kind == "bos" else "</s>"
        elif piece.slot:
            marker = "<VideoHere>" if piece.kind == "visual" else "<FeatureHere>"
            text += "" if marker == previous else marker
            previous = marker
            continue
        else:
            text += piece.text
        previous = None
    return text


@dataclass
class _Builder:
    chunks: list[torch.Tensor] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def add(self, embeds: torch.Tensor, ids: list[int], kinds: list[str]) -> None:
        self.chunks.append(embeds)
        self.ids.extend(ids)
        self.kinds.extend(kinds)


def _spans(kinds: list[str]) -> list[Span]:
    spans: list[Span] = []
    start = 0
    for i in range(1, len(kinds) + 1):
        if i == len(kinds) or kinds[i] != kinds[start]:
            spans.append(Span(kinds[start], start, i))
            start = i
    return spans
