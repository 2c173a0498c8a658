"""Emotion-LLaMA web demo: layout and wiring of a Gradio page over ``emotion_llama``.

Run ``python app.py`` (``--port`` or ``GRADIO_SERVER_PORT`` to move it). The engine is
loaded once at start-up. Handlers, rendering and upload hygiene live in
``emotion_llama.ui``; this file only places components and connects events.
"""

from __future__ import annotations

try:  # Hugging Face ZeroGPU: imported before torch initialises CUDA (a no-op elsewhere).
    import spaces  # noqa: F401
except ImportError:
    pass

import argparse
import functools
import json
import logging
import os
from pathlib import Path

import gradio as gr

from emotion_llama import limits
from emotion_llama.pipeline import Engine, load_engine
from emotion_llama.text_limits import max_label_list_chars
from emotion_llama.ui import forms, handlers, render, sharing, timelines
from emotion_llama.ui.handlers import GENERIC_FAILURE, AnalysisView, Demo
from emotion_llama.ui.sessions import Janitor
from emotion_llama.ui.sharing import Fairness
from emotion_llama.ui.uploads import UploadStore
from emotion_llama.vocab import ANSWER_TOKENS, DEFAULT_FRAME, DEFAULT_LABEL_SET, MAX_ANSWER_TOKENS, TAGGED_TASKS

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


def _examples() -> list[dict]:
    """The example clips (``examples/examples.json``) whose files are present."""
    manifest = EXAMPLES_DIR / "examples.json"
    entries = json.loads(manifest.read_text()) if manifest.is_file() else []
    return [e for e in entries if (EXAMPLES_DIR / e["clip"]).is_file()]


EXAMPLES = _examples()
MAX_UPLOAD_MB = limits.get("max_upload_mb")
# One budget for every event that runs the model (Gradio counts concurrency per event
# unless events share a concurrency id).
CONCURRENCY = limits.get("concurrency")
MODEL_EVENTS = {"concurrency_id": "model", "concurrency_limit": CONCURRENCY}
MAX_SECONDS = limits.get("max_seconds")
SWEEP_S = 60  # how often unused uploads, conversations and decoded clips are looked at (at most)
__all__ = ["GENERIC_FAILURE", "build_demo", "launch", "main"]
log = logging.getLogger("emotion_llama.app")


def bind(handler, demo: Demo):
    """``handler`` with the demo filled in, named as itself (Gradio reads the signature).
    Handlers run in the server; their model work borrows the GPU (``ui/gpu.py``)."""
    bound = functools.partial(handler, demo)
    bound.__name__ = handler.__name__
    return bound


def build_demo(engine: Engine, reach: str | None = None) -> gr.Blocks:
    """The page; ``reach`` says who can open it when that is more than this machine (``render.reach_note``)."""
    state = Demo(engine, UploadStore(gr.utils.get_upload_folder(), keep=[EXAMPLES_DIR / e["clip"] for e in EXAMPLES]))
    unused_upload_s = limits.get("unused_upload_s")
    sweep_s = max(1, int(min(SWEEP_S, unused_upload_s, state.conversations.ttl)))
    with gr.Blocks(title="Emotion-LLaMA", delete_cache=(sweep_s, int(unused_upload_s))) as page:
        gr.Markdown("# Emotion-LLaMA: emotion recognition and reasoning from video")
        gr.Markdown(render.engine_banner(engine.info), elem_id="engine-banner")
        if reach:
            gr.Markdown(reach, elem_id="reach")
        with gr.Row():
            with gr.Column(scale=5):
                form = input_column()
            with gr.Column(scale=7), gr.Tabs():
                with gr.Tab("Analysis"):
                    outputs = analysis_tab()
                with gr.Tab("Chat", elem_id="chat-tab"):
                    chat = chat_tab()
                with gr.Tab("Timeline", elem_id="timeline-tab"):
                    timeline = timeline_tab()
        gr.Examples(
            [[str(EXAMPLES_DIR / e["clip"]), e["subtitle"], e["task"], e["question"]] for e in EXAMPLES],
            inputs=[form["video"], form["subtitle"], form["task"], form["question"]],
            label="Examples (synthetic clips made for this demo: drawn faces, synthesised voices)",
        )
        gr.Markdown(render.responsible_use(unused_upload_s + sweep_s, state.conversations.ttl),
                    elem_id="responsible-use")
        wire(state, form, outputs, chat, api_inputs())
        wire_timeline(state, form, timeline)
    page.queue(default_concurrency_limit=CONCURRENCY, max_size=limits.get("queue_size"))
    Fairness(health=state.health).install(page)
    page.health_report = lambda: state.health.report(len(page._queue))  # served at /health by ``launch``
    Janitor([state.conversations.sweep, engine.cache.sweep, state.store.sweep], every=sweep_s).start()
    return page


