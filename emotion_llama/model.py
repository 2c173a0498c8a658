"""Emotion-LLaMA: encoders, adapters, LLaMA-2 with LoRA.

The forward path in one screen:

1. ``encode``: the four frozen encoders read a ``PreparedClip`` -> ``EncodedClip``.
2. ``project``: the adapters map features into the LLM's embedding space:
   1024 patch tokens regrouped 4 at a time -> ``llama_proj`` -> 256 visual tokens;
   CLS -> ``cls_tk_llama_proj``; face, temporal, audio -> ``feats_llama_proj{1,2,3}``.
3. ``assemble``: prompt pieces (``prompts.py``) become ``inputs_embeds`` with named,
   exact spans.
4. ``generate`` / ``label_log_likelihoods`` / ``attention_to_keys`` run the LLM.

Attribute names of the adapters and of ``llama_model`` are the reference's, so its
checkpoints map onto this module with one rename (peft's adapter name).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import LlamaForCausalLM

from .clip import PreparedClip
from .config import EmotionLlamaConfig, GenerationSettings
from .encoders import ModalityEncoders
from .prompts import Piece

FEATURE_MODALITIES = ("face", "temporal", "audio")
DEFAULT_GENERATION = GenerationSettings()  # the reference demo's settings


@dataclass
class EncodedClip:
    """Encoder outputs of one clip: what chat turns reuse without re-encoding."""

    features: dict[str, torch.Tensor]  # global: (1 + patches, width); face/temporal/audio: (width,)
    present: dict[str, bool]  # modality -> the clip had it and it was used
    filled: dict[str, str] = field(default_factory=dict)  # modality -> how a missing one was filled


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
        self.llama_model = self._with_lora(pretrained.get("llm") or LlamaForCausalLM(config.llm_config()))
        self.encoders.requires_grad_(False)
        # Generation and the eager-attention pass must not interleave on one model.
        self.lock = threading.RLock()

    def _with_lora(self, llm: LlamaForCausalLM):
        lora = self.config.lora
        peft_config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        return get_peft_model(llm, peft_config)

    # -- parameter groups ------------------------------------------------------------
    @torch.no_grad()
    def encoder_fingerprint(self) -> str:
        """A short hash of the encoders' weights (names, shapes and a few values of each),
        so features cached by one set of encoders are never read for another."""
        digest = hashlib.sha1()
        for name, tensor in self.encoders.state_dict().items():
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            if tensor.device.type != "meta":
                digest.update(tensor.flatten()[:64].float().cpu().numpy().tobytes())
        return digest.hexdigest()[:12]

    def adapters(self) -> dict[str, nn.Linear]:
        return {
            "llama_proj": self.llama_proj,
            "cls_tk_llama_proj": self.cls_tk_llama_proj,
            "feats_llama_proj1": self.feats_llama_proj1,
            "feats_llama_proj2": self.feats_llama_proj2,
            "feats_llama_proj3": self.feats_llama_proj3,
        }

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
    @torch.no_grad()
    def encode(
        self,
        clip: PreparedClip,
        *,
        leave_out: tuple[str, ...] = (),
        demo_parity: bool = False,
        timings: dict[str, float] | None = None,
    ) -> EncodedClip:
        """Run the four encoders. A missing or left-out modality becomes zeros at the
        encoder output (its adapter then contributes only its bias), which is how the
        reference demo fills the face and temporal features it never computes.
        ``demo_parity`` zeroes face and temporal exactly as that demo does."""
        import time

        enc = self.encoders
        device = self.device
        dims = enc.feature_dims
        zero_out = set(leave_out) | ({"face", "temporal"} if demo_parity else set())
        features: dict[str, torch.Tensor] = {}
        present: dict[str, bool] = {}
        filled: dict[str, str] = {}

        def run(name: str, available: bool, compute) -> None:
            start = time.perf_counter()
            if available and name not in zero_out:
                features[name] = compute().float()
                present[name] = True
            else:
                features[name] = None  # type: ignore[assignment]
                present[name] = False
                filled[name] = "left out: zeros" if name in zero_out else "missing: zeros"
            if timings is not None:
                timings[f"encode_{name}"] = time.perf_counter() - start

        run("global", True, lambda: enc.global_frame(enc.global_frame.preprocess(clip.global_frame).to(device))[0])
        run("face", len(clip.face_crops) > 0, lambda: enc.face(enc.face.preprocess(clip.face_crops).to(device)))
        run(
            "temporal",
            len(clip.face_sequence) > 0,
            lambda: enc.temporal(enc.temporal.preprocess(clip.face_sequence).to(device))[0],
        )
        run("audio", clip.has_audio, lambda: enc.audio(enc.audio.preprocess(clip.audio).to(device))[0])
        if features["global"] is None:
            features["global"] = torch.zeros(1 + self.config.patch_grid**2, dims["global"], device=device)
        for name in FEATURE_MODALITIES:
            if features[name] is None:
                features[name] = torch.zeros(dims[name], device=device)
        return EncodedClip(features=features, present=present, filled=filled)


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
        """Pieces -> embeddings and exact spans.

        Consecutive text pieces are tokenised together, as the reference tokenises the
        text between placeholders; each token is labelled with the piece holding its last
        character. Slots, ``standalone`` pieces (answers) and ``bos``/``eos`` break runs.
        """
        embed = self.llama_model.get_input_embeddings()
        chunks: list[torch.Tensor] = []
        token_ids: list[int] = []
        kinds: list[str] = []

        def emit_ids(ids: list[int], labels: list[str]) -> None:
            if ids:
                chunks.append(embed(torch.tensor(ids, device=self.device)))
                token_ids.extend(ids)
                kinds.extend(labels)

        run: list[Piece] = []

        def flush() -> None:
            if run:
                ids, labels = self._tokenize_run(run)
                emit_ids(ids, labels)
                run.clear()

        for piece in pieces:
            if piece.slot:
                flush()
                if piece.kind == "bos":
                    emit_ids([self.tokenizer.bos_token_id], ["bos"])
                elif piece.kind == "eos":
                    emit_ids([self.tokenizer.eos_token_id], ["eos"])
                else:
                    tokens = projected[piece.kind]
                    chunks.append(tokens)
                    token_ids.extend([-1] * tokens.shape[0])
                    kinds.extend([piece.kind] * tokens.shape[0])
            elif piece.standalone:
                flush()
                run.append(piece)
                flush()
            elif piece.text:
                run.append(piece)
        flush()
        inputs_embeds = torch.cat(chunks, dim=0)[None]
        return AssembledSequence(inputs_embeds=inputs_embeds, token_ids=token_ids, spans=_spans(kinds))

    def _tokenize_run(self, run: list[Piece]) -> tuple[list[int], list[str]]:
        text = "".join(p.text for p in run)
        owner = np.concatenate([np.full(len(p.text), i) for i, p in enumerate(run)])
        encoding = self.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True
        )
        labels = []
        for start, end in encoding["offset_mapping"]:
            index = max(min(end, len(text)) - 1, start, 0)
            labels.append(run[int(owner[min(index, len(owner) - 1)])].kind)
        return list(encoding["input_ids"]), labels

    # -- 4. run the LLM --------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        sequence: AssembledSequence,
        settings: GenerationSettings = DEFAULT_GENERATION,
        streamer=None,
    ) -> list[int]:
        """Answer token ids (without the closing ``</s>``). Greedy when ``do_sample`` is off."""
        budget = min(settings.max_new_tokens, settings.max_context_tokens - len(sequence))
        if budget <= 0:
            raise ValueError("prompt is longer than the context cap")
        kwargs = dict(
            max_new_tokens=budget,
            min_new_tokens=min(settings.min_new_tokens, budget),
            do_sample=settings.do_sample,
            repetition_penalty=settings.repetition_penalty,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
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


def _is_trainable_key(key: str) -> bool:
    return key.split(".")[0] in {
        "llama_proj",
        "cls_tk_llama_proj",
        "feats_llama_proj1",
        "feats_llama_proj2",
        "feats_llama_proj3",
    } or (".lora_" in key)


def _spans(kinds: list[str]) -> list[Span]:
    spans: list[Span] = []
    start = 0
    for i in range(1, len(kinds) + 1):
        if i == len(kinds) or kinds[i] != kinds[start]:
            spans.append(Span(kinds[start], start, i))
            start = i
    return spans


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


def without(encoded: EncodedClip, modalities: tuple[str, ...]) -> EncodedClip:
    """The same clip with some modalities left out: zeros, as ``encode`` fills them."""
    features = {m: torch.zeros_like(f) if m in modalities else f for m, f in encoded.features.items()}
    present = {m: p and m not in modalities for m, p in encoded.present.items()}
    filled = {**encoded.filled, **{m: "left out: zeros" for m in modalities if m in features}}
    return EncodedClip(features=features, present=present, filled=filled)
