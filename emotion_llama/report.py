"""A shareable report: one self-contained HTML file, and its JSON beside it, for an analysis
or a timeline.

``write_report("out/clip", analysis, options)`` writes ``out/clip.html`` and
``out/clip.json`` (a ``.html`` or ``.json`` suffix on the path is dropped first). The HTML
holds everything it shows: pictures as ``data:`` URLs, charts as inline SVG, one ``<style>``,
no script and no external address, so it opens from disk, by e-mail or offline alike. Of the
video it carries only the frame the model read and its heatmap. Every text in it (labels,
subtitle, question, answer) is escaped: a visitor wrote them. The JSON is the same report as
data: the analysis's ``to_json()`` (or the timeline dict) plus ``provenance``: which weights
(their SHA-256), which code, which settings and limits, and when.
"""

from __future__ import annotations

import base64
import html
import json
import subprocess
from dataclasses import asdict
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__, limits
from .vocab import MODALITY, TEXT_SPANS

if TYPE_CHECKING:
    from .analysis import Analysis, AnalysisOptions

# The limits that shape what an analysis saw: how much of the clip, how large, how much text.
SHAPING_LIMITS = ("max_seconds", "max_frame_pixels", "max_subtitle_chars", "max_subtitle_tokens",
                  "max_question_chars", "max_question_tokens", "max_labels")
# One colour per label, in the label list's order (Tableau 10: tells ten lines apart).
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac")
PAGE_IMAGE_STYLE = "max-width:100%;max-height:260px;margin-top:26px"
REPORT_IMAGE_STYLE = "max-width:100%;max-height:320px;border-radius:6px"
esc = html.escape


# -- pictures inside a page ---------------------------------------------------------------
def inline_image(image: np.ndarray | None, alt: str, *, quality: int = 90, style: str = PAGE_IMAGE_STYLE) -> str:
    """An RGB array as an HTML ``<img>`` whose bytes travel inside the page (a ``data:`` URL):
    nothing of the visitor's clip is written to the server's disk or served by URL."""
    import cv2

    if image is None:
        return ""
    ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return ""
    source = "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")
    return f'<img src="{source}" alt="{esc(alt)}" style="{esc(style)}">'


# -- provenance -----------------------------------------------------------------------------
@lru_cache(maxsize=1)
def code_version() -> dict[str, str | None]:
    """The package version, and the git commit when the package runs from a checkout."""
    package = Path(__file__).resolve().parent
    commit = None
    try:
        done = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=False)
        lines = done.stdout.split()
        # Only this project's own checkout: not a git repository the package happens to be installed in.
        if done.returncode == 0 and len(lines) == 2 and Path(lines[0]).resolve() == package.parent:
            commit = lines[1]
    except (OSError, subprocess.SubprocessError):
        pass
    return {"version": __version__, "git_commit": commit}


def provenance(engine: dict[str, Any], options: AnalysisOptions | None, labels: list[str], *,
               task: str | None = None, created: datetime | None = None) -> dict[str, Any]:
    """Which model, code, settings and limits made a result, and when (UTC)."""
    settings: dict[str, Any] = {"task": task}
    if options is not None:
        settings = {key: value for key, value in asdict(options).items() if key != "labels"}
    settings["limits"] = {name: limits.get(name) for name in SHAPING_LIMITS}
    return {
        "model": engine.get("weights", "unknown"),
        "weights_sha256": engine.get("weights_sha256", "unknown"),
        "device": engine.get("device"),
        "dtype": engine.get("dtype"),
        "code": code_version(),
        "labels": list(labels),
        "settings": json.loads(json.dumps(settings, default=str)),  # tuples as lists, as in the JSON file
        "created": (created or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="seconds"),
    }