def input_column() -> dict[str, gr.components.Component]:
    video = gr.Video(sources=["upload", "webcam"], label="Video clip", elem_id="video-input")
    gr.Markdown(f"Clips up to {MAX_SECONDS:.0f} s and {MAX_UPLOAD_MB} MB. The file is deleted "
                "when each request finishes.")
    form = {
        "video": video,
        "subtitle": gr.Textbox(label="What the person says (optional)", lines=2, elem_id="subtitle",
                               max_length=limits.get("max_subtitle_chars"),
                               placeholder="Leave empty to use a subtitle file next to the clip, "
                                           "speech recognition if installed, or no subtitle."),
        "person": gr.Radio(render.NOBODY_PICKED, value=0, label="Whose emotion to read (the clip shows several people; Analyze again)",
                           visible=False, elem_id="person"),
        "people": gr.HTML(elem_id="people"),
        "task": gr.Radio(forms.TASK_CHOICES, value="reason", label="Task"),
        "question": gr.Textbox(label="Your question", visible=False, elem_id="question",
                               max_length=limits.get("max_question_chars")),
        "label_set": gr.Radio(forms.LABEL_SET_CHOICES, value=DEFAULT_LABEL_SET, label="Candidate emotions"),
        "custom_labels": gr.Textbox(label="Your labels, separated by commas", visible=False,
                                    max_length=max_label_list_chars(),
                                    placeholder="calm, tense, joyful"),
    }
    with gr.Accordion("Advanced", open=False):
        form["temperature"] = gr.Slider(0.0, 1.5, value=0.0, step=0.05,
                                        label="Temperature (0 = always the most likely word)")
        form["max_new_tokens"] = gr.Slider(1, MAX_ANSWER_TOKENS // 2, value=ANSWER_TOKENS, step=1,
                                           label="Max new tokens", elem_id="max-new-tokens")
        form["frame_choice"] = gr.Radio(forms.FRAME_CHOICE_LIST, value=DEFAULT_FRAME,
                                        label="Frame for the global encoder")
        form["leave_out"] = gr.CheckboxGroup(forms.LEAVE_OUT_CHOICES, value=[], label="Leave out")
        form["demo_parity"] = gr.Checkbox(
            value=False, label="Reference demo layout (first frame, no face features, its prompt)")
    form["analyze"] = gr.Button("Analyze", variant="primary", elem_id="analyze-button")
    return form


def analysis_tab() -> dict[str, gr.components.Component]:
    out = {
        "label": gr.Label(label="Emotion and the probability of every candidate", elem_id="probabilities",
                          show_label=True),
        "answer": gr.Textbox(label="Answer", lines=5, elem_id="answer", buttons=["copy"]),
    }
    with gr.Row():
        out["attention"] = gr.BarPlot(x="modality", y="attention %", elem_id="attention",
                                      label="Share of the answer's attention per input", y_lim=[0, 100],
                                      height=240, x_label_angle=-30, sort=list(render.ATTENTION_NAMES.values()))
        # Pictures travel inside the page (data: URLs), so none is written to Gradio's cache.
        out["overlay"] = gr.HTML(label="Where the answer looked in the frame", elem_id="overlay", show_label=True,
                                 container=True)
    out["faces"] = gr.HTML(label="Face crops (the peak frame is framed in orange)", elem_id="faces", show_label=True,
                               container=True)
    out["report"] = gr.HTML(elem_id="report")
    out["subtitle_used"] = gr.Markdown(elem_id="subtitle-used")
    out["notes"] = gr.Markdown(elem_id="notes")
    with gr.Accordion("Time per stage and full result (JSON)", open=False):
        out["timings"] = gr.Markdown(elem_id="timings")
        out["result_json"] = gr.JSON(label="Result")
    return out


