"""Emotional speech for the synthetic corpus: espeak-ng plus a little signal processing.

Each emotion belongs to a *voice group* that fixes the prosody (pitch level and range,
rate, loudness, pauses) and a voice quality effect. As with faces, some emotions share a
group because they sound alike (happy and surprised speech are both high and lively;
sad and contemptuous speech are both low, slow and flat; fear and worry both tremble;
neutral and doubtful speech are both even): the voice alone cannot separate them, the
face can. The groups are chosen so that face and voice *together* separate all nine.

======== ======================== =====================================================
group    emotions                 prosody and quality
======== ======================== =====================================================
angry    angry                    loud, fast, raised pitch, harsh (soft clipping), croak
bright   happy, surprise          high pitch, very wide range, lively, bright spectrum
low      sad, contempt            low pitch, narrow range, slow, soft, muffled, pauses
tense    fear, worried            raised pitch, fast, trembling (6-8 Hz), breathy/whisper
plain    neutral, doubt           moderate pitch, normal range and rate, clean
======== ======================== =====================================================

Speaker identity (gender, espeak variant, a personal pitch offset) is drawn per clip,
independent of the emotion. Background noise (pink, brown, hum, babble-like) is added at
a random SNR. Everything is deterministic given the RNG: espeak-ng itself is.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import numpy as np

from emotion_llama.errors import EmotionLlamaError

SPEECH_RATE = 22050  # espeak-ng's native rate; ffmpeg resamples to 16 kHz when muxing

VOICE_GROUP: dict[str, str] = {
    "angry": "angry",
    "happy": "bright",
    "surprise": "bright",
    "sad": "low",
    "contempt": "low",
    "fear": "tense",
    "worried": "tense",
    "neutral": "plain",
    "doubt": "plain",
}

# pitch: espeak -p (0-99, 50 is the voice's normal); range: SSML prosody range keyword;
# rate: words per minute; gain_db: final level (dBFS peak); gap: espeak -g (10 ms units).
VOICE_STYLE: dict[str, dict] = {
    "angry": {
        "pitch": (58, 74),
        "range": ("medium", "high"),
        "rate": (190, 220),
        "gain_db": (-2.0, -0.5),
        "gap": (0, 1),
    },
    "bright": {"pitch": (70, 88), "range": ("x-high",), "rate": (165, 190), "gain_db": (-6.0, -4.0), "gap": (0, 2)},
    "low": {"pitch": (12, 28), "range": ("x-low", "low"), "rate": (118, 138), "gain_db": (-16.0, -12.0), "gap": (4, 8)},
    "tense": {
        "pitch": (58, 72),
        "range": ("medium", "high"),
        "rate": (180, 205),
        "gain_db": (-10.0, -7.0),
        "gap": (0, 2),
    },
    "plain": {
        "pitch": (40, 52),
        "range": ("low", "medium"),
        "rate": (150, 170),
        "gain_db": (-9.0, -7.0),
        "gap": (1, 3),
    },
}
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
BASES = ("en-us", "en-us", "en", "en-gb-x-rp")


class EspeakUnavailableError(EmotionLlamaError):
    """espeak-ng is not installed (Debian: ``apt-get install espeak-ng``)."""


def espeak_binary() -> str | None:
    return shutil.which("espeak-ng")


@dataclass
class VoicePlan:
    emotion: str | None  # what the voice shows (None: no voice, audio missing)
    group: str
    gender: str  # "male" / "female"
    voice: str  # espeak voice name, e.g. "en-us+f3"
    pitch: int
    pitch_range: str
    rate: int
    gain_db: float
    gap: int
    effects: list[str] = field(default_factory=list)
    tremolo_hz: float = 0.0
    snr_db: float = 30.0
    noise: str = "pink"

    def clues(self) -> list[str]:
        """Canonical vocal clue phrases (see ``merr.VOICE_CLUES``), most telling first."""
        g = self.group
        out: list[str] = []
        if g == "angry":
            out += ["loud voice", "fast speech rate", "harsh voice"]
            if "croak" in self.effects:
                out.append("rough voice")
        elif g == "bright":
            out += ["high pitch", "wide pitch range", "bright tone"]
        elif g == "low":
            out += ["low pitch", "slow speech rate", "soft voice", "narrow pitch range", "muffled voice"]
            if self.gap >= 6:
                out.append("pauses between words")
        elif g == "tense":
            out += ["trembling voice", "fast speech rate", "high pitch"]
            out.append("whispering voice" if "whisper" in self.effects else "breathy voice")
        else:
            out += ["steady tone", "moderate pitch", "even pace"]
        return out


def plan_voice(rng: np.random.Generator, emotion: str, gender: str | None = None) -> VoicePlan:
    group = VOICE_GROUP[emotion]
    st = VOICE_STYLE[group]
    if gender is None:
        gender = "female" if rng.random() < 0.5 else "male"
    base = str(rng.choice(BASES))
    variant = str(rng.choice(FEMALE_VARIANTS if gender == "female" else MALE_VARIANTS))
    effects: list[str] = []
    if group == "angry":
        effects.append("harsh")
        if gender == "male" and rng.random() < 0.35:
            variant = "croak"
            effects.append("croak")
    elif group == "bright":
        effects.append("bright")
    elif group == "low":
        effects.append("muffled")
    elif group == "tense":
        effects.append("tremolo")
        if rng.random() < 0.3:
            variant = "whisperf" if gender == "female" else "whisper"
            effects.append("whisper")
        else:
            effects.append("breathy")
    personal = int(rng.integers(-5, 6))
    return VoicePlan(
        emotion=emotion,
        group=group,
        gender=gender,
        voice=f"{base}+{variant}",
        pitch=int(np.clip(rng.integers(st["pitch"][0], st["pitch"][1] + 1) + personal, 0, 99)),
        pitch_range=str(rng.choice(st["range"])),
        rate=int(rng.integers(st["rate"][0], st["rate"][1] + 1)),
        gain_db=float(rng.uniform(*st["gain_db"])),
        gap=int(rng.integers(st["gap"][0], st["gap"][1] + 1)),
        effects=effects,
        tremolo_hz=float(rng.uniform(6.0, 8.0)),
        snr_db=float(rng.uniform(8.0, 30.0)),
        noise=str(rng.choice(["pink", "brown", "white", "hum", "babble"])),
    )


def max_words(plan: VoicePlan, seconds: float) -> int:
    """About how many words fit in ``seconds`` at the plan's rate."""
    return max(3, int(plan.rate / 60.0 * seconds * (1.0 - 0.05 * plan.gap)))


