"""Training: the paper's recipe, one module per stage, over a ``TrainConfig``.

``python -m emotion_llama train CONFIG.json`` runs every stage in order (``recipe.run``);
each writes its result into the work folder and is skipped when that result exists, so
an interrupted run resumes where it stopped.

- ``decoding``: decode every clip once (faces, crops, audio) into the run's cache
  (``cache.RunCache``, which also holds the features).
- ``encoder_pretraining``: each encoder learns to name the emotion its own modality
  shows, and optionally the clues annotated for it (a supervised stand-in for the
  reference's MER2023-pretrained MAE / VideoMAE / HuBERT); then they are frozen.
- ``extraction``: the frozen encoders' features of every clip, in the reference layout.
- ``language_pretraining``: a tokenizer trained on the corpus text (before the encoders,
  since the model's size follows from it), then the LLM pretrained as a language model
  on that text (the stand-in for LLaMA-2's pretraining).
- ``coarse_tuning``: stage 1, coarse-grained tuning on labels (``[emotion]``) and coarse
  captions (``[reason]``), as the reference's first stage.
- ``fine_tuning``: stage 2, fine-grained tuning on the fine-grained reasoning, labels
  mixed in so the label answer is kept.

In both tuning stages (``tuning``) only the adapters and LoRA train. ``common`` holds the
settings, the optimiser and the loss summaries every stage uses.

The same functions tune the ``official`` preset on a GPU: the stages read annotations in
the MERR / MER2023 formats (``data/merr.py``) and features in the reference layout.
Nothing outside this package imports it but the CLI's ``train`` and ``feature-stats``
commands (``feature_stats``: the training clips' statistics behind the out-of-domain
warning, ``familiarity.py``): inference never loads training code.
"""

from .common import StageSettings, TrainConfig
from .recipe import run

__all__ = ["StageSettings", "TrainConfig", "run"]