def chat_tab() -> dict[str, gr.components.Component]:
    chat = {"chatbot": gr.Chatbot(label="Chat about this clip", height=380, elem_id="chatbot")}
    with gr.Row():
        chat["ask"] = {tag: gr.Button(f"[{tag}]", size="sm", elem_id=f"ask-{tag}") for tag in TAGGED_TASKS}
    with gr.Row():
        chat["message"] = gr.Textbox(placeholder="Ask anything about the clip", show_label=False, scale=5,
                                     elem_id="chat-message")
        chat["send"] = gr.Button("Send", scale=1, elem_id="chat-send")
        chat["reset"] = gr.Button("Reset", scale=1, elem_id="chat-reset")
    chat["session"] = gr.State(None)
    return chat


def timeline_tab() -> dict[str, gr.components.Component]:
    gr.Markdown(f"The emotion over the whole video (up to {limits.get('max_timeline_seconds') / 60:g} minutes), "
                "segment by segment: speech turns, or 4-s windows where nobody speaks. Each segment's label is "
                "scored, not written, so this stays quick; open a segment to see where the model looked and, "
                "on request, its reasoning. The video is kept until "
                f"{render.duration_in_words(limits.get('session_ttl_s'))} after your last request about it.")
    tab = {"build": gr.Button("Build the emotion timeline", variant="primary", elem_id="timeline-button"),
           "chart": gr.HTML(elem_id="timeline-chart"), "summary": gr.Markdown(elem_id="timeline-summary"),
           "segment": gr.Dropdown([], label="Segment", visible=False, elem_id="segment")}
    with gr.Row():
        tab["show"] = gr.Button("Show this segment", elem_id="segment-show")
        tab["explain"] = gr.Button("Explain this segment", elem_id="segment-explain")
    with gr.Row():
        tab["overlay"] = gr.HTML(label="Where the model looked", elem_id="segment-overlay")
        tab["label"] = gr.Label(label="The segment's emotion", elem_id="segment-label")
    tab["answer"] = gr.Textbox(label="Answer", lines=3, elem_id="segment-answer")
    tab["report"] = gr.HTML(elem_id="timeline-report")
    tab["state"] = gr.State(None)
    return tab


def wire_timeline(demo: Demo, form: dict, tab: dict) -> None:
    settings = [form[name] for name in ("video", "label_set", "custom_labels", "frame_choice", "leave_out",
                                        "demo_parity", "person")]
    tab["build"].click(bind(timelines.build, demo), settings,
                       [tab[name] for name in timelines.TimelineView.names()], api_name="timeline_stream",
                       api_visibility="private", **MODEL_EVENTS)
    for button, task in ((tab["show"], "emotion"), (tab["explain"], "reason")):
        button.click(bind(timelines.open_segment, demo), [tab["state"], tab["segment"], gr.State(task),
                                                          form["temperature"], form["max_new_tokens"]],
                     [tab["overlay"], tab["label"], tab["answer"]], api_visibility="private", **MODEL_EVENTS)
    api = gr.Button(visible=False)
    api.click(bind(timelines.timeline_api, demo), [form["video"], form["label_set"], form["custom_labels"],
                                                   gr.Number(visible=False, value=None)],
              gr.JSON(visible=False), api_name="timeline", **MODEL_EVENTS)


def api_inputs() -> dict[str, gr.components.Component]:
    """Inputs and outputs only an API client sees."""
    with gr.Column(visible=False):
        return {"task": gr.Textbox(value="free"), "reply": gr.Textbox(), "result": gr.JSON(),
                "person": gr.Number(value=None, precision=0),
                "state": gr.State(None), "analyze": gr.Button(), "chat": gr.Button()}