def synthesize(plan: VoicePlan, text: str, rate_scale: float = 1.0) -> np.ndarray:
    """Speak ``text``: float32 mono at ``SPEECH_RATE``, leading/trailing silence trimmed."""
    exe = espeak_binary()
    if exe is None:
        raise EspeakUnavailableError(
            "espeak-ng is not installed; install it (apt-get install espeak-ng) to synthesise speech"
        )
    ssml = f'<speak><prosody range="{plan.pitch_range}">{escape(text)}</prosody></speak>'
    cmd = [
        exe,
        "--stdout",
        "-m",
        "-v",
        plan.voice,
        "-s",
        str(int(round(plan.rate * rate_scale))),
        "-p",
        str(plan.pitch),
        "-a",
        "100",
        "-g",
        str(plan.gap),
        ssml,
    ]
    res = subprocess.run(cmd, capture_output=True, check=False)
    if res.returncode != 0 or len(res.stdout) < 100:
        raise RuntimeError(f"espeak-ng failed ({res.returncode}): {res.stderr.decode(errors='replace')[:300]}")
    data = res.stdout
    k = data.find(b"data")
    pcm = np.frombuffer(data[k + 8 :] if k >= 0 else data[44:], dtype="<i2")
    x = pcm.astype(np.float32) / 32768.0
    return _trim(x)


def _trim(x: np.ndarray, thresh: float = 0.01) -> np.ndarray:
    idx = np.flatnonzero(np.abs(x) > thresh)
    if idx.size == 0:
        return x[:0]
    a = max(0, idx[0] - int(0.02 * SPEECH_RATE))
    b = min(len(x), idx[-1] + int(0.05 * SPEECH_RATE))
    return x[a:b]


def _fft_filter(x: np.ndarray, gain_fn) -> np.ndarray:
    n = len(x)
    if n == 0:
        return x
    nfft = 1 << int(np.ceil(np.log2(n)))
    spec = np.fft.rfft(x, nfft)
    f = np.fft.rfftfreq(nfft, 1.0 / SPEECH_RATE)
    return np.fft.irfft(spec * gain_fn(f), nfft)[:n].astype(np.float32)