def analysis_record(analysis: Analysis, options: AnalysisOptions | None = None, *, clip: str | None = None,
                    created: datetime | None = None) -> dict[str, Any]:
    """The report as data (the JSON file): the analysis, the clip's name and the provenance."""
    return {"kind": "analysis", "clip": clip, "analysis": analysis.to_json(),
            "provenance": provenance(analysis.engine, options, list(analysis.probabilities), task=analysis.task,
                                     created=created)}


def timeline_record(timeline: dict[str, Any], options: AnalysisOptions | None = None, *,
                    engine: dict[str, Any] | None = None, clip: str | None = None,
                    created: datetime | None = None) -> dict[str, Any]:
    """The report of a timeline (``timeline.py``'s JSON dict) as data."""
    engine = engine or timeline.get("engine") or {}
    return {"kind": "timeline", "clip": clip, "timeline": timeline,
            "provenance": provenance(engine, options, list(timeline.get("labels", [])), task="timeline",
                                     created=created)}


# -- charts (inline SVG) ----------------------------------------------------------------------
def _short(text: str, length: int = 22) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def bar_chart(values: dict[str, float], title: str, highlight: str | None = None, width: int = 560) -> str:
    """Horizontal bars, largest first, each with its percentage; ``highlight`` is drawn darker."""
    rows = sorted(values.items(), key=lambda item: -item[1])
    label_w, value_w, row_h = 170, 56, 26
    bar_w = width - label_w - value_w
    height = row_h * len(rows) + 8
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>')]
    for index, (name, value) in enumerate(rows):
        y = 4 + index * row_h
        fill = "#2f5d8a" if name == highlight else "#9db7d0"
        parts.append(f'<g><title>{esc(name)}: {value:.1%}</title>'
                     f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">{esc(_short(name))}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="{row_h - 8}" fill="#eef2f6"/>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{max(value, 0) * bar_w:.1f}" height="{row_h - 8}" '
                     f'fill="{fill}"/><text x="{label_w + bar_w + 6}" y="{y + 17}">{value:.1%}</text></g>')
    return "".join(parts) + "</svg>"


def label_colours(labels: list[str]) -> dict[str, str]:
    return {label: PALETTE[index % len(PALETTE)] for index, label in enumerate(labels)}


def _time_ticks(duration: float) -> list[float]:
    """About six round tick times from 0 to ``duration`` seconds."""
    step = next((s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600) if duration / s <= 6), 1200)
    return [i * step for i in range(int(duration // step) + 1)]


def timeline_chart(segments: list[dict[str, Any]], labels: list[str], duration: float, width: int = 760) -> str:
    """One line per label (its probability at each segment's middle) over time, and below it
    a band coloured by each segment's label."""
    left, right, top, plot_h, band_h = 48, 16, 10, 200, 24
    plot_w, band_y = width - left - right, top + plot_h + 10
    height = band_y + band_h + 30
    duration = max(duration, max((s["end"] for s in segments), default=0.0), 1e-6)
    colours = label_colours(labels)

    def x(t: float) -> float:
        return left + plot_w * t / duration

    def y(p: float) -> float:
        return top + plot_h * (1 - p)

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="label probabilities over time">'
             "<title>label probabilities over time</title>")]
    for p in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(p):.1f}" y2="{y(p):.1f}" stroke="#e3e6ea"/>'
                     f'<text x="{left - 6}" y="{y(p) + 4:.1f}" text-anchor="end">{p:.0%}</text>')
    for t in _time_ticks(duration):
        parts.append(f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="middle">{t:g} s</text>')
    for label in labels:
        if len(segments) == 1:  # one segment: a level line across it
            points = [(segments[0]["start"], segments[0]["probabilities"].get(label, 0.0)),
                      (segments[0]["end"], segments[0]["probabilities"].get(label, 0.0))]
        else:
            points = [((s["start"] + s["end"]) / 2, s["probabilities"].get(label, 0.0)) for s in segments]
        path = " ".join(f"{x(t):.1f},{y(p):.1f}" for t, p in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colours[label]}" stroke-width="2">'
                     f"<title>{esc(label)}</title></polyline>")
    parts.extend(_band(segments, colours, x, band_y, band_h))
    return "".join(parts) + "</svg>"


