"""Emotion-LLaMA: multimodal emotion recognition and reasoning with an instruction-tuned LLM.

An implementation of Cheng et al., NeurIPS 2024 (arXiv 2406.11161): four encoders
(global frame, face, face sequence, speech), linear adapters and LLaMA-2 with LoRA.
Start with ``emotion_llama.pipeline.load_engine`` or ``python -m emotion_llama --help``.
"""

__version__ = "0.1.0"
