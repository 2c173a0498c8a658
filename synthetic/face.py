"""A rendered talking face for the synthetic corpus, drawn with OpenCV from FACS action units.

The face is a head *layer* (hair, ears, neck, shaded skin with eye sockets, a lighter
nose bridge and cheeks) drawn once per clip; each rendered frame copies it, draws the
moving parts (brows, eyes, nose wings, mouth, wrinkles, glasses) from the action-unit
intensities of that moment, turns it a little (head motion) and lays it over a
cluttered background. The shading is what lets OpenCV's Haar frontal-face cascade find
the face: dark eye regions and brows above a lighter nose bridge and cheeks, a mouth.

Action units used (FACS numbers): AU1 inner brow raiser, AU2 outer brow raiser, AU4 brow
lowerer, AU5 upper lid raiser, AU6 cheek raiser, AU7 lid tightener, AU9 nose wrinkler,
AU12 lip corner puller, AU14 dimpler (one-sided here), AU15 lip corner depressor, AU17
chin raiser, AU20 lip stretcher, AU23 lip tightener, AU24 lip pressor, AU25 lips part,
AU26 jaw drop, AU41 lid droop. ``_one`` suffixes mark one-sided actions (the side is a
per-clip choice).

Everything here is a pure function of a ``numpy.random.Generator``: same seed, same
pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from emotion_llama.data.merr import AU_CLUES

SIZE = 256  # frames are SIZE x SIZE, RGB
_SHIFT = 4  # fixed-point bits for sub-pixel drawing
_SCALE = 1 << _SHIFT

# Canonical AU names (the wording of the FACS manual, lower case) used in clue lists.
AU_NAMES = AU_CLUES
# Plain-language paraphrases, for varied reasoning text (the canonical name is always kept).
AU_PLAIN: dict[str, str] = {
    "AU1": "the inner corners of the brows are raised",
    "AU2": "the outer brows are lifted",
    "AU2_one": "one eyebrow is raised",
    "AU4": "the brows are lowered and drawn together",
    "AU4_one": "one brow is pulled down",
    "AU5": "the eyes are opened wide",
    "AU6": "the cheeks are lifted",
    "AU7": "the eyelids are tightened",
    "AU9": "the nose is wrinkled",
    "AU12": "the corners of the mouth are pulled up",
    "AU12_one": "one corner of the mouth curls up",
    "AU14_one": "one corner of the mouth is tightened",
    "AU15": "the corners of the mouth turn down",
    "AU17": "the chin is pushed up",
    "AU20": "the lips are stretched sideways",
    "AU23": "the lips are tightened",
    "AU24": "the lips are pressed together",
    "AU25": "the lips are parted",
    "AU26": "the jaw drops open",
    "AU41": "the upper eyelids droop",
    "AU53": "the head is tilted back",
}

# Facial expression prototypes. Three pairs share a core, as in real faces (fear and
# surprise, sadness and worry, contempt and doubt look alike); each member of a pair has
# a "tell" that appears only in some clips, so the face alone cannot always tell a pair
# apart and the voice has to.
FACE_CORE: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"AU6": 0.8, "AU12": 1.0, "AU25": 0.35},
    "angry": {"AU4": 1.0, "AU5": 0.35, "AU7": 0.8, "AU23": 0.7, "AU24": 0.6},
    "surprise": {"AU1": 1.0, "AU2": 0.9, "AU5": 1.0, "AU26": 0.75},
    "fear": {"AU1": 1.0, "AU2": 0.9, "AU5": 1.0, "AU26": 0.75},
    "sad": {"AU1": 0.9, "AU4": 0.55, "AU17": 0.45, "AU41": 0.45},
    "worried": {"AU1": 0.9, "AU4": 0.55, "AU17": 0.45, "AU41": 0.45},
    "contempt": {"AU14_one": 0.9, "AU2_one": 0.6, "AU7": 0.3},
    "doubt": {"AU14_one": 0.9, "AU2_one": 0.6, "AU7": 0.3},
}
FACE_TELL: dict[str, tuple[float, dict[str, float]]] = {
    # emotion: (probability the tell is shown, extra AUs)
    "happy": (0.4, {"AU26": 0.45}),
    "angry": (0.5, {"AU9": 0.7}),
    "surprise": (0.35, {"AU26": 1.0, "AU25": 0.5}),
    "fear": (0.35, {"AU4": 0.6, "AU20": 0.8}),
    "sad": (0.35, {"AU15": 0.9, "AU41": 0.7}),
    "worried": (0.35, {"AU24": 0.7, "AU20": 0.45}),
    "contempt": (0.35, {"AU12_one": 0.8, "AU53": 0.7}),
    "doubt": (0.35, {"AU4_one": 0.8, "AU24": 0.5}),
}
FACE_PAIRS = (("surprise", "fear"), ("sad", "worried"), ("contempt", "doubt"))
CLUE_THRESHOLD = 0.3  # an AU at or above this apex value is listed as a clue


@dataclass
class FacePlan:
    """What the face does over the clip (all numbers drawn from the sample's RNG)."""

    emotion: str  # the expression shown ("neutral" for none)
    apex: dict[str, float]  # AU -> apex intensity in [0, 1]
    tell: bool  # whether the emotion's distinguishing AUs are shown
    intensity: float  # overall apex scale
    onset: float  # seconds: expression starts rising
    apex_start: float
    apex_end: float
    offset_level: float  # fraction of apex left at the end of the clip
    visibility: str = "visible"  # "visible", "turned_away", "occluded"
    prop: str | None = None  # small partial occluder that leaves the face detectable

    def clue_aus(self) -> list[str]:
        items = sorted(self.apex.items(), key=lambda kv: (-kv[1], kv[0]))
        return [au for au, v in items if v >= CLUE_THRESHOLD]


def plan_face(rng: np.random.Generator, emotion: str, duration: float, visibility: str = "visible") -> FacePlan:
    core = dict(FACE_CORE[emotion])
    tell = False
    if emotion in FACE_TELL:
        p, extra = FACE_TELL[emotion]
        if rng.random() < p:
            tell = True
            for au, v in extra.items():
                core[au] = max(core.get(au, 0.0), v)
    if emotion == "neutral":
        intensity = 1.0
        apex = {}
        # a resting face is never perfectly still
        for au in ("AU12", "AU4", "AU1", "AU7"):
            if rng.random() < 0.25:
                apex[au] = float(rng.uniform(0.05, 0.2))
    else:
        intensity = float(rng.uniform(0.4, 0.55) if rng.random() < 0.12 else rng.uniform(0.55, 1.0))
        apex = {au: float(np.clip(v * intensity * rng.uniform(0.85, 1.15), 0.0, 1.0)) for au, v in core.items()}
    onset = float(rng.uniform(0.0, 0.25) * duration)
    rise = float(rng.uniform(0.25, 0.7))
    apex_start = min(onset + rise, duration * 0.6)
    apex_end = float(max(apex_start + 0.4, rng.uniform(0.7, 0.95) * duration))
    prop = None
    if visibility == "visible" and rng.random() < 0.08:
        prop = str(rng.choice(["mic", "mug", "hand"]))
    return FacePlan(
        emotion=emotion,
        apex=apex,
        tell=tell,
        intensity=intensity,
        onset=onset,
        apex_start=apex_start,
        apex_end=apex_end,
        offset_level=float(rng.uniform(0.35, 0.8)),
        visibility=visibility,
        prop=prop,
    )


def envelope(plan: FacePlan, t: float, duration: float) -> float:
    """Onset-apex-offset profile in [0, 1] at time t."""
    if t <= plan.onset:
        return 0.0
    if t < plan.apex_start:
        x = (t - plan.onset) / max(plan.apex_start - plan.onset, 1e-3)
        return 0.5 - 0.5 * math.cos(math.pi * x)
    if t <= plan.apex_end:
        return 1.0
    x = (t - plan.apex_end) / max(duration - plan.apex_end, 1e-3)
    x = min(max(x, 0.0), 1.0)
    return 1.0 - (1.0 - plan.offset_level) * (0.5 - 0.5 * math.cos(math.pi * x))


# ----------------------------------------------------------------------------- identity

SKIN_TONES = np.array(
    [
        (255, 224, 196),
        (241, 194, 160),
        (224, 172, 130),
        (198, 145, 105),
        (170, 118, 82),
        (141, 92, 62),
        (110, 72, 48),
        (233, 200, 170),
    ],
    dtype=np.float32,
)
HAIR_COLORS = np.array(
    [(25, 20, 18), (55, 38, 28), (90, 60, 35), (140, 100, 60), (200, 165, 110), (150, 150, 150), (120, 50, 25)],
    dtype=np.float32,
)
EYE_COLORS = np.array([(60, 40, 25), (90, 60, 30), (50, 80, 110), (70, 100, 70), (40, 30, 25)], dtype=np.float32)
CLOTHES = np.array(
    [(40, 60, 120), (150, 30, 40), (60, 60, 60), (220, 220, 215), (30, 110, 80), (200, 160, 60), (90, 50, 120)],
    dtype=np.float32,
)


@dataclass
class Identity:
    cx: float
    cy: float
    a: float  # face half width (px)
    b: float  # face half height (px)
    jaw: float  # 0 pointed/oval .. 1 square
    skin: np.ndarray
    hair: np.ndarray
    hair_style: str
    eye_color: np.ndarray
    brow_thick: float
    brow_dark: float
    lip_tint: float
    glasses: str | None
    glasses_color: tuple[int, int, int]
    clothes: np.ndarray
    side: int  # +1 / -1: the side of one-sided actions
    eye_sep: float
    mouth_y: float
    age: float
    light_x: float  # -1..1, direction of the key light
    light_gain: float
    warmth: float
    motion: np.ndarray = field(default_factory=lambda: np.zeros(8))


def sample_identity(rng: np.random.Generator) -> Identity:
    a = float(rng.uniform(46, 58))
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.93, 1.05, size=3).astype(np.float32)
    hair_style = str(rng.choice(["short", "short", "long", "long", "bald", "bun", "curly"]))
    # hair darker than the skin (light hair over a dark face defeats the Haar cascade)
    hair_lum = HAIR_COLORS @ np.array([0.299, 0.587, 0.114], np.float32)
    hair_ok = np.flatnonzero(hair_lum <= max(45.0, 0.85 * float(skin @ np.array([0.299, 0.587, 0.114], np.float32))))
    hair = HAIR_COLORS[hair_ok[rng.integers(len(hair_ok))]]
    # the camera's auto exposure: darker faces get a brighter exposure
    lum = float(skin @ np.array([0.299, 0.587, 0.114], np.float32))
    exposure = float(np.clip((150.0 / lum) ** 0.6, 0.95, 1.45))
    return Identity(
        cx=float(128 + rng.uniform(-14, 14)),
        cy=float(124 + rng.uniform(-10, 10)),
        a=a,
        b=a * float(rng.uniform(1.22, 1.38)),
        jaw=float(rng.uniform(0.0, 1.0)),
        skin=np.clip(skin, 60, 255),
        hair=hair,
        hair_style=hair_style,
        eye_color=EYE_COLORS[rng.integers(len(EYE_COLORS))],
        brow_thick=float(rng.uniform(0.055, 0.09)),
        brow_dark=float(rng.uniform(0.35, 0.6)),
        lip_tint=float(rng.uniform(0.2, 0.6)),
        glasses=(str(rng.choice(["round", "square"])) if rng.random() < 0.22 else None),
        glasses_color=tuple(int(c) for c in rng.choice([(20, 20, 20), (90, 60, 40), (150, 150, 160)])),
        clothes=CLOTHES[rng.integers(len(CLOTHES))],
        side=int(rng.choice([-1, 1])),
        eye_sep=float(rng.uniform(0.34, 0.4)),
        mouth_y=float(rng.uniform(0.5, 0.58)),
        age=float(rng.uniform(0, 1)),
        light_x=float(rng.uniform(-1, 1)),
        light_gain=float(rng.uniform(0.85, 1.1) * exposure),
        warmth=float(rng.uniform(-0.06, 0.06)),
        motion=rng.uniform(0, 2 * math.pi, size=8),
    )