def _band(segments: list[dict[str, Any]], colours: dict[str, str], x, band_y: int, band_h: int) -> list[str]:
    """The dominant label of each segment as a coloured strip, named where it is wide enough."""
    parts = []
    for segment in segments:
        x0, x1 = x(segment["start"]), x(segment["end"])
        label = segment["label"]
        parts.append(f'<g><title>{segment["start"]:g}–{segment["end"]:g} s: {esc(label)}</title>'
                     f'<rect x="{x0:.1f}" y="{band_y}" width="{max(x1 - x0, 1):.1f}" height="{band_h}" '
                     f'fill="{colours.get(label, "#888")}" stroke="#fff"/>')
        if x1 - x0 > 7 * len(label) + 8:
            parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{band_y + 16}" text-anchor="middle" '
                         f'class="band">{esc(label)}</text>')
        parts.append("</g>")
    return parts


def legend(labels: list[str]) -> str:
    """Each label's colour in the timeline chart; styled inline, so the page shows it as the report does."""
    colours = label_colours(labels)
    items = "".join(f'<span style="margin-right:14px;white-space:nowrap"><i style="display:inline-block;width:12px;'
                    f'height:12px;border-radius:2px;margin-right:5px;vertical-align:-1px;background:{colours[label]}">'
                    f"</i>{esc(label)}</span>" for label in labels)
    return f'<p style="font-size:13px">{items}</p>'


