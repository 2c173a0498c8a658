"""Renderers: an ``Analysis`` and the engine's facts -> what the page shows.

Plain Python that tests call without a browser; nothing here knows the model's internals.
"""

from __future__ import annotations

from html import escape

import numpy as np

from ..config import WeightSources
from ..report import inline_image
from ..vocab import MODALITIES, MODALITY, TEXT_SPANS

MODALITY_NAMES = {m: MODALITY[m].display for m in MODALITIES}
# Short names for the attention chart's axis, in the order of the prompt.
ATTENTION_NAMES = {**{MODALITY[m].display: MODALITY[m].short for m in MODALITIES}, **TEXT_SPANS}


# -- rendering -------------------------------------------------------------------------------
def engine_banner(info: dict[str, str]) -> str:
    """Markdown saying which weights answer, what they can do, and how to load the official ones."""
    weights = info.get("weights", "unknown")
    where = f"device `{info.get('device', '?')}`, dtype `{info.get('dtype', '?')}`"
    env = ", ".join(f"`{var}`" for var in WeightSources.ENV.values())
    how = (
        "To load the published model, set `EMOTION_LLAMA_WEIGHTS=official` on a machine with a GPU "
        f"(about 16 GB of memory), point {env} at local copies or Hub ids if the defaults do not suit, "
        "and set `HF_TOKEN` to a token that may read the gated LLaMA-2 repository."
    )
    if weights == "official":
        return (
            f"**Model: Emotion-LLaMA, official weights** ({where}). LLaMA-2-7B-chat with the published "
            "Emotion-LLaMA adapters and LoRA; EVA ViT-g, MAE, VideoMAE and HuBERT encoders."
        )
    if info.get("warning"):
        return (
            f"**Model: tiny Emotion-LLaMA with untrained, random weights** ({where}). "
            "Its labels and answers are noise: this page only shows how the pipeline works "
            f"(decoding, face crops, attention, streaming). {how}"
        )
    return (
        f"**Model: tiny Emotion-LLaMA ({weights})** ({where}). A few-million-parameter copy of the "
        "architecture, trained in this repository on synthetic clips of drawn faces and synthesised voices "
        "(see docs/model_card.md). It reads the cues of that corpus, as in the examples below; on real "
        f"people its labels and explanations mean nothing. {how}"
    )


_RESPONSIBLE_USE = """\
**Responsible use.** A face and a voice show expressions, not feelings: the same smile can be
joy, politeness or discomfort, and people and cultures express and read emotion differently.
This model was trained on narrow data (acted and TV clips, mostly Chinese and English speakers;
the tiny model only on synthetic clips), so its label is a guess with a probability, never a
finding about a person. Do not use it to judge, screen or monitor anyone, and only analyse
clips of people who have agreed to it. The uploaded file is deleted when the request that uses it
finishes (one you replace unused, at once; one never analysed, within {unused_upload}; a video
made into a timeline, {ttl} after your last request about it); what was decoded from it stays
only in this server's memory, for {ttl} after its last use, so that a re-analysis or a chat turn
needs no new upload. Pictures are sent inside the page, never stored as files. Nothing is logged.
"""


def responsible_use(unused_upload_s: float, ttl_s: float) -> str:
    """The page's note on use and on what happens to an upload, with the limits in force."""
    return _RESPONSIBLE_USE.format(unused_upload=duration_in_words(unused_upload_s), ttl=duration_in_words(ttl_s))


def duration_in_words(seconds: float) -> str:
    return f"{seconds:g} seconds" if seconds < 120 else f"{seconds / 60:g} minutes"


def probability_label(probabilities: dict[str, float]) -> dict[str, float]:
    """For ``gr.Label``: every candidate with its probability, best first."""
    return dict(sorted(probabilities.items(), key=lambda item: -item[1]))


