"""The synthetic audio-visual emotion corpus that Emotion-LLaMA-Tiny is trained on.

``corpus`` plans, renders and encodes the clips and writes their MERR-style annotations;
``face`` draws the talking face, ``voice`` speaks with espeak-ng, ``text`` writes the
subtitles, captions and reasoning. Needs numpy, OpenCV, espeak-ng and the bundled ffmpeg.
Run it with ``python -m emotion_llama synth``; described in ``docs/synthetic_corpus.md``.
Kept out of ``emotion_llama`` so that the demo never imports it.
"""

from .corpus import SynthError, generate_corpus, make_sample, plan_corpus, run_synth

__all__ = ["SynthError", "generate_corpus", "make_sample", "plan_corpus", "run_synth"]
