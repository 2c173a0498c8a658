"""Every name the library, the CLI and the page share, defined once.

Modalities (with the words a person reads and the reference's feature folders), the
prompt's slot kinds and their adapters, tasks, frame choices, label sets and the
generation defaults. Other modules import these; none spells them again. Plain data,
standard library only, so anything may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

# -- modalities ----------------------------------------------------------------------------
# What a clip offers the model, in prompt order. The first four are encoded; the
# subtitle is text. Any of them can be left out of an analysis.
MODALITIES = ("global", "face", "temporal", "audio", "subtitle")
ENCODED_MODALITIES = MODALITIES[:4]
# The utterance-level features that go at ``<FeatureHere>`` (one vector each).
FEATURE_MODALITIES = ("face", "temporal", "audio")


@dataclass(frozen=True)
class Modality:
    name: str  # what the code says
    display: str  # what a person reads
    short: str  # the attention chart's axis
    encoder: str  # the reference network that reads it
    reference_folder: str | None  # the reference feature layout's folder (``features.py``)


MODALITY = {
    "global": Modality("global", "global frame", "frame", "EVA ViT-g", "global_tokens"),
    "face": Modality("face", "face", "face", "MAE ViT-L", "mae_340_UTT"),
    "temporal": Modality("temporal", "face sequence", "face seq.", "VideoMAE ViT-L", "maeV_399_UTT"),
    "audio": Modality("audio", "audio", "audio", "HuBERT-large", "HL-UTT"),
    "subtitle": Modality("subtitle", "subtitle", "subtitle", "text", None),
}

# -- prompt slots ----------------------------------------------------------------------------
# Slot kind -> (its modality, the adapter that projects it into the LLM; attribute names
# of the reference, so its checkpoints load with one rename).
SLOTS = {
    "visual": ("global", "llama_proj"),
    "cls": ("global", "cls_tk_llama_proj"),
    "face": ("face", "feats_llama_proj1"),
    "temporal": ("temporal", "feats_llama_proj2"),
    "audio": ("audio", "feats_llama_proj3"),
}
ADAPTERS = tuple(adapter for _, adapter in SLOTS.values())
# Prompt text that is no modality, as the attention chart names it (prompt order).
TEXT_SPANS = {"instruction": "question", "template": "prompt", "history": "earlier turns"}

# -- tasks -----------------------------------------------------------------------------------
# Tag -> what the form calls it. ``emotion`` and ``reason`` are the tags the model was
# tuned on; ``visual`` and ``audio`` the reference demo's; ``free`` has no tag.
TASKS = {
    "emotion": "Recognise the emotion",
    "reason": "Explain the reasoning",
    "visual": "Describe the face",
    "audio": "Describe the voice",
    "free": "Ask a free question",
}
TAGGED_TASKS = tuple(task for task in TASKS if task != "free")

# -- frame for the global encoder --------------------------------------------------------------
FRAME_CHOICES = {
    "peak": "Peak of expression",
    "middle": "Middle of the clip",
    "first": "First frame (reference demo)",
}
DEFAULT_FRAME = "peak"
# The reference demo reads only the first frame and feeds zeros for these features.
DEMO_PARITY_FRAME = "first"
DEMO_PARITY_ZEROED = ("face", "temporal")


def frame_for(frame_choice: str, demo_parity: bool) -> str:
    """The frame rule in one place: the reference demo's layout always means the first frame."""
    return DEMO_PARITY_FRAME if demo_parity else frame_choice


# -- label sets --------------------------------------------------------------------------------
MER2023_LABELS = ("neutral", "angry", "happy", "sad", "worried", "surprise")
MERR_LABELS = ("happy", "sad", "neutral", "angry", "worried", "surprise", "fear", "contempt", "doubt")
LABEL_SETS = {"mer2023": MER2023_LABELS, "merr": MERR_LABELS}
LABEL_SET_NAMES = {"mer2023": "MER2023: 6 labels", "merr": "MERR: 9 labels", "custom": "My own labels"}
DEFAULT_LABEL_SET = "merr"


# -- generation ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenerationSettings:
    """Defaults of the reference demo (its public code: sampling, temperature 0.2, top-p 0.9)."""

    do_sample: bool = True
    temperature: float = 0.2
    top_p: float = 0.9
    repetition_penalty: float = 1.05
    max_new_tokens: int = 500
    min_new_tokens: int = 0  # benchmarks set it so a random model cannot stop at once
    max_context_tokens: int = 2000
    seed: int | None = 0


REFERENCE_GENERATION = GenerationSettings()
GREEDY = GenerationSettings(do_sample=False)
# The page's and the API's answer length (the reference demo's 500 is slow on a CPU).
ANSWER_TOKENS = 200
MAX_ANSWER_TOKENS = 2000
# Reasoning in ``evaluate``: greedy, as long as the page's.
REASON_SETTINGS = GenerationSettings(do_sample=False, max_new_tokens=ANSWER_TOKENS)
# A redraft of the reasoning samples at least this hot, so that it can differ from the first.
REDRAFT_TEMPERATURE = 0.7
# More drafts of a follow-up reasoning that argues for another label than the one shown.
REASONING_REDRAFTS = 3