# ----------------------------------------------------------------------------- drawing helpers


def _pts(points) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * _SCALE).astype(np.int32).reshape(-1, 1, 2)


def _poly(img, points, color, closed=True):
    cv2.fillPoly(img, [_pts(points)], _col(color), cv2.LINE_AA, _SHIFT)


def _line(img, points, color, thickness):
    cv2.polylines(img, [_pts(points)], False, _col(color), max(1, int(round(thickness))), cv2.LINE_AA, _SHIFT)


def _ellipse(img, center, axes, angle, color, thickness=-1, start=0, end=360):
    c = (int(round(center[0] * _SCALE)), int(round(center[1] * _SCALE)))
    ax = (max(1, int(round(axes[0] * _SCALE))), max(1, int(round(axes[1] * _SCALE))))
    cv2.ellipse(img, c, ax, angle, start, end, _col(color), thickness, cv2.LINE_AA, _SHIFT)


def _col(color) -> tuple[int, ...]:
    return tuple(min(255, max(0, int(round(float(c))))) for c in color)


_BEZ: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _bezier(p0, p1, p2, n=9) -> np.ndarray:
    w = _BEZ.get(n)
    if w is None:
        t = np.linspace(0, 1, n)[:, None]
        w = _BEZ[n] = ((1 - t) ** 2, 2 * (1 - t) * t, t**2)
    return (
        w[0] * np.asarray(p0, dtype=np.float64)
        + w[1] * np.asarray(p1, dtype=np.float64)
        + w[2] * np.asarray(p2, dtype=np.float64)
    )