def apply_effects(rng: np.random.Generator, plan: VoicePlan, x: np.ndarray) -> np.ndarray:
    """Voice-quality effects of the plan's group, then the final level."""
    if x.size == 0:
        return x
    x = x / (np.abs(x).max() + 1e-6)
    t = np.arange(len(x), dtype=np.float32) / SPEECH_RATE
    if "harsh" in plan.effects:
        drive = float(rng.uniform(3.0, 6.0))
        x = np.tanh(drive * x) / np.tanh(drive)
        x = _fft_filter(x, lambda f: 1.0 + 0.8 * np.clip((f - 1500.0) / 3000.0, 0, 1))
    if "bright" in plan.effects:
        x = _fft_filter(x, lambda f: 1.0 + 0.5 * np.clip((f - 2000.0) / 3000.0, 0, 1))
    if "muffled" in plan.effects:
        fc = float(rng.uniform(1200.0, 2000.0))
        x = _fft_filter(x, lambda f: 1.0 / np.sqrt(1.0 + (f / fc) ** 4))
    if "tremolo" in plan.effects:
        depth = float(rng.uniform(0.35, 0.6))
        x = x * (1.0 - depth * 0.5 * (1.0 + np.sin(2 * np.pi * plan.tremolo_hz * t + rng.uniform(0, 6.28)))).astype(
            np.float32
        )
    if "breathy" in plan.effects:
        env = _envelope(x, int(0.02 * SPEECH_RATE))
        noise = rng.standard_normal(len(x)).astype(np.float32)
        noise = _fft_filter(noise, lambda f: np.clip((f - 1000.0) / 2000.0, 0, 1))
        x = x + 0.25 * env * noise / (np.abs(noise).max() + 1e-6)
    peak = np.abs(x).max() + 1e-6
    return (x / peak * 10 ** (plan.gain_db / 20.0)).astype(np.float32)


def _envelope(x: np.ndarray, win: int) -> np.ndarray:
    k = np.ones(max(1, win), np.float32) / max(1, win)
    return np.sqrt(np.convolve(x * x, k, mode="same")).astype(np.float32)


def make_noise(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """Unit-RMS background noise of ``n`` samples."""
    if n == 0:
        return np.zeros(0, np.float32)
    if kind == "hum":
        t = np.arange(n) / SPEECH_RATE
        f0 = 50.0 if rng.random() < 0.5 else 60.0
        y = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) for k in (1, 2, 3, 5))
        y = y + 0.3 * rng.standard_normal(n)
    else:
        w = rng.standard_normal(n).astype(np.float32)
        if kind == "pink":
            y = _fft_filter(w, lambda f: 1.0 / np.sqrt(np.maximum(f, 20.0)))
        elif kind == "brown":
            y = _fft_filter(w, lambda f: 1.0 / np.maximum(f, 20.0))
        elif kind == "babble":
            y = _fft_filter(w, lambda f: np.exp(-(((f - 500.0) / 700.0) ** 2)))
            t = np.arange(n) / SPEECH_RATE
            y = y * (
                1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(3, 5) * t) * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t)
            )
        else:
            y = w
    y = np.asarray(y, np.float32)
    return y / (np.sqrt(np.mean(y * y)) + 1e-9)


def mix_track(
    rng: np.random.Generator,
    plan: VoicePlan,
    speech: np.ndarray,
    start: float,
    duration: float,
) -> np.ndarray:
    """The clip's sound: speech placed at ``start`` seconds plus noise at the plan's SNR."""
    n = int(round(duration * SPEECH_RATE))
    track = np.zeros(n, np.float32)
    s = int(round(start * SPEECH_RATE))
    seg = speech[: max(0, n - s)]
    track[s : s + len(seg)] = seg
    active = seg[np.abs(seg) > 1e-3]
    rms = float(np.sqrt(np.mean(active**2))) if active.size else 0.01
    noise = make_noise(rng, plan.noise, n) * rms * 10 ** (-plan.snr_db / 20.0)
    track += noise
    return np.clip(track, -1.0, 1.0)


def mouth_openness(speech: np.ndarray, start: float, times: np.ndarray) -> np.ndarray:
    """Speech loudness at each frame time, in [0, 1]: drives the mouth."""
    out = np.zeros(len(times), np.float32)
    if speech.size == 0:
        return out
    env = _envelope(speech, int(0.03 * SPEECH_RATE))
    ref = float(np.percentile(env[env > 1e-4], 90)) if np.any(env > 1e-4) else 1.0
    idx = np.round((times - start) * SPEECH_RATE).astype(int)
    ok = (idx >= 0) & (idx < len(env))
    out[ok] = np.clip(env[idx[ok]] / (ref + 1e-9), 0, 1.2)
    out = np.where(out < 0.12, 0.0, out)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def write_wav(path: str, track: np.ndarray, rate: int = SPEECH_RATE) -> None:
    """16-bit mono PCM WAV."""
    import wave

    pcm = np.clip(np.round(track * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
