"""A conversation about one clip: the clip is encoded once, turns are kept up to a cap,
and each prompt is built in one pass from turn lengths measured once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass

import torch

from . import limits
from .analysis import AnalysisOptions
from .prompts import Piece, answer_pieces, as_history, first_turn, later_turn, user_turn
from .text_limits import check_prompt_length, check_text
from .vocab import GREEDY, GenerationSettings


@dataclass(frozen=True)
class Turn:
    """One finished exchange as it stands in later prompts, and its length in tokens."""

    user: list[Piece]
    answer: str
    history: list[Piece]
    tokens: int


class ChatSession:
    """Multi-turn chat about one clip. It holds the clip's projected tokens (260 of them,
    kept in host memory) and the kept turns' text, nothing of the decoded clip. The first
    turn carries the clip and is always kept; of the later ones, the newest ``max_turns - 1``
    are kept, and a prompt takes as many of them, newest first, as fit the context.

    Pickled, it is only that state (no model): what ZeroGPU sends to and from the worker
    that holds the GPU (``ui/gpu.py``), where ``attach`` gives it the model again."""

    def __init__(self, model, writer, subtitle: str | None, projected: dict[str, torch.Tensor],
                 options: AnalysisOptions, max_turns: int | None = None):
        self.model = model
        self.writer = writer
        self.subtitle = subtitle
        self.projected = {kind: tokens.detach().cpu() for kind, tokens in projected.items()}
        self.options = options
        self.max_turns = max_turns or limits.get("chat_turns")
        self.turns: list[Turn] = []

    def __getstate__(self) -> dict:
        return {name: value for name, value in vars(self).items() if name not in ("model", "writer")}

    def attach(self, model, writer) -> ChatSession:
        """Give an unpickled session its model and writer back."""
        self.model, self.writer = model, writer
        return self

    def _assemble(self, pieces: list[Piece]):
        device = self.model.device
        return self.model.assemble(pieces, {kind: tokens.to(device) for kind, tokens in self.projected.items()})

    def ask(self, question: str, task: str = "free", settings: GenerationSettings = GREEDY) -> Iterator[str]:
        """Stream the reply to one user turn; the turn is kept once the reply is complete."""
        check_text("question", question, self.model.tokenizer)
        user = user_turn(task, subtitle=self.subtitle if not self.turns else None, question=question or None,
                         labels=self.options.labels)
        budget = settings.max_context_tokens - min(settings.max_new_tokens, settings.max_context_tokens // 2)
        sequence = self._assemble(self.prompt(user, budget))
        answer = ""
        if task == "emotion":
            answer = self.label_answer(sequence)
            yield answer
        else:
            with closing(self.writer.stream(sequence, settings)) as replies:
                for answer in replies:
                    yield answer
        self.keep(user, answer)

    def label_answer(self, sequence) -> str:
        """The label question's answer: the candidate label most likely after ``sequence``,
        scored as the analysis scores them, so it is one word from the chosen set."""
        labels = self.options.labels
        answers = [self._assemble(answer_pieces(label, close=True)) for label in labels]
        scores = self.model.label_log_likelihoods(sequence, answers)
        return labels[int(scores.argmax())]

    def prompt(self, user: list[Piece], budget: int) -> list[Piece]:
        """The whole chat before ``user``'s turn, newest earlier turns first to fit ``budget`` tokens."""
        if not self.turns:
            return first_turn(user, demo_parity=self.options.demo_parity)
        current = later_turn(user)
        first, *later = self.turns
        used = first.tokens + len(self._assemble(current))
        check_prompt_length("conversation", used, budget)
        kept: list[Turn] = []
        for turn in reversed(later):
            if used + turn.tokens > budget:
                break
            kept.append(turn)
            used += turn.tokens
        return [*first.history, *(piece for turn in reversed(kept) for piece in turn.history), *current]

    def keep(self, user: list[Piece], answer: str) -> None:
        opening = first_turn(user, demo_parity=self.options.demo_parity) if not self.turns else later_turn(user)
        history = as_history(opening) + answer_pieces(answer, kind="history", close=True)
        self.turns.append(Turn(user, answer, history, len(self._assemble(history))))
        if len(self.turns) > self.max_turns:
            del self.turns[1]  # the first turn holds the clip

    def reset(self) -> None:
        self.turns.clear()