# -- the document ---------------------------------------------------------------------------
STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;max-width:980px;margin:0 auto;
padding:24px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dee4;
padding-bottom:4px}
.lead{font-size:20px;margin:6px 0}.lead b{font-size:28px}.muted{color:#59636e}
.pictures{display:flex;gap:18px;flex-wrap:wrap}.pictures figure{margin:0}
figcaption{color:#59636e;font-size:13px}
svg text{font:13px system-ui,sans-serif;fill:#1f2328}svg text.band{fill:#fff}
.answer{white-space:pre-wrap;background:#f6f8fa;border-radius:6px;padding:12px 14px;margin:0}
table{border-collapse:collapse;font-size:14px}th{white-space:nowrap}td,th{text-align:left;padding:4px 12px 4px 0;vertical-align:top;
border-bottom:1px solid #eef0f2}
code{font:13px ui-monospace,monospace;word-break:break-all}
.warnings li{color:#9a3412}
"""
# Nothing but this file and its own data: URLs may load, and nothing may run.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _document(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(part for part in body if part) + "\n</body></html>\n")


def _section(title: str, *content: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{''.join(content)}</section>"


def _rows(rows: list[tuple[str, str]]) -> str:
    """A two-column table; the cells are HTML the caller escaped."""
    return "<table>" + "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows) + "</table>"


def _pictures(frame: np.ndarray | None, overlay: np.ndarray | None, frame_time: float | None) -> str:
    at = f" at {frame_time:.2f} s" if frame_time is not None else ""
    figures = [f"<figure>{inline_image(image, alt, style=REPORT_IMAGE_STYLE)}<figcaption>{esc(caption)}</figcaption>"
               "</figure>"
               for image, alt, caption in ((frame, "the frame the model read", f"The frame the model read{at}"),
                                           (overlay, "where the answer looked in the frame",
                                            "Where the answer looked (attention heatmap)"))
               if image is not None]
    return _section("Frame", f'<div class="pictures">{"".join(figures)}</div>') if figures else ""


def _warnings(warnings: list[str]) -> str:
    if not warnings:
        return _section("Warnings", "<p>None.</p>")
    return _section("Warnings", '<ul class="warnings">' + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>")


def _subtitle(subtitle: dict[str, Any] | str | None, source: str | None = None) -> str:
    if not isinstance(subtitle, dict):
        subtitle = {"text": subtitle, "source": source or "none", "note": None}
    text = f"“{esc(subtitle['text'])}”" if subtitle.get("text") else "None."
    note = f'<p class="muted">{esc(subtitle["note"])}</p>' if subtitle.get("note") else ""
    return _section("Subtitle", f"<p>{text}</p><p class=\"muted\">Source: <code>{esc(str(subtitle['source']))}"
                                f"</code></p>{note}")


def _inputs(present: dict[str, bool], filled: dict[str, str]) -> str:
    rows = []
    for name, used in present.items():
        shown = MODALITY[name].display if name in MODALITY else name
        how = "used" if used else f"not used ({filled.get(name, 'absent')})"
        rows.append((esc(shown), esc(how)))
    return _section("Inputs", _rows(rows))


def _provenance(record: dict[str, Any]) -> str:
    facts = record["provenance"]
    code = facts["code"]
    rows = [("Model", esc(str(facts["model"]))), ("Weights SHA-256", f"<code>{esc(str(facts['weights_sha256']))}</code>"),
            ("Code", esc(f"emotion_llama {code['version']}") + (f", commit <code>{esc(code['git_commit'])}</code>"
                                                                 if code.get("git_commit") else "")),
            ("Device", esc(f"{facts.get('device')}, {facts.get('dtype')}")),
            ("Labels", esc(", ".join(facts["labels"]))),
            *((esc(name), f"<code>{esc(json.dumps(value, ensure_ascii=False))}</code>")
              for name, value in facts["settings"].items()),
            ("Created (UTC)", esc(facts["created"]))]
    return _section("Provenance", _rows(rows))


def _answer(data: dict[str, Any], question: str | None) -> str:
    asked = f'<p class="muted">Question: {esc(question)}</p>' if question else ""
    check = data.get("reasoning_check")
    verdict = ""
    if check and check.get("argued"):
        agrees = "agrees with" if check["agrees"] else "does not agree with"
        verdict = (f'<p class="muted">The reasoning argues for {esc(check["argued"])}, which {agrees} the label '
                   f'{esc(check["label"])} ({check["drafts"]} draft{"s" if check["drafts"] != 1 else ""}).</p>')
    answer = esc(data["answer"]) if data.get("answer") else "(no answer)"
    title = "Reasoning" if data["task"] == "reason" else "Answer"
    return _section(f"{title} (task: {data['task']})", asked, f'<p class="answer">{answer}</p>', verdict)


def analysis_html(record: dict[str, Any], frame: np.ndarray | None = None, overlay: np.ndarray | None = None) -> str:
    """The page of an analysis report, from its record and the two pictures."""
    data = record["analysis"]
    label, probabilities = data["label"], data["probabilities"]
    clip = record.get("clip")
    attention = {TEXT_SPANS.get(name, name): share for name, share in (data.get("modality_attention") or {}).items()}
    body = [
        f"<h1>Emotion-LLaMA report{': ' + esc(clip) if clip else ''}</h1>",
        f'<p class="lead">Label: <b>{esc(label)}</b> ({probabilities[label]:.1%})</p>',
        _pictures(frame, overlay, data.get("frame_time")),
        _section("Probability of each label", bar_chart(probabilities, "probability of each label", label)),
        _section("Share of the answer's attention per input",
                 bar_chart(attention, "share of the answer's attention per input")) if attention else "",
        _answer(data, record["provenance"]["settings"].get("question")),
        _subtitle(data["subtitle"]),
        _inputs(data["modalities_present"], data["filled_modalities"]),
        _warnings(data["warnings"]),
        _provenance(record),
    ]
    return _document(f"Emotion-LLaMA report: {label}" + (f" ({clip})" if clip else ""), body)


def _segment_rows(segments: list[dict[str, Any]]) -> str:
    head = "<tr><th>from</th><th>to</th><th>label</th><th>probability</th><th>subtitle</th></tr>"
    rows = "".join(f"<tr><td>{s['start']:.2f} s</td><td>{s['end']:.2f} s</td><td>{esc(s['label'])}</td>"
                   f"<td>{s['probabilities'].get(s['label'], 0.0):.0%}</td>"
                   f"<td>{esc(_subtitle_text(s.get('subtitle')))}</td></tr>" for s in segments)
    return f"<table>{head}{rows}</table>"


def _subtitle_text(subtitle: dict[str, Any] | str | None) -> str:
    return (subtitle.get("text") if isinstance(subtitle, dict) else subtitle) or ""


def timeline_html(record: dict[str, Any], frame: np.ndarray | None = None) -> str:
    """The page of a timeline report: the probability lines, the dominant label band, the segments."""
    timeline = record["timeline"]
    segments, labels = timeline.get("segments", []), list(timeline.get("labels", []))
    duration = float(timeline.get("duration") or max((s["end"] for s in segments), default=0.0))
    time_per_label: dict[str, float] = {}
    for segment in segments:
        time_per_label[segment["label"]] = time_per_label.get(segment["label"], 0.0) + segment["end"] - segment["start"]
    most = max(time_per_label, key=time_per_label.get) if time_per_label else None
    clip = record.get("clip")
    body = [
        f"<h1>Emotion-LLaMA timeline{': ' + esc(clip) if clip else ''}</h1>",
        (f'<p class="lead">Most of the time: <b>{esc(most or "no segment")}</b> '
        f'<span class="muted">({len(segments)} segments over {duration:.1f} s)</span></p>'),
        _pictures(frame, None, None),
        _section("Probability of each label over time", timeline_chart(segments, labels, duration), legend(labels))
        if segments else "",
        _section("Segments", _segment_rows(segments)),
        _warnings(list(timeline.get("warnings", []))),
        _provenance(record),
    ]
    return _document("Emotion-LLaMA timeline" + (f" ({clip})" if clip else ""), body)


# -- the API -----------------------------------------------------------------------------------
def render_report(analysis: Analysis, options: AnalysisOptions | None = None, *, clip: str | None = None,
                  created: datetime | None = None) -> str:
    """One self-contained HTML page for ``analysis``; ``options`` are the settings it was made
    with (recorded in the provenance), ``clip`` the name to show (never a copy of the video)."""
    return analysis_html(analysis_record(analysis, options, clip=clip, created=created), analysis.frame,
                         analysis.overlay())


def render_timeline_report(timeline: dict[str, Any], options: AnalysisOptions | None = None, *,
                           engine: dict[str, Any] | None = None, clip: str | None = None,
                           frame: np.ndarray | None = None, created: datetime | None = None) -> str:
    """One self-contained HTML page for a timeline dict (``timeline.py``'s JSON)."""
    return timeline_html(timeline_record(timeline, options, engine=engine, clip=clip, created=created), frame)


def report_paths(path: str | Path) -> tuple[Path, Path]:
    """``FILE`` or ``FILE.html`` or ``FILE.json`` -> (``FILE.html``, ``FILE.json``)."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() in (".html", ".htm", ".json") else path
    return stem.with_name(stem.name + ".html"), stem.with_name(stem.name + ".json")


def write_report(path: str | Path, subject: Analysis | dict[str, Any], options: AnalysisOptions | None = None, *,
                 clip: str | None = None, engine: dict[str, Any] | None = None, frame: np.ndarray | None = None,
                 created: datetime | None = None) -> tuple[Path, Path]:
    """Write ``FILE.html`` and ``FILE.json`` for an analysis or a timeline dict; returns both paths.
    The two carry the same provenance (one date)."""
    html_path, json_path = report_paths(path)
    if isinstance(subject, dict):
        record = timeline_record(subject, options, engine=engine, clip=clip, created=created)
        page = timeline_html(record, frame)
    else:
        record = analysis_record(subject, options, clip=clip, created=created)
        page = analysis_html(record, subject.frame, subject.overlay())
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(page, encoding="utf-8")
    json_path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return html_path, json_path