def wire(demo: Demo, form: dict, outputs: dict, chat: dict, api: dict) -> None:
    private = {"api_visibility": "private"}
    form["task"].change(lambda t: gr.update(visible=t == "free"), form["task"], form["question"], **private)
    form["label_set"].change(lambda s: gr.update(visible=s == "custom"), form["label_set"], form["custom_labels"],
                             **private)
    reset = bind(handlers.reset_chat, demo)
    form["video"].change(reset, chat["session"], [chat["chatbot"], chat["session"]], **private)
    last_clip = gr.State(None)  # the clip this page showed last: deleted once replaced, if never used
    form["video"].change(bind(handlers.replace_clip, demo), [form["video"], last_clip], last_clip, **private)
    form["video"].change(lambda: (gr.update(choices=render.NOBODY_PICKED, value=0, visible=False), ""), None,
                         [form["person"], form["people"]], **private)  # a new clip: its people are unknown

    fields = [form[name] for name in ("video", "subtitle", "task", "question", "label_set", "custom_labels",
                                      "temperature", "max_new_tokens", "frame_choice", "leave_out", "demo_parity",
                                      "person")]
    shown = {**outputs, "people": form["people"], "person": form["person"]}
    form["analyze"].click(bind(handlers.analyze, demo), fields, [shown[n] for n in AnalysisView.names()],
                          api_name="analyze_stream", **private, **MODEL_EVENTS)
    api["analyze"].click(bind(handlers.analyze_api, demo), [*fields[:-1], api["person"]], api["result"],
                         api_name="analyze", **MODEL_EVENTS)

    settings = [form[name] for name in ("video", "subtitle", "label_set", "custom_labels", "temperature",
                                        "max_new_tokens", "frame_choice", "leave_out", "demo_parity")]
    turn, chat_out = bind(handlers.chat, demo), [chat["message"], chat["chatbot"], chat["session"]]
    for tag, trigger in [("free", chat["send"].click), ("free", chat["message"].submit),
                         *[(tag, button.click) for tag, button in chat["ask"].items()]]:
        trigger(turn, [chat["message"], gr.State(tag), chat["session"], *settings], chat_out,
                api_name=f"chat_{tag}", trigger_mode="always_last", **private, **MODEL_EVENTS)
    chat["reset"].click(reset, chat["session"], [chat["chatbot"], chat["session"]], **private)
    api["chat"].click(bind(handlers.chat_api, demo), [form["video"], form["subtitle"], chat["message"], api["task"],
                                                      form["label_set"], form["custom_labels"], form["temperature"],
                                                      form["max_new_tokens"], api["state"]],
                      [api["reply"], api["state"]], api_name="chat", **MODEL_EVENTS)


def launch(demo: gr.Blocks, **kwargs):
    """Start the server (``demo.launch``'s arguments) and add ``GET /health`` (counts only)."""
    blocking = not kwargs.pop("prevent_thread_lock", False)
    started = demo.launch(max_file_size=f"{MAX_UPLOAD_MB}mb", prevent_thread_lock=True, **kwargs)
    demo.app.add_api_route("/health", demo.health_report, methods=["GET"])
    if blocking:
        demo.block_thread()
    return started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="port (default: GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--host", default=None, help="address to listen on (default: GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--share", action="store_true", help="also serve it through a public Gradio share link")
    parser.add_argument("--auth", action="append", metavar="USER:PASSWORD",
                        help=f"require this login (repeatable; or {sharing.AUTH_FILE_ENV}=a file of user:password lines)")
    args = parser.parse_args(argv)
    # Our own lines at INFO; other libraries only at WARNING (httpx at INFO would log request URLs).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    auth = sharing.logins(args.auth)  # before the model loads: a bad login list fails at once
    engine = load_engine()
    log.info("engine loaded: %s", ", ".join(f"{k}={v}" for k, v in engine.info.items() if k != "warning"))
    reach = render.reach_note(args.share, args.host or os.environ.get("GRADIO_SERVER_NAME"), bool(auth))
    launch(build_demo(engine, reach), server_port=args.port, server_name=args.host, share=args.share, auth=auth,
           auth_message="Sign in with the user name and password you were given." if auth else None)


if __name__ == "__main__":
    main()
