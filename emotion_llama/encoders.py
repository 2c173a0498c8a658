"""The four frozen encoders behind one small interface.

Each encoder turns the raw arrays of a ``PreparedClip`` into features:

- ``GlobalFrameEncoder``: EVA ViT-g (``Blip2VisionModel``) + ``ln_vision`` on one frame
  -> (1 + patches, width) tokens.
- ``FaceEncoder``: MAE ViT (``ViTMAEModel``, mask ratio 0) on face crops, mean over
  patch tokens and over frames -> one utterance-level vector.
- ``FaceSequenceEncoder``: VideoMAE (``VideoMAEModel``) on the face-crop sequence,
  mean over tokens -> one vector.
- ``SpeechEncoder``: HuBERT (``HubertModel``) on 16 kHz mono speech, last hidden
  layer, mean over time -> one vector.

Each has ``preprocess`` (numpy in, tensor out, no network) and ``forward``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import Blip2VisionModel, HubertModel, VideoMAEModel, ViTMAEModel

from .clip import PreparedClip
from .config import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, EmotionLlamaConfig
from .vocab import ENCODED_MODALITIES


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) or (H, W, 3) uint8 RGB -> (N, size, size, 3) uint8, bicubic as the reference.
    Images already at ``size`` (the training cache's) come back as they are, as PIL would."""
    if images.ndim == 3:
        images = images[None]
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([
        np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.BICUBIC))
        for img in images
    ])


def _to_pixels(images: np.ndarray, size: int, mean, std) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, size, size) float, normalised."""
    pixels = torch.from_numpy(resize_images(images, size)).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t


class GlobalFrameEncoder(nn.Module):
    """EVA ViT-g/14 with the reference's ``ln_vision``.

    The reference ends the ViT without a norm and applies ``ln_vision``, a plain
    ``LayerNorm(width)`` (eps 1e-5) that MiniGPT-v2 creates fresh and freezes. BLIP-2's
    ``post_layernorm`` in transformers is a *different*, trained norm, so it is replaced by
    the identity here and never loaded.
    """

    def __init__(self, config: EmotionLlamaConfig):
        super().__init__()
        self.image_size = config.global_vision["image_size"]
        self.vit = Blip2VisionModel(config.global_vision_config())
        self.vit.post_layernorm = nn.Identity()
        self.ln_vision = nn.LayerNorm(config.global_hidden, eps=config.ln_vision_eps)

    def preprocess(self, frame: np.ndarray) -> torch.Tensor:
        return _to_pixels(frame, self.image_size, CLIP_MEAN, CLIP_STD)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.vit.embeddings.patch_embedding.weight.dtype
        hidden = self.vit(pixel_values=pixel_values.to(dtype)).last_hidden_state
        # ln_vision stays in float32, as the reference's LayerNorm casts to fp32.
        return self.ln_vision(hidden.to(self.ln_vision.weight.dtype))


class FaceEncoder(nn.Module):
    """MAE ViT on face crops; utterance-level feature = mean over patches, then frames."""

    def __init__(self, config: EmotionLlamaConfig, mae: ViTMAEModel | None = None):
        super().__init__()
        self.image_size = config.face["image_size"]
        self.mae = mae or ViTMAEModel(config.face_config())

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        return _to_pixels(crops, self.image_size, IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(frames, 3, H, W) -> one utterance-level vector."""
        return self.frame_features(pixel_values).mean(dim=0)

    def frame_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(frames, 3, H, W) -> (frames, width): each crop's mean patch token."""
        batch = pixel_values.shape[0]
        num_patches = self.mae.embeddings.patch_embeddings.num_patches
        # Ascending noise keeps every patch in its own order: no random shuffle at inference.
        noise = torch.arange(num_patches, dtype=torch.float32, device=pixel_values.device).expand(batch, -1)
        dtype = self.mae.embeddings.patch_embeddings.projection.weight.dtype
        hidden = self.mae(pixel_values=pixel_values.to(dtype), noise=noise).last_hidden_state
        return hidden[:, 1:].mean(dim=1)


class FaceSequenceEncoder(nn.Module):
    """VideoMAE on the face-crop sequence; feature = mean over all space-time tokens."""

    def __init__(self, config: EmotionLlamaConfig, videomae: VideoMAEModel | None = None):
        super().__init__()
        self.image_size = config.temporal["image_size"]
        self.num_frames = config.temporal["num_frames"]
        self.videomae = videomae or VideoMAEModel(config.temporal_config())

    def preprocess(self, sequence: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) -> (1, num_frames, 3, size, size); T is resampled to num_frames."""
        picks = np.linspace(0, len(sequence) - 1, self.num_frames).round().astype(int)
        pixels = _to_pixels(sequence[picks], self.image_size, IMAGENET_MEAN, IMAGENET_STD)
        return pixels.unsqueeze(0)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(clips, frames, 3, H, W) -> (clips, width)."""
        dtype = self.videomae.embeddings.patch_embeddings.projection.weight.dtype
        hidden = self.videomae(pixel_values=pixel_values.to(dtype)).last_hidden_state
        return hidden.mean(dim=1)


