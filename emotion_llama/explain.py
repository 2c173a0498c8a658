"""Label probabilities, per-modality attention shares and the visual heatmap.

Label probabilities
    For each candidate label, the LLM's log-likelihood of answering exactly that label
    (its tokens, then ``</s>``) after the ``[emotion]`` prompt, all labels in one batched
    pass; a softmax over the set turns them into probabilities. The total (not the
    per-token mean) log-likelihood is used: it is the probability of the whole answer,
    and the closing ``</s>`` keeps a label from winning by being a prefix of another.

Attention shares (``AnswerAttention``, ``attention_shares``)
    One extra forward pass over prompt + answer. For every layer, heads are averaged;
    queries are the answer tokens; keys are the prompt positions except BOS. LLaMA parks a
    large, content-free share of attention on the first token (the attention sink), so
    BOS is dropped and each query row renormalised over the remaining prompt keys. Rows
    are then averaged over answer tokens and over *all* layers, and summed per span.
    Shares therefore sum to 1 over the prompt spans. The pass
    (``EmotionLlama.attention_rows``) scores only the answer rows and hands them over a
    block at a time, layer after layer; ``AnswerAttention`` sums them as they come, so no
    layer's full map is ever kept (memory: heads x 128 rows x length, not layers x
    heads x length x length).

Visual heatmap (``visual_heatmap``)
    The shares of the visual tokens laid on their grid: patches are raster-ordered on a
    32 x 32 grid and regrouped 4 consecutive at a time, so visual token ``i`` covers
    grid row ``i // 8`` and columns ``4 * (i % 8)`` to ``4 * (i % 8) + 3``: a 32 x 8 grid
    of 1 x 4-patch cells (14 x 56 pixels at 448 px) in the official preset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .vocab import MODALITY, SLOTS

# Which modality each span kind belongs to, for the per-modality chart (display names;
# text that is no modality keeps its span kind).
MODALITY_OF_SPAN = {
    **{slot: MODALITY[modality].display for slot, (modality, _) in SLOTS.items()},
    "subtitle": MODALITY["subtitle"].display,
}
NOT_KEYS = ("bos", "eos", "answer")


@dataclass
class Explanation:
    """Where an answer's attention went: per span kind, and over the global frame."""

    span_shares: dict[str, float]
    heatmap: np.ndarray

    @property
    def modality_shares(self) -> dict[str, float]:
        return modality_shares(self.span_shares)


def explain_answer(model, sequence) -> Explanation:
    """Attention of the answer in ``sequence`` (prompt + answer) over the prompt, from
    one extra forward pass of ``model`` (an ``EmotionLlama``)."""
    tally = AnswerAttention(sequence.kind_at())
    model.attention_rows(sequence, tally.queries, tally.add)
    config = model.config
    heat = visual_heatmap(tally.weights_of("visual"), config.visual_grid, config.global_vision["patch_size"])
    return Explanation(tally.span_shares(), heat)


def probabilities_from_scores(labels: tuple[str, ...], scores: torch.Tensor) -> dict[str, float]:
    probs = torch.softmax(scores.double(), dim=0)
    return {label: float(p) for label, p in zip(labels, probs)}


class AnswerAttention:
    """Running per-key sum of the answer's attention over the prompt (BOS dropped, each
    row renormalised over the prompt keys), fed blocks of rows from any layer in any order."""

    def __init__(self, kinds: list[str]):
        self.kinds = kinds
        self.queries = [i for i, k in enumerate(kinds) if k == "answer"]
        self.keys = [i for i, k in enumerate(kinds) if k not in NOT_KEYS]
        if not self.queries or not self.keys:
            raise ValueError("attention shares need answer tokens and prompt tokens")
        self._key_index = torch.tensor(self.keys)  # moved once to the rows' device
        self._total: torch.Tensor | None = None  # float64, on the rows' device
        self._rows = 0

    @classmethod
    def of_maps(cls, attentions: torch.Tensor, kinds: list[str]) -> AnswerAttention:
        """From full maps: (layers, length, length), heads already averaged."""
        tally = cls(kinds)
        for layer in attentions:
            tally.add(layer[tally.queries])
        return tally

    def add(self, rows: torch.Tensor) -> None:
        """``rows``: (n, length), some answer queries of one layer over every position."""
        self._key_index = self._key_index.to(rows.device)
        kept = rows[:, self._key_index].double()
        kept = kept / kept.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        total = kept.sum(dim=0)
        self._total = total if self._total is None else self._total + total
        self._rows += rows.shape[0]

    def key_weights(self) -> np.ndarray:
        """Share of each prompt key (in ``keys`` order), averaged over every row added; sums to 1."""
        if self._total is None:
            raise ValueError("no attention rows were added")
        return (self._total / self._rows).cpu().numpy()

    def span_shares(self) -> dict[str, float]:
        shares: dict[str, float] = {}
        for position, weight in zip(self.keys, self.key_weights().tolist()):
            shares[self.kinds[position]] = shares.get(self.kinds[position], 0.0) + weight
        return shares

    def weights_of(self, kind: str) -> np.ndarray:
        """Per-position shares of the positions of one span kind."""
        return np.array([w for position, w in zip(self.keys, self.key_weights()) if self.kinds[position] == kind])


def attention_shares(attentions: torch.Tensor, kinds: list[str]) -> dict[str, float]:
    """Share of the answer's attention landing on each span kind (sums to 1), from full maps.

    ``attentions``: (layers, length, length), heads already averaged; ``kinds``: the span
    kind of every position.
    """
    return AnswerAttention.of_maps(attentions, kinds).span_shares()


def modality_shares(span_shares: dict[str, float]) -> dict[str, float]:
    shares: dict[str, float] = {}
    for kind, weight in span_shares.items():
        modality = MODALITY_OF_SPAN.get(kind, kind)
        shares[modality] = shares.get(modality, 0.0) + weight
    return shares


def visual_heatmap(token_weights: np.ndarray, grid: tuple[int, int], patch_size: int) -> np.ndarray:
    """Visual-token weights -> (size, size) map at the encoder's input resolution.

    ``grid`` is (rows, columns) of visual tokens; each token covers one patch row and
    ``patch_grid / columns`` consecutive patches of it.
    """
    rows, cols = grid
    if token_weights.size != rows * cols:
        raise ValueError(f"expected {rows * cols} visual-token weights, got {token_weights.size}")
    group = rows // cols  # patches per token along a row (the patch grid is square)
    cells = token_weights.reshape(rows, cols)
    return np.kron(cells, np.ones((patch_size, patch_size * group)))


def heatmap_on_frame(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Overlay a heatmap (any size) on an RGB frame; the map is stretched back to the
    frame's size, undoing the encoder's square resize."""
    import cv2

    height, width = frame.shape[:2]
    scaled = cv2.resize(heat.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    span = float(scaled.max() - scaled.min())
    norm = (scaled - scaled.min()) / span if span > 0 else np.zeros_like(scaled)
    colored = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1]
    return (frame.astype(np.float32) * (1 - alpha) + colored.astype(np.float32) * alpha).astype(np.uint8)
