"""Tokenizer and language pretraining: a tokenizer is trained on the corpus text, and the
LLM learns that text as a plain language model (the stand-in for LLaMA-2's pretraining)."""

from __future__ import annotations

import random
from dataclasses import replace

from tqdm import tqdm

from ..config import preset
from ..data.merr import Annotation
from ..model import EmotionLlama
from ..prompts import REASON_INSTRUCTIONS, instruction_for
from .common import PROBE_SIZE, StageSettings, length_groups, loss_summary, optimiser, probe, stage_steps
from .tuning import offered_labels


def corpus_texts(annotations: list[Annotation]) -> list[str]:
    texts = []
    for ann in annotations:
        texts += [t for t in (ann.subtitle, ann.coarse_caption, ann.fine_reasoning, ann.label) if t]
    return texts


def untrained_model(annotations: list[Annotation], preset_name: str, vocab_size: int) -> EmotionLlama:
    """A fresh model whose tokenizer is trained on the corpus text. The tokenizer comes
    first because its size sets the LLM's embeddings, and encoder pretraining needs the model."""
    from ..tokenizer import train_tokenizer

    tokenizer = train_tokenizer(corpus_texts(annotations), vocab_size=vocab_size)
    base = preset(preset_name)
    return EmotionLlama(replace(base, llm={**base.llm, "vocab_size": len(tokenizer)}), tokenizer=tokenizer)


def chat_text(ann: Annotation, task: str, rng: random.Random) -> str:
    """A text-only rendering of a tuning conversation, for language pretraining."""
    answer = ann.label if task == "emotion" else rng.choice([ann.coarse_caption, ann.fine_reasoning])
    subtitle = f"The person in video says: {ann.subtitle}. " if ann.subtitle else ""
    if task == "reason":
        instruction = rng.choice(REASON_INSTRUCTIONS)
    else:
        instruction = instruction_for("emotion", labels=offered_labels(ann.label, rng))
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

    def text_loss(batch: list[str]):
        """Mean loss over the batch's tokens, the texts run shortest first in up to two
        groups each padded to its own longest (``length_groups``: label questions are short)."""
        ids = sorted(tok([tok.bos_token + t + tok.eos_token for t in batch], truncation=True, max_length=512,
                         add_special_tokens=False)["input_ids"], key=len)
        predicted = sum(len(x) - 1 for x in ids)  # every token but the first is predicted
        loss = 0.0
        for start, end in length_groups([len(x) for x in ids]):
            enc = tok.pad({"input_ids": ids[start:end]}, return_tensors="pt")
            labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
            loss = loss + llm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels,
                              num_items_in_batch=predicted).loss
        return loss

    fixed = texts[:PROBE_SIZE]
    losses = []
    with model.llama_model.disable_adapter():
        before = probe(llm, lambda: text_loss(fixed))
        llm.train()
        for _ in tqdm(range(steps), desc="language pretraining", unit="step"):
            losses.append(step_with(text_loss(rng.sample(texts, min(settings.batch_size, len(texts))))))
        after = probe(llm, lambda: text_loss(fixed))
    for p in base_params:
        p.requires_grad_(False)
    return {**loss_summary(losses), "probe_before": before, "probe_after": after}