class SpeechEncoder(nn.Module):
    """HuBERT; feature = last hidden layer averaged over time."""

    # Shortest waveform the convolutional front end accepts is 400 samples (25 ms).
    MIN_SAMPLES = 400

    def __init__(self, config: EmotionLlamaConfig, hubert: HubertModel | None = None):
        super().__init__()
        self.hubert = hubert or HubertModel(config.audio_config())

    def preprocess(self, waveform: np.ndarray) -> torch.Tensor:
        """Zero mean, unit variance, as the HuBERT-large feature extractor does."""
        wave = np.asarray(waveform, dtype=np.float32)
        if wave.size < self.MIN_SAMPLES:
            wave = np.pad(wave, (0, self.MIN_SAMPLES - wave.size))
        wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
        return torch.from_numpy(wave).unsqueeze(0)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """(clips, samples) -> (clips, width)."""
        dtype = self.hubert.feature_extractor.conv_layers[0].conv.weight.dtype
        hidden = self.hubert(input_values=input_values.to(dtype)).last_hidden_state
        return hidden.mean(dim=1)


class ModalityEncoders(nn.Module):
    """The four encoders; frozen in every training stage, as in the paper.

    ``pretrained`` may hold already-loaded transformers models under the keys ``face``,
    ``temporal`` and ``audio``; the others are built from the config.
    """

    def __init__(self, config: EmotionLlamaConfig, pretrained: dict[str, nn.Module] | None = None):
        super().__init__()
        pretrained = pretrained or {}
        self.global_frame = GlobalFrameEncoder(config)
        self.face = FaceEncoder(config, pretrained.get("face"))
        self.temporal = FaceSequenceEncoder(config, pretrained.get("temporal"))
        self.audio = SpeechEncoder(config, pretrained.get("audio"))

    def of(self, modality: str) -> nn.Module:
        """The encoder that reads ``modality`` (one of ``vocab.ENCODED_MODALITIES``)."""
        return {"global": self.global_frame, "face": self.face, "temporal": self.temporal, "audio": self.audio}[modality]

    @property
    def feature_dims(self) -> dict[str, int]:
        return {
            "global": self.global_frame.vit.config.hidden_size,
            "face": self.face.mae.config.hidden_size,
            "temporal": self.temporal.videomae.config.hidden_size,
            "audio": self.audio.hubert.config.hidden_size,
        }

    @torch.no_grad()
    def fingerprint(self) -> str:
        """A short hash of the weights (names, shapes and a few values of each), so features
        cached by one set of encoders are never read for another."""
        digest = hashlib.sha1()
        for name, tensor in self.state_dict().items():
            digest.update(f"{name}{tuple(tensor.shape)}".encode())
            if tensor.device.type != "meta":
                digest.update(tensor.flatten()[:64].float().cpu().numpy().tobytes())
        return digest.hexdigest()[:12]

    @torch.no_grad()
    def encode(self, clip: PreparedClip, zero_out: set[str], timings: dict[str, float] | None = None) -> EncodedClip:
        """Run the four encoders. A missing or ``zero_out`` modality becomes zeros at the
        encoder output (its adapter then contributes only its bias), which is how the
        reference demo fills the face and temporal features it never computes. The face is
        missing when no face was found: crops of the frame's centre would read a wall or
        the back of a head as an expression."""
        inputs = {"global": clip.global_frame, "face": clip.face_crops, "temporal": clip.face_sequence,
                  "audio": clip.audio}
        available = {"global": True, "face": clip.face_found and len(clip.face_crops) > 0,
                     "temporal": clip.face_found and len(clip.face_sequence) > 0, "audio": clip.has_audio}
        out = EncodedClip(features={}, present={})
        for name in ENCODED_MODALITIES:
            start = time.perf_counter()
            out.present[name] = available[name] and name not in zero_out
            if out.present[name]:
                out.features[name] = self._features(name, inputs[name])
            else:
                out.features[name] = self._zeros(name)
                out.filled[name] = "left out: zeros" if name in zero_out else "missing: zeros"
            if timings is not None:
                timings[f"encode_{name}"] = time.perf_counter() - start
        return out

    def _features(self, modality: str, raw) -> torch.Tensor:
        encoder = self.of(modality)
        device = next(encoder.parameters()).device
        features = encoder(encoder.preprocess(raw).to(device))
        # The face encoder pools over crops itself; the others return a batch of one.
        return (features if modality == "face" else features[0]).float()

    def _zeros(self, modality: str) -> torch.Tensor:
        device = next(self.parameters()).device
        width = self.feature_dims[modality]
        if modality == "global":
            grid = self.global_frame.vit.config.image_size // self.global_frame.vit.config.patch_size
            return torch.zeros(1 + grid**2, width, device=device)
        return torch.zeros(width, device=device)


@dataclass
class EncodedClip:
    """Encoder outputs of one clip: what chat turns reuse without re-encoding."""

    features: dict[str, torch.Tensor]  # global: (1 + patches, width); face/temporal/audio: (width,)
    present: dict[str, bool]  # modality -> the clip had it and it was used
    filled: dict[str, str] = field(default_factory=dict)  # modality -> how a missing one was filled


def without(encoded: EncodedClip, modalities: tuple[str, ...] | set[str]) -> EncodedClip:
    """The same clip with some modalities left out: zeros, as ``encode`` fills them."""
    features = {m: torch.zeros_like(f) if m in modalities else f for m, f in encoded.features.items()}
    present = {m: p and m not in modalities for m, p in encoded.present.items()}
    filled = {**encoded.filled, **{m: "left out: zeros" for m in modalities if m in features}}
    return EncodedClip(features=features, present=present, filled=filled)
