"""Tokenizers: LLaMA-2's for the ``official`` preset, a small BPE trained here for ``tiny``.

The tiny tokenizer keeps LLaMA's conventions that the rest of the code relies on:
``<unk>`` = 0, ``<s>`` = 1, ``</s>`` = 2, pad token ``$$`` (the reference sets the
LLaMA pad token to ``$$``), and a prefix space so a word tokenises the same at the
start of a piece as inside a sentence. It is byte-level, so any text (any script,
emoji) tokenises without unknown tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .prompts import EMOTION_INSTRUCTION, REASON_INSTRUCTIONS, RESERVED_MARKERS

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "$$")


def prompt_vocabulary() -> list[str]:
    """Text every tokenizer should know well: the template and the tuned instructions."""
    return [
        "[INST] <video></video> <feature></feature> The person in video says: . [emotion] [reason] [/INST]",
        EMOTION_INSTRUCTION,
        *REASON_INSTRUCTIONS,
        " ".join(RESERVED_MARKERS),
    ]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` (plus the prompt vocabulary)."""
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator([*prompt_vocabulary(), *texts], trainer=trainer)
    return wrap(core)


def wrap(core: Tokenizer) -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="$$",
    )
    tokenizer.padding_side = "right"
    return tokenizer


def load_llama_tokenizer(source: str, token: str | None = None):
    """LLaMA-2's tokenizer from a folder or the Hub, pad token set as in the reference."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, token=token)
    tokenizer.pad_token = "$$"
    tokenizer.padding_side = "right"
    return tokenizer