def _gauss(xx, yy, cx, cy, sx, sy):
    return np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2) * 0.5)


_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)


# ----------------------------------------------------------------------------- background


def render_background(rng: np.random.Generator, ident: Identity) -> np.ndarray:
    """A cluttered room behind the person, with the torso (static)."""
    base = rng.uniform(70, 215, size=3).astype(np.float32)
    top = base * rng.uniform(0.8, 1.1)
    grad = np.linspace(0, 1, SIZE, dtype=np.float32)[:, None, None]
    img = (top[None, None, :] * (1 - grad) + base[None, None, :] * grad) * np.ones((1, SIZE, 1), np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    # clutter: shelves, frames, a window, a plant, a lamp, posters
    for _ in range(int(rng.integers(3, 8))):
        kind = rng.choice(["rect", "frame", "shelf", "window", "plant", "lamp", "stripes"])
        x0, y0 = rng.uniform(-20, SIZE), rng.uniform(-20, SIZE * 0.85)
        w, h = rng.uniform(20, 90), rng.uniform(15, 80)
        col = rng.uniform(20, 245, size=3)
        if kind == "rect":
            _poly(img, [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)], col)
        elif kind == "frame":
            _poly(img, [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)], col * 0.5)
            _poly(
                img,
                [(x0 + 4, y0 + 4), (x0 + w - 4, y0 + 4), (x0 + w - 4, y0 + h - 4), (x0 + 4, y0 + h - 4)],
                rng.uniform(30, 240, size=3),
            )
        elif kind == "shelf":
            _poly(img, [(x0, y0), (x0 + w * 1.5, y0), (x0 + w * 1.5, y0 + 5), (x0, y0 + 5)], col * 0.6)
            bx = x0
            while bx < x0 + w * 1.4:
                bw, bh = rng.uniform(4, 10), rng.uniform(12, 26)
                _poly(img, [(bx, y0), (bx + bw, y0), (bx + bw, y0 - bh), (bx, y0 - bh)], rng.uniform(20, 240, size=3))
                bx += bw + rng.uniform(0, 3)
        elif kind == "window":
            bright = np.array([235, 240, 245]) * rng.uniform(0.85, 1.0)
            _poly(img, [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)], bright)
            _line(img, [(x0 + w / 2, y0), (x0 + w / 2, y0 + h)], col * 0.5, 3)
            _line(img, [(x0, y0 + h / 2), (x0 + w, y0 + h / 2)], col * 0.5, 3)
        elif kind == "plant":
            green = np.array([40, 120, 50]) * rng.uniform(0.6, 1.3)
            for _k in range(int(rng.integers(4, 9))):
                _ellipse(
                    img,
                    (x0 + rng.uniform(-15, 15), y0 + rng.uniform(-15, 15)),
                    (rng.uniform(4, 10), rng.uniform(8, 18)),
                    rng.uniform(0, 180),
                    green * rng.uniform(0.7, 1.2),
                )
        elif kind == "lamp":
            _ellipse(img, (x0, y0), (w / 4, w / 4), 0, (250, 240, 200))
        else:
            for k in range(int(rng.integers(3, 7))):
                _line(img, [(x0 + k * 8, y0), (x0 + k * 8, y0 + h)], col, 3)
    img = cv2.GaussianBlur(img, (5, 5), 1.2)
    # torso and shoulders
    cx, cy, a, b = ident.cx, ident.cy, ident.a, ident.b
    sh_y = cy + 1.25 * b
    _ellipse(img, (cx, sh_y + 1.1 * a), (2.0 * a, 1.3 * a), 0, ident.clothes)
    _ellipse(img, (cx, sh_y + 0.05 * a), (0.55 * a, 0.3 * a), 0, ident.skin * 0.75, -1, 0, 180)
    return img


