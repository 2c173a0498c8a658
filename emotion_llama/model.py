"""Emotion-LLaMA: encoders, adapters, LLaMA-2 with LoRA.

The forward path in one screen:

1. ``encode``: the four frozen encoders read a ``PreparedClip`` -> ``EncodedClip``.
2. ``project``: the adapters map features into the LLM's embedding space:
   1024 patch tokens regrouped 4 at a time -> ``llama_proj`` -> 256 visual tokens;
   CLS -> ``cls_tk_llama_proj``; face, temporal, audio -> ``feats_llama_proj{1,2,3}``.
3. ``assemble``: prompt pieces (``prompts.py``) become ``inputs_embeds`` with named,
   exact spans (``processor.py``).
4. ``generate`` / ``label_log_likelihoods`` / ``attention_maps`` run the LLM.

Attribute names of the adapters and of ``llama_model`` are the reference's, so its
checkpoints map onto this module with one rename (peft's adapter name).
"""

from __future__ import annotations

import contextlib
import threading

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaForCausalLM, StoppingCriteria, StoppingCriteriaList

from .clip import PreparedClip
from .config import EmotionLlamaConfig, LoraSettings
from .encoders import EncodedClip, ModalityEncoders, without
from .processor import AssembledSequence, Processor
from .prompts import Piece
from .text_limits import check_prompt_length
from .vocab import ADAPTERS, DEMO_PARITY_ZEROED, REFERENCE_GENERATION, GenerationSettings

__all__ = ["AssembledSequence", "EmotionLlama", "EncodedClip", "without"]


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
        # Generation and the eager-attention pass must not interleave on one model.
        self.lock = threading.RLock()

    # -- parameter groups ------------------------------------------------------------
    def encoder_fingerprint(self) -> str:
        """Which encoders these are (``ModalityEncoders.fingerprint``)."""
        return self.encoders.fingerprint()

    def adapters(self) -> dict[str, nn.Linear]:
        return {name: getattr(self, name) for name in ADAPTERS}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Adapters and LoRA: what a reference checkpoint holds."""
        return {k: v for k, v in self.state_dict().items() if _is_trainable_key(k)}

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
        return Processor(self.tokenizer, self.llama_model.get_input_embeddings())(pieces, projected)

    # -- 4. run the LLM --------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        sequence: AssembledSequence,
        settings: GenerationSettings = REFERENCE_GENERATION,
        streamer=None,
        stop: threading.Event | None = None,
    ) -> list[int]:
        """Answer token ids (without the closing ``</s>``). Greedy when ``do_sample`` is off;
        setting ``stop`` ends the generation after the token being computed."""
        check_prompt_length("prompt", len(sequence) + 1, settings.max_context_tokens)
        budget = min(settings.max_new_tokens, settings.max_context_tokens - len(sequence))
        kwargs = dict(
            max_new_tokens=budget,
            min_new_tokens=min(settings.min_new_tokens, budget),
            do_sample=settings.do_sample,
            repetition_penalty=settings.repetition_penalty,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop)] if stop is not None else []),
        )
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with self.lock, _seeded(settings.seed if settings.do_sample else None):
            out = self.llama_model.generate(
                inputs_embeds=sequence.inputs_embeds,
                attention_mask=torch.ones(1, len(sequence), dtype=torch.long, device=self.device),
                streamer=streamer,
                **kwargs,
            )
        ids = out[0].tolist()
        if ids and ids[-1] == self.tokenizer.eos_token_id:
            ids = ids[:-1]
        return ids

    @torch.no_grad()
    def label_log_likelihoods(self, sequences: list[AssembledSequence]) -> torch.Tensor:
        """Sum of log p(token) over each sequence's ``answer`` and ``eos`` positions, in one
        batched pass (right padding, so real positions are unaffected)."""
        lengths = [len(s) for s in sequences]
        hidden = sequences[0].inputs_embeds.shape[-1]
        batch = torch.zeros(len(sequences), max(lengths), hidden, dtype=self.llm_dtype, device=self.device)
        mask = torch.zeros(len(sequences), max(lengths), dtype=torch.long, device=self.device)
        for row, seq in enumerate(sequences):
            batch[row, : len(seq)] = seq.inputs_embeds[0]
            mask[row, : len(seq)] = 1
        positions = [[i for i, k in enumerate(s.kind_at()) if k in ("answer", "eos") and i > 0] for s in sequences]
        base = self.llama_model.get_base_model()
        with self.lock:
            hidden = base.model(inputs_embeds=batch, attention_mask=mask).last_hidden_state
        scores = []
        for row, (seq, targets_at) in enumerate(zip(sequences, positions)):
            # Only the rows that predict answer tokens go through the vocabulary projection.
            previous = torch.tensor([i - 1 for i in targets_at], device=self.device)
            log_probs = torch.log_softmax(base.lm_head(hidden[row, previous]).float(), dim=-1)
            targets = torch.tensor([seq.token_ids[i] for i in targets_at], device=self.device)
            scores.append(log_probs.gather(1, targets[:, None]).sum())
        return torch.stack(scores)

    @torch.no_grad()
    def attention_maps(self, sequence: AssembledSequence) -> torch.Tensor:
        """Attention weights of every layer, heads averaged: (layers, length, length).

        One extra forward pass with eager attention (the fast kernels do not return
        weights); the implementation is restored afterwards.
        """
        with self.lock, _eager_attention(self.llama_model):
            out = self.llama_model(
                inputs_embeds=sequence.inputs_embeds,
                attention_mask=torch.ones(1, len(sequence), dtype=torch.long, device=self.device),
                output_attentions=True,
            )
        return torch.stack([a[0].float().mean(dim=0) for a in out.attentions])


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
def _eager_attention(peft_model):
    base = peft_model.get_base_model()
    previous = base.config._attn_implementation
    base.set_attn_implementation("eager")
    try:
        yield
    finally:
        base.set_attn_implementation(previous)