def attention_table(modality_attention: dict[str, float]):
    """For ``gr.BarPlot``: share of the answer's attention per modality, in percent."""
    import pandas as pd

    order = list(ATTENTION_NAMES)
    ranked = sorted(modality_attention.items(), key=lambda item: order.index(item[0]) if item[0] in order else 99)
    rows = [(ATTENTION_NAMES.get(name, name), round(100 * share, 1)) for name, share in ranked]
    return pd.DataFrame(rows, columns=["modality", "attention %"])


def face_strip(crops: np.ndarray | None, peak_index: int | None, size: int = 96) -> np.ndarray | None:
    """The face crops side by side; the peak frame has a thick orange frame and a 'peak' tag."""
    import cv2

    if crops is None or len(crops) == 0:
        return None
    border, gap = 5, 4
    cell = size + 2 * border
    strip = np.full((cell + 18, len(crops) * (cell + gap) - gap, 3), 255, np.uint8)
    for index, crop in enumerate(crops):
        x = index * (cell + gap)
        is_peak = index == peak_index
        colour = (240, 120, 0) if is_peak else (200, 200, 200)
        strip[:cell, x : x + cell] = colour
        strip[border : border + size, x + border : x + border + size] = cv2.resize(
            np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA
        )
        text = "peak" if is_peak else str(index + 1)
        cv2.putText(strip, text, (x + 4, cell + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour if is_peak else (90, 90, 90), 1, cv2.LINE_AA)
    return strip


NO_FACE_CAPTION = ("No face was found, so these are crops of the centre of the frame; "
                   "both face encoders were left out.")


def faces_html(crops: np.ndarray | None, peak_index: int | None, face_found: bool) -> str:
    """The face strip as an image, with a caption when no face was found: the crops are then
    the centre of the frame and not a face the model read."""
    image = inline_image(face_strip(crops, peak_index), "the face crops, the peak frame framed in orange")
    if face_found or not image:
        return image
    return f"{image}<p><em>{escape(NO_FACE_CAPTION)}</em></p>"


def subtitle_markdown(text: str | None, source: str, left_out: bool = False, note: str | None = None) -> str:
    """Where the subtitle came from; ``note`` (``Subtitle.note``) says why there is none,
    e.g. that Whisper's checkpoint is missing, or that Whisper translated it."""
    if source == "user":
        where = "typed by you"
    elif source.startswith("sidecar:"):
        where = f"read from the subtitle file {source.removeprefix('sidecar:')}"
    elif source.startswith("whisper:"):
        where = f"transcribed by Whisper ({source.removeprefix('whisper:')})"
    else:
        where = "none found"
    if not text:
        if note:  # e.g. "No subtitle: none was typed, and the Whisper model is not in ..."
            reason = note.removeprefix("No subtitle: ")
            return f"**Subtitle:** none. {reason[:1].upper()}{reason[1:]}"
        return "**Subtitle:** none (none typed, no subtitle file, no speech recognised)."
    extra = f" {note}" if note else ""
    extra += " It was left out of the prompt." if left_out else ""
    return f"**Subtitle** ({where}): “{text}”{extra}"


def warnings_markdown(warnings: list[str]) -> str:
    if not warnings:
        return "**Warnings:** none."
    return "**Warnings:**\n\n" + "\n".join(f"- {warning}" for warning in warnings)


def modalities_markdown(present: dict[str, bool], filled: dict[str, str], frame_time: float) -> str:
    used = [MODALITY_NAMES.get(name, name) for name, ok in present.items() if ok]
    lines = [f"**Inputs used:** {', '.join(used) or 'none'}; the global frame is at {frame_time:.2f} s."]
    missing = [f"{MODALITY_NAMES.get(name, name)} ({how})" for name, how in filled.items()
               if name != "subtitle"]
    if missing:
        lines.append(f"**Not used:** {', '.join(missing)}.")
    return "\n\n".join(lines)


def face_markdown(note: str | None) -> str:
    """The face coverage in words, e.g. "face seen in 15 of 16 sampled frames"."""
    return f"\n\n**Face:** {note}." if note else ""


def timings_markdown(timings: dict[str, float]) -> str:
    rows = "\n".join(f"| {stage.replace('_', ' ')} | {seconds:.3f} |" for stage, seconds in timings.items())
    return f"| stage | seconds |\n|---|---:|\n{rows}"


# -- people and the report -----------------------------------------------------------------------
def person_name(index: int) -> str:
    """How the page names person ``index`` (0-based in the library, from 1 on the page)."""
    return f"Person {index + 1}"


NOBODY_PICKED = [(person_name(0), 0)]  # the picker's choices before an analysis: 0 is always valid


def person_choices(people: list) -> list[tuple[str, int]]:
    """The picker's choices: each person's name and how often they were seen; values are indices."""
    return [(f"{person_name(p.index)} (seen in {p.frames_seen} of {p.frames_sampled} frames)", p.index)
            for p in people] or NOBODY_PICKED


def people_strip(people: list, chosen: int) -> str:
    """Every person's thumbnail, named as in the picker; the one analysed is outlined."""
    if len(people) < 2:
        return ""
    cells = []
    for person in people:
        border = "3px solid #f97316" if person.index == chosen else "3px solid transparent"
        image = inline_image(person.thumbnail, person_name(person.index), style=f"width:72px;border:{border}")
        cells.append(f'<figure style="display:inline-block;margin:0 8px 0 0;text-align:center">{image}'
                     f"<figcaption>{person_name(person.index)}</figcaption></figure>")
    return "".join(cells)


def report_link(page: str, name: str = "emotion-llama-report.html") -> str:
    """A download link whose file travels inside the page (a ``data:`` URL): the report, which
    holds a frame of the visitor's clip, is never written to the server's disk."""
    import base64

    payload = base64.b64encode(page.encode("utf-8")).decode("ascii")
    return (f'<a href="data:text/html;base64,{payload}" download="{name}" id="report-link" '
            'style="display:inline-block;padding:6px 14px;border-radius:6px;background:#2563eb;color:white;'
            'text-decoration:none">Download the report (HTML, opens offline)</a>')


# -- the timeline ------------------------------------------------------------------------------------
def segment_name(segment) -> str:
    """How the picker names a timeline segment: its number, times, label and that label's probability."""
    return (f"{segment.index + 1}. {segment.start:.1f}-{segment.end:.1f} s: {segment.label} "
            f"({segment.probabilities[segment.label]:.0%})")


def timeline_panel(timeline: dict) -> str:
    """The timeline's chart (each label's probability over time, the top label as a band) and its key."""
    from ..report import legend, timeline_chart

    chart = timeline_chart(timeline["segments"], timeline["labels"], timeline["duration"])
    return f'<div style="overflow-x:auto">{chart}</div>{legend(timeline["labels"])}'


def timeline_summary(timeline: dict) -> str:
    """How the video was cut, how long each label leads, and the warnings."""
    seconds = sorted(((s, label) for label, s in timeline["label_seconds"].items() if s > 0), reverse=True)
    leading = ", ".join(f"**{escape(label)}** {s:.1f} s" for s, label in seconds) or "none"
    count = len(timeline["segments"])
    text = (f"**{count} segment{'s' if count != 1 else ''}** over {timeline['duration']:.1f} s "
            f"(cut by {timeline['segmentation']}). Seconds each label leads: {leading}.")
    return text + ("\n\n" + warnings_markdown(timeline["warnings"]) if timeline["warnings"] else "")


# -- who can reach the page ------------------------------------------------------------------------
LOOPBACK = {None, "", "127.0.0.1", "localhost", "::1"}


def reach_note(share: bool, host: str | None, signed_in: bool) -> str | None:
    """A plain sentence when the page is reachable from outside this machine; None when it is not."""
    ways = [*(["through a public Gradio share link"] if share else []),
            *([f"on every address of this machine ({host})"] if host not in LOOPBACK else [])]
    if not ways:
        return None
    who = "anyone who signs in with a login you gave" if signed_in else "anyone who has the address, with no login"
    return f"**Reachable from outside this machine** {' and '.join(ways)}: {who} can use it."
