"""Emotion-LLaMA: encoders, adapters, LLaMA-2 with LoRA.

The forward path in one screen:

1. ``encode``: the four frozen encoders read a ``PreparedClip`` -> ``EncodedClip``.
2. ``project``: the adapters map features into the LLM's embedding space:
   1024 patch tokens regrouped 4 at a time -> ``llama_proj`` -> 256 visual tokens;
   CLS -> ``cls_tk_llama_proj``; face, temporal, audio -> ``feats_llama_proj{1,2,3}``.
3. ``assemble``: prompt pieces (``prompts.py``) become ``inputs_embeds`` with named,
   exact spans (``processor.py``).
4. ``generate`` / ``label_log_likelihoods`` / ``attention_rows`` run the LLM. ``attention_rows``
   reads the explanation's attention one layer at a time through an attention function
   registered with transformers' ``AttentionInterface`` (sdpa plus the requested rows).

Attribute names of the adapters and of ``llama_model`` are the reference's, so its
checkpoints map onto this module with one rename (peft's adapter name).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AttentionInterface, LlamaForCausalLM, StoppingCriteria, StoppingCriteriaList
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from .clip import PreparedClip
from .config import EmotionLlamaConfig, LoraSettings
from .encoders import EncodedClip, ModalityEncoders, without
from .errors import MergedWeightsError
from .processor import AssembledSequence, Processor
from .prompts import Piece
from .text_limits import check_prompt_length
from .vocab import ADAPTERS, DEMO_PARITY_ZEROED, REFERENCE_GENERATION, GenerationSettings

__all__ = ["AssembledSequence", "EmotionLlama", "EncodedClip", "without"]
_MERGED = ("this model's LoRA is merged into its base weights for inference, so it cannot {action}: "
           "load it with checkpoints.from_pretrained (unmerged) to train or save it")


class EmotionLlama(nn.Module):
    """``pretrained``: already-loaded transformers models to use instead of fresh ones,
    under ``llm``, ``face``, ``temporal`` and ``audio`` (how the official weights arrive)."""

    def __init__(self, config: EmotionLlamaConfig, tokenizer=None, pretrained: dict[str, nn.Module] | None = None):
        super().__init__()
        pretrained = pretrained or {}
        self.config = config
        self.tokenizer = tokenizer
        self.encoders = ModalityEncoders(config, pretrained)
        dims = self.encoders.feature_dims
        hidden = config.llm_hidden
        self.llama_proj = nn.Linear(dims["global"] * config.visual_group, hidden)
        self.cls_tk_llama_proj = nn.Linear(dims["global"], hidden)
        self.feats_llama_proj1 = nn.Linear(dims["face"], hidden)
        self.feats_llama_proj2 = nn.Linear(dims["temporal"], hidden)
        self.feats_llama_proj3 = nn.Linear(dims["audio"], hidden)
        self.llama_model = with_lora(pretrained.get("llm") or LlamaForCausalLM(config.llm_config()), config.lora)
        self.encoders.requires_grad_(False)
        self.lock = threading.RLock()  # generation and the attention pass must not interleave
        self.lora_merged = False  # set by ``merge_lora``: inference only from then on
        self.static_decoding = False  # static KV cache (compiled on CUDA): ``runtime.compiled_decoding``

    # -- parameter groups ------------------------------------------------------------
    def encoder_fingerprint(self) -> str:
        """Which encoders these are (``ModalityEncoders.fingerprint``)."""
        return self.encoders.fingerprint()

    def adapters(self) -> dict[str, nn.Linear]:
        return {name: getattr(self, name) for name in ADAPTERS}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Adapters and LoRA: what a reference checkpoint holds."""
        self.check_unmerged("have its LoRA tensors read or loaded")
        return {k: v for k, v in self.state_dict().items() if _is_trainable_key(k)}

    # -- inference weights -------------------------------------------------------------
    def merge_lora(self) -> EmotionLlama:
        """Fold LoRA into the LLM's weights once (peft's merge): one matmul per tuned projection
        instead of three. Inference only: saving, training and loading LoRA are refused after.
        In fp32 the tokens equal the unmerged model's (tests/test_fast.py). In fp16, W + s*B@A
        is rounded to fp16 once where the unmerged path rounds x@W and s*(x@A)@B apart: logits
        move by ~1e-3 relative, so a greedy answer may differ where two tokens nearly tie."""
        with self.lock:
            if not self.lora_merged:
                self.llama_model.base_model.merge_adapter()
                self.lora_merged = True
        return self

    def check_unmerged(self, action: str) -> None:
        if self.lora_merged:
            raise MergedWeightsError(_MERGED.format(action=action))

    def train(self, mode: bool = True) -> EmotionLlama:
        if mode:
            self.check_unmerged("be trained")
        return super().train(mode)

    @property
    def device(self) -> torch.device:
        return self.llama_proj.weight.device

    @property
    def llm_dtype(self) -> torch.dtype:
        return self.llama_model.get_input_embeddings().weight.dtype

    # -- 1. encode -------------------------------------------------------------------
    def encode(self, clip: PreparedClip, *, leave_out: tuple[str, ...] = (), demo_parity: bool = False,
               timings: dict[str, float] | None = None) -> EncodedClip:
        """The four encoders' features; left-out and missing modalities are zeros.
        ``demo_parity`` zeroes face and temporal exactly as the reference demo does."""
        zero_out = set(leave_out) | (set(DEMO_PARITY_ZEROED) if demo_parity else set())
        return self.encoders.encode(clip, zero_out, timings)

    # -- 2. project ------------------------------------------------------------------
    def project(self, encoded: EncodedClip) -> dict[str, torch.Tensor]:
        """Adapters: encoder features -> LLM-space tokens, keyed by slot kind."""
        dtype = self.llama_proj.weight.dtype
        tokens = encoded.features["global"].to(self.device, dtype)
        cls, patches = tokens[:1], tokens[1:]
        grouped = patches.reshape(patches.shape[0] // self.config.visual_group, -1)
        out = {
            "visual": self.llama_proj(grouped),
            "cls": self.cls_tk_llama_proj(cls),
            "face": self.feats_llama_proj1(encoded.features["face"].to(self.device, dtype)[None]),
            "temporal": self.feats_llama_proj2(encoded.features["temporal"].to(self.device, dtype)[None]),
            "audio": self.feats_llama_proj3(encoded.features["audio"].to(self.device, dtype)[None]),
        }
        return {k: v.to(self.llm_dtype) for k, v in out.items()}

    # -- 3. assemble -----------------------------------------------------------------
    def assemble(self, pieces: list[Piece], projected: dict[str, torch.Tensor]) -> AssembledSequence:
        """Pieces -> embeddings and exact spans (see ``processor.Processor``)."""
        embed, spacing = self.llama_model.get_input_embeddings(), self.config.reference_spacing
        return Processor(self.tokenizer, embed, spacing)(pieces, projected)

    # -- 4. run the LLM --------------------------------------------------------------
    @torch.no_grad()
    def generate(self, sequence: AssembledSequence, settings: GenerationSettings = REFERENCE_GENERATION,
                 streamer=None, stop: threading.Event | None = None) -> list[int]:
        """Answer token ids (without the closing ``</s>``). Greedy when ``do_sample`` is off;
        setting ``stop`` ends the generation after the token being computed."""
        return generate_ids(self, sequence, settings, streamer=streamer, stop=stop)[0]

    @torch.no_grad()
    def label_log_likelihoods(self, prefix: AssembledSequence, answers: list[AssembledSequence]) -> torch.Tensor:
        """Sum of log p(token) of each answer (its tokens and ``</s>``) after ``prefix``. The prefix
        runs once; the answers run as one right-padded batch reading its KV cache, one copy each."""
        base = self.llama_model.get_base_model()
        batch, mask = _right_padded(answers)
        with self.lock:
            first = base.model(inputs_embeds=prefix.inputs_embeds, use_cache=True)
            cache = first.cache
            cache.batch_repeat_interleave(len(answers))
            seen = torch.ones(len(answers), len(prefix), dtype=torch.long, device=self.device)
            hidden = base.model(inputs_embeds=batch, attention_mask=torch.cat([seen, mask], dim=1),
                                cache=cache, use_cache=True).last_hidden_state
        # The prefix's last position predicts each answer's first token.
        last = first.last_hidden_state[0, -1:]
        rows = [torch.cat([last, hidden[row, : len(a) - 1]]) for row, a in enumerate(answers)]
        return _summed_log_probs(base.lm_head, rows, [a.token_ids for a in answers])

    @torch.no_grad()
    def attention_rows(self, sequence: AssembledSequence, positions: list[int],
                       consume: Callable[[torch.Tensor], None]) -> None:
        """One forward pass that hands ``consume`` the attention rows of the queries at
        ``positions``, layer after layer: (rows, length), heads averaged, softmaxed as eager
        attention does. At most ``ROWS_PER_BLOCK`` rows of one layer exist at a time; the
        attention output itself is sdpa's, and no logits or cache are computed.
        """
        request = AttentionRows(torch.tensor(positions, device=self.device), consume)
        base = self.llama_model.get_base_model()  # LoRA lives inside its q/v projections
        with self.lock, _attention_implementation(base, ROWS_ATTENTION):
            base.model(inputs_embeds=sequence.inputs_embeds, use_cache=False, attention_rows=request)


@torch.no_grad()
def generate_ids(model: EmotionLlama, sequence: AssembledSequence, settings: GenerationSettings,
                 count: int = 1, streamer=None, stop: threading.Event | None = None) -> list[list[int]]:
    """``count`` answers to one prompt, generated as one batch (sampled drafts share the
    prompt's prefill and each decoding step), each without its closing ``</s>``."""
    check_prompt_length("prompt", len(sequence) + 1, settings.max_context_tokens)
    kwargs = _generate_kwargs(settings, settings.max_context_tokens - len(sequence), model.tokenizer, stop)
    if model.static_decoding:  # one cache size for every request, so the compiled graphs are reused
        kwargs.update(cache_implementation="static", max_cache_len=settings.max_context_tokens)
    with model.lock, _seeded(settings.seed if settings.do_sample else None):
        out = model.llama_model.generate(
            inputs_embeds=sequence.inputs_embeds,
            attention_mask=torch.ones(1, len(sequence), dtype=torch.long, device=model.device),
            streamer=streamer, num_return_sequences=count, **kwargs,
        )
    return [_until_eos(row.tolist(), model.tokenizer.eos_token_id) for row in out]


def _until_eos(ids: list[int], eos: int) -> list[int]:
    """The ids before the first ``</s>`` (a batch pads finished answers after it)."""
    return ids[: ids.index(eos)] if eos in ids else ids


def whole_sequence_log_likelihoods(model: EmotionLlama, sequences: list[AssembledSequence]) -> torch.Tensor:
    """``EmotionLlama.label_log_likelihoods`` the old way, for tests and
    benchmarks/bench_generation.py: every whole sequence (prompt, answer, ``</s>``) in one
    right-padded batch, the prompt re-run per label."""
    base = model.llama_model.get_base_model()
    batch, mask = _right_padded(sequences)
    with model.lock:
        hidden = base.model(inputs_embeds=batch, attention_mask=mask).last_hidden_state
    rows, targets = [], []
    for row, seq in enumerate(sequences):
        at = [i for i, k in enumerate(seq.kind_at()) if k in ("answer", "eos") and i > 0]
        rows.append(hidden[row, [i - 1 for i in at]])
        targets.append([seq.token_ids[i] for i in at])
    return _summed_log_probs(base.lm_head, rows, targets)


def _summed_log_probs(lm_head: nn.Module, rows: list[torch.Tensor], targets: list[list[int]]) -> torch.Tensor:
    """Per answer, the summed log-probability of ``targets`` from the hidden ``rows`` that
    predict them; only those rows go through the vocabulary projection."""
    log_probs = torch.log_softmax(lm_head(torch.cat(rows)).float(), dim=-1)
    flat = torch.tensor([t for answer in targets for t in answer], device=log_probs.device)
    picked = log_probs.gather(1, flat[:, None])[:, 0]
    return torch.stack([part.sum() for part in picked.split([len(t) for t in targets])])


@torch.no_grad()
def full_attention_maps(model: EmotionLlama, sequence: AssembledSequence) -> torch.Tensor:
    """Attention weights of every layer, heads averaged: (layers, length, length).

    The full-map reference that ``EmotionLlama.attention_rows`` reproduces, for tests and
    benchmarks/bench_attention.py: eager attention with ``output_attentions``, holding every
    layer's (heads, length, length) map at once (about 8 GB at 2,000 tokens in the official
    model), so the app does not use it.
    """
    with model.lock, _attention_implementation(model.llama_model.get_base_model(), "eager"):
        out = model.llama_model(
            inputs_embeds=sequence.inputs_embeds,
            attention_mask=torch.ones(1, len(sequence), dtype=torch.long, device=model.device),
            output_attentions=True,
        )
    return torch.stack([a[0].float().mean(dim=0) for a in out.attentions])


def _right_padded(sequences: list[AssembledSequence]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences as one zero-padded batch of embeddings and its attention mask (1 = real)."""
    first = sequences[0].inputs_embeds
    longest = max(len(s) for s in sequences)
    batch = first.new_zeros(len(sequences), longest, first.shape[-1])
    mask = torch.zeros(len(sequences), longest, dtype=torch.long, device=first.device)
    for row, seq in enumerate(sequences):
        batch[row, : len(seq)] = seq.inputs_embeds[0]
        mask[row, : len(seq)] = 1
    return batch, mask


def _generate_kwargs(settings: GenerationSettings, room: int, tokenizer, stop: threading.Event | None) -> dict:
    """transformers ``generate`` arguments for ``settings`` with ``room`` tokens left in the context."""
    budget = min(settings.max_new_tokens, room)
    kwargs = dict(
        max_new_tokens=budget,
        min_new_tokens=min(settings.min_new_tokens, budget),
        do_sample=settings.do_sample,
        repetition_penalty=settings.repetition_penalty,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop)] if stop is not None else []),
    )
    if settings.do_sample:
        return {**kwargs, "temperature": settings.temperature, "top_p": settings.top_p}
    return {**kwargs, "temperature": None, "top_p": None, "top_k": None}


class _StopWhenSet(StoppingCriteria):
    """Ends generation once ``event`` is set (the reader of a stream went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def with_lora(llm: LlamaForCausalLM, lora: LoraSettings):
    """The LLM wrapped by peft with LoRA on ``lora.target_modules``."""
    peft_config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(llm, peft_config)


def _is_trainable_key(key: str) -> bool:
    return key.split(".")[0] in ADAPTERS or ".lora_" in key


@contextlib.contextmanager
def _seeded(seed: int | None):
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)  # also seeds every CUDA device
        yield


@contextlib.contextmanager
def _attention_implementation(base, name: str):
    """Switch the LLM's attention function for one pass; the caller holds ``model.lock``."""
    previous = base.config._attn_implementation
    base.set_attn_implementation(name)
    try:
        yield
    finally:
        base.set_attn_implementation(previous)


# -- attention rows for the explanation ---------------------------------------------
ROWS_ATTENTION = "emotion_llama_rows"
ROWS_PER_BLOCK = 128  # query rows scored at once: bounds the scratch to heads x 128 x length


@dataclass
class AttentionRows:
    """Which query positions to read in every layer, and who takes their rows."""

    positions: torch.Tensor  # (rows,) long, on the model's device
    consume: Callable[[torch.Tensor], None]

    def take(self, query: torch.Tensor, key: torch.Tensor, scaling: float) -> None:
        """Eager attention's softmax for the requested queries (batch 1, causal), heads averaged.

        ``query``: (1, heads, length, dim); ``key``: (1, kv_heads, length, dim). Grouped-query
        heads are scored against their shared key head without copying the keys."""
        heads, kv_heads, length = query.shape[1], key.shape[1], key.shape[2]
        keys_t = key[0].transpose(1, 2)  # (kv_heads, dim, length)
        key_positions = torch.arange(length, device=key.device)
        for start in range(0, len(self.positions), ROWS_PER_BLOCK):
            at = self.positions[start : start + ROWS_PER_BLOCK]
            grouped = query[0, :, at].reshape(kv_heads, heads // kv_heads * len(at), -1)
            scores = (torch.matmul(grouped, keys_t) * scaling).view(heads, len(at), length)
            scores = scores.masked_fill(key_positions[None, :] > at[:, None], float("-inf"))
            weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
            self.consume(weights.float().mean(dim=0))


def _sdpa_with_rows(module, query, key, value, attention_mask, *, attention_rows: AttentionRows | None = None,
                    **kwargs) -> tuple[torch.Tensor, None]:
    """sdpa's attention output; on the way, the rows ``attention_rows`` asks for."""
    if attention_rows is not None:
        if query.shape[0] != 1:
            raise ValueError("attention rows are read from one unpadded sequence at a time")
        attention_rows.take(query, key, kwargs["scaling"])
    output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return output, None


AttentionInterface.register(ROWS_ATTENTION, _sdpa_with_rows)