# ----------------------------------------------------------------------------- head layer


@dataclass
class HeadLayer:
    rgb: np.ndarray  # (S, S, 3) uint8, upright head at (cx, cy)
    alpha: np.ndarray  # (S, S) float32 in [0, 1]


def render_head_layer(ident: Identity, turned_away: bool = False) -> HeadLayer:
    cx, cy, a, b = ident.cx, ident.cy, ident.a, ident.b
    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    skin = ident.skin
    hair = ident.hair

    # hair behind the head
    if ident.hair_style in ("long",):
        _poly(
            rgb,
            [
                (cx - 1.15 * a, cy - 0.3 * b),
                (cx + 1.15 * a, cy - 0.3 * b),
                (cx + 1.2 * a, cy + 1.15 * b),
                (cx - 1.2 * a, cy + 1.15 * b),
            ],
            hair * 0.85,
        )
        _poly(
            mask,
            [
                (cx - 1.15 * a, cy - 0.3 * b),
                (cx + 1.15 * a, cy - 0.3 * b),
                (cx + 1.2 * a, cy + 1.15 * b),
                (cx - 1.2 * a, cy + 1.15 * b),
            ],
            (255,),
        )
    if ident.hair_style == "bun":
        _ellipse(rgb, (cx, cy - 1.12 * b), (0.45 * a, 0.35 * a), 0, hair)
        _ellipse(mask, (cx, cy - 1.12 * b), (0.45 * a, 0.35 * a), 0, (255,))
    if ident.hair_style != "bald":
        grow = 1.14 if ident.hair_style == "curly" else 1.07
        _ellipse(rgb, (cx, cy - 0.12 * b), (grow * a, 1.0 * b * (grow - 0.02)), 0, hair * 0.9)
        _ellipse(mask, (cx, cy - 0.12 * b), (grow * a, 1.0 * b * (grow - 0.02)), 0, (255,))
    # neck
    neck = [
        (cx - 0.42 * a, cy + 0.55 * b),
        (cx + 0.42 * a, cy + 0.55 * b),
        (cx + 0.48 * a, cy + 1.35 * b),
        (cx - 0.48 * a, cy + 1.35 * b),
    ]
    _poly(rgb, neck, skin * 0.78)
    _poly(mask, neck, (255,))
    # ears
    for s in (-1, 1):
        _ellipse(rgb, (cx + s * 0.98 * a, cy - 0.02 * b), (0.17 * a, 0.28 * a), 0, skin * 0.88)
        _ellipse(mask, (cx + s * 0.98 * a, cy - 0.02 * b), (0.17 * a, 0.28 * a), 0, (255,))
    # face: an ellipse for the skull, a wider ellipse for the jaw on square faces
    _ellipse(rgb, (cx, cy), (a, b), 0, skin)
    _ellipse(mask, (cx, cy), (a, b), 0, (255,))
    if ident.jaw > 0.4:
        jw = a * (0.8 + 0.15 * ident.jaw)
        _ellipse(rgb, (cx, cy + 0.45 * b), (jw, 0.55 * b), 0, skin)
        _ellipse(mask, (cx, cy + 0.45 * b), (jw, 0.55 * b), 0, (255,))

    face_mask = np.zeros((SIZE, SIZE), np.float32)
    _ellipse(face_mask, (cx, cy), (a * 1.02, b * 1.02), 0, (1.0,))
    if ident.jaw > 0.4:
        _ellipse(face_mask, (cx, cy + 0.45 * b), (a * (0.8 + 0.15 * ident.jaw), 0.55 * b), 0, (1.0,))

    # shading (multiplicative), all relative to the face geometry
    xx, yy = _XX, _YY
    r = np.sqrt(((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2)
    shade = 1.0 - 0.28 * np.clip(r, 0, 1.3) ** 3
    shade *= 1.0 + 0.12 * ident.light_x * np.clip((xx - cx) / a, -1.2, 1.2)
    ey = cy - 0.1 * b
    ex = ident.eye_sep * a
    # eye sockets and brow ridge shadow: the darkest region of the face
    for s in (-1, 1):
        shade -= 0.32 * _gauss(xx, yy, cx + s * ex, ey - 0.02 * a, 0.2 * a, 0.13 * a)
    # nose bridge and forehead lighter; cheeks lighter
    shade += 0.12 * _gauss(xx, yy, cx, ey, 0.07 * a, 0.25 * b)
    shade += 0.1 * _gauss(xx, yy, cx, cy - 0.5 * b, 0.5 * a, 0.18 * b)
    for s in (-1, 1):
        shade += 0.09 * _gauss(xx, yy, cx + s * 0.45 * a, cy + 0.2 * b, 0.2 * a, 0.14 * b)
        # nose side shadow
        shade -= 0.08 * _gauss(xx, yy, cx + s * 0.13 * a, cy + 0.12 * b, 0.05 * a, 0.16 * b)
    # shadow under the nose and under the lower lip, jaw shadow
    shade -= 0.1 * _gauss(xx, yy, cx, cy + 0.36 * b, 0.14 * a, 0.04 * b)
    shade -= 0.08 * _gauss(xx, yy, cx, cy + (ident.mouth_y + 0.17) * b, 0.25 * a, 0.05 * b)
    shade = np.where(face_mask > 0, shade, 1.0)
    rgb_f = rgb.astype(np.float32) * shade[..., None]

    if turned_away:
        # back of the head: hair everywhere the face would be
        rgb_f[face_mask > 0] = hair * 0.9
    rgb = np.clip(rgb_f, 0, 255).astype(np.uint8)

    # front hair (fringe) over the top of the forehead
    if ident.hair_style != "bald" and not turned_away:
        hl = cy - 0.58 * b
        top = _bezier((cx - 1.05 * a, cy - 0.05 * b), (cx, hl - 0.25 * b), (cx + 1.05 * a, cy - 0.05 * b), 15)
        cap = [
            (cx + 1.08 * a, cy - 0.1 * b),
            (cx + 1.0 * a, cy - 1.15 * b),
            (cx - 1.0 * a, cy - 1.15 * b),
            (cx - 1.08 * a, cy - 0.1 * b),
        ]
        region = np.zeros((SIZE, SIZE), np.uint8)
        _poly(region, np.concatenate([top, np.array(cap)[::-1][::-1]]), (255,))
        head_top = np.zeros((SIZE, SIZE), np.uint8)
        _ellipse(head_top, (cx, cy - 0.12 * b), (a * 1.07, b * 1.05), 0, (255,))
        sel = (region > 0) & (head_top > 0)
        rgb[sel] = np.clip(hair * 0.95, 0, 255).astype(np.uint8)
    alpha = cv2.GaussianBlur(mask, (3, 3), 0.7).astype(np.float32) / 255.0
    return HeadLayer(rgb=rgb, alpha=alpha)


# ----------------------------------------------------------------------------- features


def draw_features(img: np.ndarray, ident: Identity, au: dict[str, float], speech: float, blink: float) -> None:
    """Draw the moving parts of the face on the upright head layer, in place."""
    cx, cy, a, b = ident.cx, ident.cy, ident.a, ident.b
    g = au.get
    side = ident.side
    skin = ident.skin
    dark = np.clip(skin * 0.55, 0, 255)
    ey = cy - 0.1 * b
    ex = ident.eye_sep * a
    head_up = g("AU53", 0.0)

    # --- eyes: the whites sit in shadow; on darker skin they are dimmer still, so the
    # eye region stays darker than the cheeks (what a face detector looks for)
    lum = float(skin[0] * 0.299 + skin[1] * 0.587 + skin[2] * 0.114)
    sclera = _col(np.array([225.0, 222.0, 215.0]) * (0.55 + 0.35 * min(lum, 200.0) / 200.0))
    for s in (-1, 1):
        ecx = cx + s * ex
        ew = 0.19 * a
        up = 0.095 * a * (1 + 0.9 * g("AU5", 0) - 0.45 * g("AU7", 0) - 0.55 * g("AU41", 0) - 0.2 * g("AU6", 0))
        lo = 0.055 * a * (1 - 0.55 * g("AU6", 0) - 0.45 * g("AU7", 0) + 0.4 * g("AU5", 0))
        up *= 1.0 - blink
        up = max(up, 0.008 * a)
        lo = max(lo, 0.01 * a)
        inner = (ecx - s * ew, ey + 0.01 * a)
        outer = (ecx + s * ew, ey)
        top = _bezier(inner, (ecx, ey - 2 * up), outer, 9)
        bot = _bezier(outer, (ecx, ey + 2 * lo), inner, 9)
        eye_poly = np.concatenate([top, bot])
        # the eye opening
        x0, y0 = int(ecx - ew - 3), int(ey - 2 * up - 3)
        x1, y1 = int(ecx + ew + 4), int(ey + 2 * lo + 4)
        x0, y0 = max(x0, 0), max(y0, 0)
        roi = img[y0:y1, x0:x1]
        if roi.size:
            m = np.zeros(roi.shape[:2], np.uint8)
            local = eye_poly - np.array([x0, y0])
            _poly(m, local, (255,))
            eye = roi.copy()
            eye[:] = sclera
            gaze = 0.03 * a * math.sin(ident.motion[5])
            _ellipse(eye, (ecx - x0 + gaze, ey - y0 + 0.1 * up), (0.085 * a, 0.085 * a), 0, ident.eye_color)
            _ellipse(eye, (ecx - x0 + gaze, ey - y0 + 0.1 * up), (0.04 * a, 0.04 * a), 0, (10, 10, 10))
            mf = m.astype(np.float32)[..., None] / 255.0
            roi[:] = (eye * mf + roi * (1 - mf)).astype(np.uint8)
        _line(img, top, (25, 20, 20), max(1.0, 0.045 * a))
        _line(img, bot, dark, 1)
        # lid crease
        crease = _bezier(
            (ecx - s * ew * 0.9, ey - 0.6 * up - 0.05 * a),
            (ecx, ey - 2 * up - 0.09 * a),
            (ecx + s * ew * 1.05, ey - 0.05 * a),
            7,
        )
        _line(img, crease, skin * 0.72, 1)
        # AU6 crow's feet
        if g("AU6", 0) > 0.3:
            for k in (-1, 0, 1):
                _line(
                    img,
                    [(ecx + s * (ew + 0.05 * a), ey + k * 0.05 * a), (ecx + s * (ew + 0.14 * a), ey + k * 0.08 * a)],
                    skin * (1 - 0.3 * g("AU6", 0)),
                    1,
                )
            # cheek bulge under the eye
            _line(
                img,
                _bezier(
                    (ecx - 0.8 * ew, ey + 2 * lo + 0.05 * a),
                    (ecx, ey + 2 * lo + 0.1 * a),
                    (ecx + 0.8 * ew, ey + 2 * lo + 0.05 * a),
                    7,
                ),
                skin * 0.8,
                1,
            )

    # --- brows
    for s in (-1, 1):
        one = 1.0 if s == side else 0.0
        au1 = g("AU1", 0)
        au2 = g("AU2", 0) + one * g("AU2_one", 0)
        au4 = g("AU4", 0) + one * g("AU4_one", 0)
        by = ey - 0.26 * a
        lower = 0.1 * a * au4
        inner_y = by - 0.22 * a * au1 + lower * 1.2 + 0.02 * a * head_up
        mid_y = by - 0.05 * a - 0.08 * a * au1 - 0.12 * a * au2 + lower * 0.8
        outer_y = by + 0.03 * a - 0.16 * a * au2 + lower * 0.4 + 0.05 * a * au1 * (1 - au2)
        inner_x = cx + s * (0.12 * a - 0.05 * a * au4)
        pts = _bezier((inner_x, inner_y), (cx + s * 0.36 * a, mid_y - 0.05 * a), (cx + s * 0.62 * a, outer_y), 9)
        col = np.minimum(ident.hair * (1 - ident.brow_dark) + skin * 0.25 * ident.brow_dark, skin * 0.4) * 0.75
        _line(img, pts, col, ident.brow_thick * a)
        _line(img, pts[:5], col, ident.brow_thick * a * 1.2)
        # forehead lines with raised brows
        if au1 + au2 > 1.0:
            k = min(1.0, (au1 + au2 - 1.0))
            for j in range(2):
                yy = by - (0.2 + 0.1 * j) * a
                _line(
                    img,
                    _bezier(
                        (cx + s * 0.08 * a, yy + 0.02 * a),
                        (cx + s * 0.3 * a, yy - 0.03 * a),
                        (cx + s * 0.55 * a, yy + 0.02 * a),
                        7,
                    ),
                    skin * (1 - 0.18 * k),
                    1,
                )
    au4_any = g("AU4", 0) + g("AU4_one", 0) * 0.5
    if au4_any > 0.35:
        k = min(1.0, au4_any)
        for s in (-1, 1):
            _line(
                img, [(cx + s * 0.04 * a, ey - 0.3 * a), (cx + s * 0.05 * a, ey - 0.14 * a)], skin * (1 - 0.25 * k), 1
            )

    # --- nose
    ny = cy + 0.3 * b - 0.04 * a * g("AU9", 0)
    nw = 0.16 * a * (1 + 0.15 * g("AU9", 0))
    for s in (-1, 1):
        _ellipse(img, (cx + s * 0.075 * a, ny), (0.04 * a, 0.022 * a), s * 15, skin * 0.35)
        _line(
            img,
            _bezier(
                (cx + s * 0.05 * a, ny - 0.12 * a), (cx + s * nw, ny - 0.04 * a), (cx + s * 0.1 * a, ny + 0.03 * a), 7
            ),
            skin * 0.7,
            1,
        )
    if g("AU9", 0) > 0.3:
        for j in range(3):
            yy = ey + 0.02 * a + j * 0.04 * a
            _line(img, [(cx - 0.06 * a, yy), (cx + 0.06 * a, yy - 0.01 * a)], skin * 0.7, 1)

    # --- mouth
    my = cy + ident.mouth_y * b
    au12 = g("AU12", 0)
    mw = (
        0.36
        * a
        * (1 + 0.25 * au12 + 0.25 * g("AU20", 0) - 0.12 * g("AU23", 0) - 0.08 * g("AU24", 0) + 0.05 * g("AU14_one", 0))
    )
    open_ = (
        0.01 * a
        + 0.4 * a * g("AU26", 0)
        + 0.05 * a * g("AU25", 0)
        + 0.13 * a * speech * (1 - 0.6 * g("AU24", 0) - 0.3 * g("AU23", 0))
    )
    open_ = max(0.0, open_ - 0.03 * a * g("AU24", 0))
    corner_base = -0.14 * a * au12 + 0.14 * a * g("AU15", 0) + 0.02 * a * g("AU20", 0) - 0.02 * a * g("AU17", 0)
    corners = {}
    for s in (-1, 1):
        one = 1.0 if s == side else 0.0
        dy = corner_base - one * (0.07 * a * g("AU14_one", 0) + 0.1 * a * g("AU12_one", 0))
        dx = one * (0.03 * a * g("AU12_one", 0) - 0.02 * a * g("AU14_one", 0))
        corners[s] = (cx + s * mw + s * dx, my + dy)
    lx, rx = corners[-1], corners[1]
    lip_u = 0.075 * a * (1 - 0.6 * g("AU24", 0) - 0.4 * g("AU23", 0) - 0.2 * au12)
    lip_l = 0.1 * a * (1 - 0.5 * g("AU24", 0) - 0.35 * g("AU23", 0) + 0.2 * g("AU17", 0))
    lip_u, lip_l = max(lip_u, 0.015 * a), max(lip_l, 0.02 * a)
    mid_top = my - open_ / 2
    mid_bot = my + open_ / 2 + 0.03 * a * g("AU17", 0) * 0
    # inner lips: upper inner edge and lower inner edge; corner pull bends the middle less
    smile_bend = 0.5 * (lx[1] + rx[1]) - my  # negative when corners go up
    inner_top = _bezier(lx, (cx, mid_top - smile_bend * 0.3), rx, 11)
    inner_bot = _bezier(rx, (cx, mid_bot - smile_bend * 1.2 + 0.5 * open_), lx, 11)
    outer_top = _bezier(lx, (cx, mid_top - 2 * lip_u - smile_bend * 0.3), rx, 11)
    outer_top[5, 1] += 0.3 * lip_u  # cupid's bow dip
    outer_bot = _bezier(rx, (cx, mid_bot + 2 * lip_l - smile_bend * 1.2 + 0.5 * open_), lx, 11)
    lip_col = np.clip(skin * (1 - 0.25 * ident.lip_tint) + np.array([60, -10, -5]) * ident.lip_tint, 0, 255) * 0.82
    _poly(img, np.concatenate([outer_top, outer_bot]), lip_col)
    if open_ > 0.03 * a:
        _poly(img, np.concatenate([inner_top, inner_bot]), (45, 20, 25))
        if open_ > 0.07 * a:
            teeth_top = inner_top.copy()
            teeth_bot = inner_top[::-1].copy()
            teeth_bot[:, 1] += min(open_ * 0.35, 0.06 * a)
            _poly(img, np.concatenate([teeth_top[2:-2], teeth_bot[2:-2]]), (230, 228, 220))
    _line(img, inner_top, (60, 25, 30), max(1.0, 0.025 * a))
    # nasolabial folds
    fold = 0.25 + 0.6 * au12 + 0.6 * g("AU9", 0) + 0.3 * ident.age
    if fold > 0.35:
        k = min(fold, 1.0)
        for s in (-1, 1):
            c = corners[s]
            _line(
                img,
                _bezier(
                    (cx + s * 0.17 * a, ny - 0.02 * a),
                    (cx + s * (mw + 0.12 * a), (ny + c[1]) / 2),
                    (c[0] + s * 0.06 * a, c[1] + 0.03 * a),
                    7,
                ),
                skin * (1 - 0.2 * k),
                1,
            )
    # dimple for AU14
    if g("AU14_one", 0) > 0.3:
        c = corners[side]
        _line(
            img, [(c[0] + side * 0.04 * a, c[1] - 0.04 * a), (c[0] + side * 0.05 * a, c[1] + 0.04 * a)], skin * 0.65, 1
        )
    # chin boss for AU17
    if g("AU17", 0) > 0.3:
        _line(
            img,
            _bezier((cx - 0.14 * a, my + 0.3 * a), (cx, my + 0.26 * a), (cx + 0.14 * a, my + 0.3 * a), 7),
            skin * 0.8,
            1,
        )

    # --- glasses
    if ident.glasses:
        gc = ident.glasses_color
        for s in (-1, 1):
            c = (cx + s * ex, ey)
            if ident.glasses == "round":
                _ellipse(img, c, (0.24 * a, 0.2 * a), 0, gc, max(1, int(0.03 * a)))
            else:
                pts = [
                    (c[0] - 0.25 * a, c[1] - 0.17 * a),
                    (c[0] + 0.25 * a, c[1] - 0.17 * a),
                    (c[0] + 0.23 * a, c[1] + 0.17 * a),
                    (c[0] - 0.23 * a, c[1] + 0.17 * a),
                ]
                cv2.polylines(img, [_pts(pts)], True, _col(gc), max(1, int(0.03 * a)), cv2.LINE_AA, _SHIFT)
            _line(
                img,
                [(c[0] + s * 0.24 * a, c[1] - 0.05 * a), (cx + s * 0.95 * a, c[1] - 0.02 * a)],
                gc,
                max(1, int(0.025 * a)),
            )
        _line(
            img,
            [(cx - ex + 0.24 * a, ey - 0.04 * a), (cx, ey - 0.07 * a), (cx + ex - 0.24 * a, ey - 0.04 * a)],
            gc,
            max(1, int(0.025 * a)),
        )


def draw_prop(img: np.ndarray, ident: Identity, prop: str, t: float) -> None:
    """A small object in front of the lower face or below it; the eyes stay visible."""
    cx, cy, a, b = ident.cx, ident.cy, ident.a, ident.b
    if prop == "mic":
        top = (cx + 0.1 * a, cy + 0.95 * b)
        _ellipse(img, top, (0.16 * a, 0.18 * a), 0, (40, 40, 45))
        _line(img, [top, (cx + 0.25 * a, SIZE + 5)], (20, 20, 22), max(2, int(0.1 * a)))
    elif prop == "mug":
        x0 = cx + ident.side * 0.55 * a
        y0 = cy + 0.85 * b
        _poly(
            img,
            [(x0 - 0.3 * a, y0), (x0 + 0.3 * a, y0), (x0 + 0.28 * a, y0 + 0.8 * a), (x0 - 0.28 * a, y0 + 0.8 * a)],
            (200, 60, 50),
        )
        _ellipse(
            img,
            (x0 + ident.side * 0.36 * a, y0 + 0.35 * a),
            (0.12 * a, 0.2 * a),
            0,
            (170, 50, 40),
            max(2, int(0.06 * a)),
        )
    else:  # a hand resting near the jaw
        x0 = cx + ident.side * 0.85 * a
        y0 = cy + 0.75 * b + 2 * math.sin(t * 1.3)
        _ellipse(img, (x0, y0), (0.28 * a, 0.42 * a), ident.side * 20, ident.skin * 0.95)
        for k in range(3):
            _line(
                img,
                [(x0 - 0.12 * a + 0.1 * a * k, y0 - 0.35 * a), (x0 - 0.1 * a + 0.1 * a * k, y0 - 0.05 * a)],
                ident.skin * 0.75,
                1,
            )


def draw_occluder(img: np.ndarray, ident: Identity, rng_state: float, t: float) -> None:
    """Something large in front of the face (a sheet of paper, a book, a tablet)."""
    cx, cy, a, b = ident.cx, ident.cy, ident.a, ident.b
    kind = int(rng_state * 3) % 3
    wob = 2 * math.sin(t * 2.0 + rng_state * 6)
    if kind == 0:  # paper
        _poly(
            img,
            [
                (cx - 1.15 * a, cy - 0.45 * b + wob),
                (cx + 1.15 * a, cy - 0.5 * b + wob),
                (cx + 1.2 * a, cy + 1.0 * b),
                (cx - 1.1 * a, cy + 1.05 * b),
            ],
            (238, 236, 228),
        )
        for k in range(6):
            yy = cy - 0.3 * b + k * 0.18 * b + wob
            _line(img, [(cx - 0.9 * a, yy), (cx + 0.7 * a, yy)], (120, 120, 130), 1)
    elif kind == 1:  # book
        _poly(
            img,
            [
                (cx - 1.1 * a, cy - 0.5 * b + wob),
                (cx + 1.1 * a, cy - 0.5 * b + wob),
                (cx + 1.1 * a, cy + 1.0 * b),
                (cx - 1.1 * a, cy + 1.0 * b),
            ],
            (60 + 150 * rng_state, 40, 90),
        )
        _line(img, [(cx, cy - 0.5 * b + wob), (cx, cy + 1.0 * b)], (20, 20, 20), 3)
    else:  # a tablet held up in front of the face
        x0, y0 = cx - 1.05 * a, cy - 0.55 * b + wob
        _poly(img, [(x0, y0), (x0 + 2.1 * a, y0), (x0 + 2.1 * a, cy + 1.0 * b), (x0, cy + 1.0 * b)], (25, 25, 30))
        _poly(
            img,
            [
                (x0 + 6, y0 + 6),
                (x0 + 2.1 * a - 6, y0 + 6),
                (x0 + 2.1 * a - 6, cy + 1.0 * b - 6),
                (x0 + 6, cy + 1.0 * b - 6),
            ],
            (60, 70, 90),
        )
        _poly(img, [(x0 + 10, y0 + 10), (x0 + 0.8 * a, y0 + 10), (x0 + 10, y0 + 0.9 * a)], (95, 105, 125))


# ----------------------------------------------------------------------------- clip


@dataclass
class FaceClip:
    frames: np.ndarray  # (N, S, S, 3) uint8 RGB, N = rendered frames
    face_box: tuple[int, int, int, int]  # approximate x, y, w, h of the face (first frame)


def render_clip(
    rng: np.random.Generator,
    ident: Identity,
    plan: FacePlan,
    times: np.ndarray,
    speech: np.ndarray,
    duration: float,
) -> FaceClip:
    """Render one frame per entry of ``times`` (seconds)."""
    bg = render_background(rng, ident)
    head = render_head_layer(ident, turned_away=plan.visibility == "turned_away")
    cx, cy, a, b = ident.cx, ident.cy, ident.a, ident.b
    # lighting: a smooth gain map and a colour cast, fixed for the clip
    gx = (_XX - SIZE / 2) / SIZE
    gy = (_YY - SIZE / 2) / SIZE
    gain = ident.light_gain * (1 + 0.25 * ident.light_x * gx + float(rng.uniform(-0.12, 0.12)) * gy)
    cast = np.array([1 + ident.warmth, 1.0, 1 - ident.warmth], np.float32)
    light = (gain[..., None] * cast[None, None, :]).astype(np.float32)
    blink_times = []
    if rng.random() < 0.7:
        blink_times.append(float(rng.uniform(0.3, max(0.4, duration - 0.3))))
    occ_state = float(rng.random())
    ph = ident.motion
    amp_x, amp_y, amp_r = rng.uniform(1.5, 5), rng.uniform(1, 3.5), rng.uniform(0.8, 3.5)
    frames = np.empty((len(times), SIZE, SIZE, 3), np.uint8)
    alpha3 = np.empty((SIZE, SIZE, 1), np.float32)
    for i, t in enumerate(times):
        e = envelope(plan, float(t), duration)
        au = {k: v * e for k, v in plan.apex.items()}
        blink = 0.0
        for bt in blink_times:
            if abs(t - bt) < 0.09:
                blink = 0.9
        layer = head.rgb.copy()
        if plan.visibility != "turned_away":
            draw_features(layer, ident, au, float(speech[i]), blink)
        ang = amp_r * math.sin(0.9 * t + ph[0]) + 0.6 * math.sin(2.3 * t + ph[1])
        dx = amp_x * math.sin(0.7 * t + ph[2]) + 0.8 * math.sin(3.1 * t + ph[3])
        dy = amp_y * math.sin(1.1 * t + ph[4]) - 4.0 * au.get("AU53", 0.0) + 0.6 * speech[i]
        sc = 1.0 + 0.015 * math.sin(0.5 * t + ph[6])
        m = cv2.getRotationMatrix2D((cx, cy + 0.6 * b), ang, sc)
        m[0, 2] += dx
        m[1, 2] += dy
        warped = cv2.warpAffine(layer, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        alpha = cv2.warpAffine(head.alpha, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        alpha3[..., 0] = alpha
        frame = bg.astype(np.float32)
        frame += (warped.astype(np.float32) - frame) * alpha3
        if plan.visibility == "occluded":
            tmp = np.clip(frame, 0, 255).astype(np.uint8)
            draw_occluder(tmp, ident, occ_state, float(t))
            frame = tmp.astype(np.float32)
        elif plan.prop:
            tmp = np.clip(frame, 0, 255).astype(np.uint8)
            draw_prop(tmp, ident, plan.prop, float(t))
            frame = tmp.astype(np.float32)
        frame *= light * (1 + 0.015 * math.sin(7.0 * t + ph[7]))
        np.clip(frame, 0, 255, out=frame)
        frames[i] = frame.astype(np.uint8)
    box = (int(cx - a), int(cy - 0.75 * b), int(2 * a), int(1.75 * b))
    return FaceClip(frames=frames, face_box=box)
