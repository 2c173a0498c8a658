"""Emotion-LLaMA web demo: a Gradio page over ``emotion_llama.pipeline``.

Run ``python app.py`` (``--port`` or ``GRADIO_SERVER_PORT`` to move it). The engine is
loaded once at start-up; every request goes through ``Engine.analyze_iter`` or a
``ChatSession``. Layout and wiring only: rendering helpers live in ``emotion_llama.ui``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gradio as gr

from emotion_llama import ui
from emotion_llama.errors import EmotionLlamaError, PromptError
from emotion_llama.pipeline import Analysis, Engine, Event, load_engine
from emotion_llama.prepare import PrepareOptions

try:  # Hugging Face ZeroGPU: borrows a GPU per call; without the package (or off Spaces) a no-op.
    import spaces

    gpu = spaces.GPU(duration=120)
except ImportError:

    def gpu(function):
        return function


EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


def _examples() -> list[dict]:
    """The example clips (``examples/examples.json``) whose files are present."""
    manifest = EXAMPLES_DIR / "examples.json"
    entries = json.loads(manifest.read_text()) if manifest.is_file() else []
    return [e for e in entries if (EXAMPLES_DIR / e["clip"]).is_file()]


EXAMPLES = _examples()
MAX_UPLOAD_MB = int(os.environ.get("EMOTION_LLAMA_MAX_UPLOAD_MB", "50"))
CONCURRENCY = int(os.environ.get("EMOTION_LLAMA_CONCURRENCY", "2"))
MAX_SECONDS = PrepareOptions().max_seconds
GENERIC_FAILURE = (
    "Something went wrong on our side while handling this request. Please try again; "
    "if it keeps happening, try another clip."
)

log = logging.getLogger("emotion_llama.app")


def _user_facing(error: BaseException) -> gr.Error:
    """A user's mistake shows its own message; a bug shows a generic one and is logged without user content."""
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, EmotionLlamaError):
        return gr.Error(str(error), title="Cannot do that", print_exception=False)
    log.error("request failed with %s\n%s", type(error).__name__, "".join(traceback.format_tb(error.__traceback__)))
    return gr.Error(GENERIC_FAILURE, title="Internal error", print_exception=False)


def build_demo(engine: Engine) -> gr.Blocks:
    examples = [EXAMPLES_DIR / e["clip"] for e in EXAMPLES]
    store = ui.UploadStore(gr.utils.get_upload_folder(), keep=examples)

    def analysis_events(video: str | None, subtitle: str | None, options) -> Iterator[Event | Analysis]:
        if not video:
            raise PromptError("upload a video clip first, record one, or pick an example below")
        frame_choice = "first" if options.demo_parity else options.frame_choice
        clip = store.prepared(video, (subtitle or "").strip() or None, frame_choice)
        yield from engine.analyze_iter(clip, None, options)

    def chat_session(video: str | None, subtitle: str | None, options, state: dict | None):
        """The chat session of this clip and settings: reused if it exists, else encoded once."""
        if not video:
            raise PromptError("upload a video clip first, record one, or pick an example")
        key = (video, (subtitle or "").strip(), options.labels, options.leave_out, options.demo_parity,
               options.frame_choice)
        if state and state.get("key") == key:
            return state
        frame_choice = "first" if options.demo_parity else options.frame_choice
        clip = store.prepared(video, key[1] or None, frame_choice)
        # One turn at a time per conversation: a second question waits for the first reply.
        return {"key": key, "session": engine.chat(clip, None, options), "lock": threading.Lock(), "messages": []}

    @contextmanager
    def request(video: str | None) -> Iterator[None]:
        """Around every handler: the upload is deleted afterwards, errors reach the user in plain words."""
        try:
            with store.using(video):
                yield
        except Exception as error:  # noqa: BLE001 - the one boundary where any failure becomes a message
            raise _user_facing(error) from None

    # -- handlers ------------------------------------------------------------------------
    @gpu
    def analyze(video, subtitle, task, question, label_set, custom_labels, temperature, max_new_tokens,
                frame_choice, leave_out, demo_parity, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
        """Stream one analysis into the page: stages as progress, the answer as it is written."""
        skip = gr.skip()
        yield None, "", None, None, None, "", "", "", None  # no stale result from an earlier clip
        with request(video):
            options = ui.options_from_form(task, question, label_set, custom_labels, temperature,
                                           max_new_tokens, frame_choice, leave_out, demo_parity)
            stages = 0
            progress(0.0, desc="reading the clip")
            for item in analysis_events(video, subtitle, options):
                if isinstance(item, Event) and item.kind == "stage":
                    stages += 1
                    progress(min(stages / 4, 0.95), desc=item.value)
                elif isinstance(item, Event):
                    yield (skip, item.value, *([skip] * 7))
                else:
                    yield (
                        ui.probability_label(item.probabilities),
                        item.answer,
                        ui.attention_table(item.modality_attention),
                        item.overlay(),
                        ui.face_strip(item.face_crops, item.peak_frame_index),
                        ui.subtitle_markdown(item.subtitle, item.subtitle_source, "subtitle" in options.leave_out,
                                            item.subtitle_note),
                        ui.modalities_markdown(item.modalities_present, item.filled_modalities, item.frame_time)
                        + "\n\n" + ui.warnings_markdown(item.warnings),
                        ui.timings_markdown(item.timings),
                        item.to_json(),
                    )

    @gpu
    def analyze_json(video, subtitle=None, task="emotion", question=None, label_set="merr", custom_labels=None,
                     temperature=0.0, max_new_tokens=200, frame_choice="peak", leave_out=None,
                     demo_parity=False) -> dict:
        """One whole analysis as the JSON of ``python -m emotion_llama analyze --json``."""
        with request(video):
            options = ui.options_from_form(task, question, label_set, custom_labels, temperature,
                                           max_new_tokens, frame_choice, leave_out, demo_parity)
            result = None
            for result in analysis_events(video, subtitle, options):
                pass
            return result.to_json()

    @gpu
    def chat(message, task, state, video, subtitle, label_set, custom_labels, temperature,
             max_new_tokens, frame_choice, leave_out, demo_parity):
        """One chat turn: the reply streams into the chat; the session stays in ``state``."""
        with request(video):
            question = (message or "").strip()
            if task == "free" and not question:
                raise PromptError("type a question, or use one of the buttons")
            options = ui.options_from_form("emotion", None, label_set, custom_labels, temperature,
                                           max_new_tokens, frame_choice, leave_out, demo_parity)
            state = chat_session(video, subtitle, options, state)
            shown = question if task == "free" else f"[{task}] {question}".strip()
            with state["lock"]:  # the transcript is the server's, so a queued turn never shows a stale one
                history = [*state["messages"], {"role": "user", "content": shown},
                           {"role": "assistant", "content": ""}]
                # The box is cleared once: later updates leave it alone, so what the user types
                # while this reply streams is kept for the next turn.
                box = ""
                for reply in state["session"].ask(question, task, options.generation):
                    history[-1] = {"role": "assistant", "content": reply}
                    yield box, history, state
                    box = gr.skip()
                state["messages"] = history

    @gpu
    def chat_api(video, subtitle=None, message=None, task="free", label_set="merr", custom_labels=None,
                 temperature=0.0, max_new_tokens=200, state=None) -> Iterator[tuple[str, dict]]:
        """One chat turn for API clients; turns with the same client continue the conversation."""
        with request(video):
            if task not in ("emotion", "reason", "visual", "audio", "free"):
                raise PromptError("task must be one of emotion, reason, visual, audio, free")
            if task == "free" and not (message or "").strip():
                raise PromptError("type a question for the free task")
            options = ui.options_from_form("emotion", None, label_set, custom_labels, temperature,
                                           max_new_tokens, "peak", [], False)
            state = chat_session(video, subtitle, options, state)
            with state["lock"]:
                for reply in state["session"].ask((message or "").strip(), task, options.generation):
                    yield reply, state

    def reset_chat(state):
        if state:
            with state["lock"]:
                state["session"].reset()
                state["messages"] = []
        return [], state

    # -- layout --------------------------------------------------------------------------
    with gr.Blocks(title="Emotion-LLaMA", delete_cache=(1800, 1800)) as demo:
        gr.Markdown("# Emotion-LLaMA: emotion recognition and reasoning from video")
        gr.Markdown(ui.engine_banner(engine.info), elem_id="engine-banner")
        with gr.Row():
            with gr.Column(scale=5):
                video = gr.Video(sources=["upload", "webcam"], label="Video clip", elem_id="video-input")
                gr.Markdown(f"Clips up to {MAX_SECONDS:.0f} s and {MAX_UPLOAD_MB} MB. The file is deleted "
                            "when each request finishes.")
                subtitle = gr.Textbox(label="What the person says (optional)", lines=2, elem_id="subtitle",
                                      placeholder="Leave empty to use a subtitle file next to the clip, "
                                                  "speech recognition if installed, or no subtitle.")
                task = gr.Radio(ui.TASK_CHOICES, value="reason", label="Task")
                question = gr.Textbox(label="Your question", visible=False, elem_id="question")
                label_set = gr.Radio(ui.LABEL_SET_CHOICES, value="merr", label="Candidate emotions")
                custom_labels = gr.Textbox(label="Your labels, separated by commas", visible=False,
                                           placeholder="calm, tense, joyful")
                with gr.Accordion("Advanced", open=False):
                    temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05,
                                            label="Temperature (0 = always the most likely word)")
                    max_new_tokens = gr.Slider(1, 1000, value=200, step=1, label="Max new tokens",
                                               elem_id="max-new-tokens")
                    frame_choice = gr.Radio(ui.FRAME_CHOICES, value="peak", label="Frame for the global encoder")
                    leave_out = gr.CheckboxGroup(ui.LEAVE_OUT_CHOICES, value=[], label="Leave out")
                    demo_parity = gr.Checkbox(
                        value=False, label="Reference demo layout (first frame, no face features, its prompt)")
                analyze_button = gr.Button("Analyze", variant="primary", elem_id="analyze-button")
            with gr.Column(scale=7), gr.Tabs():
                with gr.Tab("Analysis"):
                    label = gr.Label(label="Emotion and the probability of every candidate",
                                     elem_id="probabilities", show_label=True)
                    answer = gr.Textbox(label="Answer", lines=5, elem_id="answer", buttons=["copy"])
                    with gr.Row():
                        attention = gr.BarPlot(x="modality", y="attention %", elem_id="attention",
                                               label="Share of the answer's attention per input",
                                               y_lim=[0, 100], height=240, x_label_angle=-30,
                                               sort=list(ui.ATTENTION_NAMES.values()))
                        overlay = gr.Image(label="Where the answer looked in the frame", elem_id="overlay",
                                           height=240, buttons=["download"])
                    faces = gr.Image(label="Face crops (the peak frame is framed in orange)",
                                     elem_id="faces", height=140)
                    subtitle_used = gr.Markdown(elem_id="subtitle-used")
                    notes = gr.Markdown(elem_id="notes")
                    with gr.Accordion("Time per stage and full result (JSON)", open=False):
                        timings = gr.Markdown(elem_id="timings")
                        result_json = gr.JSON(label="Result")
                with gr.Tab("Chat", elem_id="chat-tab"):
                    chatbot = gr.Chatbot(label="Chat about this clip", height=380, elem_id="chatbot")
                    with gr.Row():
                        ask_buttons = {
                            tag: gr.Button(f"[{tag}]", size="sm", elem_id=f"ask-{tag}")
                            for tag in ("emotion", "reason", "visual", "audio")
                        }
                    with gr.Row():
                        message = gr.Textbox(placeholder="Ask anything about the clip", show_label=False,
                                             scale=5, elem_id="chat-message")
                        send = gr.Button("Send", scale=1, elem_id="chat-send")
                        reset = gr.Button("Reset", scale=1, elem_id="chat-reset")
                    session = gr.State(None)
        gr.Examples(
            [[str(EXAMPLES_DIR / e["clip"]), e["subtitle"], e["task"], e["question"]] for e in EXAMPLES],
            inputs=[video, subtitle, task, question],
            label="Examples (synthetic clips made for this demo: drawn faces, synthesised voices)",
        )
        gr.Markdown(ui.RESPONSIBLE_USE, elem_id="responsible-use")

        # Inputs only an API client sees.
        with gr.Column(visible=False):
            api_task = gr.Textbox(value="free")
            api_reply = gr.Textbox()
            api_result = gr.JSON()
            api_state = gr.State(None)
            api_analyze = gr.Button()
            api_chat = gr.Button()

        # -- events ------------------------------------------------------------------------
        task.change(lambda t: gr.update(visible=t == "free"), task, question, api_visibility="private")
        label_set.change(lambda s: gr.update(visible=s == "custom"), label_set, custom_labels,
                         api_visibility="private")
        video.change(lambda: ([], None), None, [chatbot, session], api_visibility="private")

        form = [video, subtitle, task, question, label_set, custom_labels, temperature, max_new_tokens,
                frame_choice, leave_out, demo_parity]
        analysis_outputs = [label, answer, attention, overlay, faces, subtitle_used, notes, timings, result_json]
        analyze_button.click(analyze, form, analysis_outputs, api_name="analyze_stream", api_visibility="private")
        api_analyze.click(analyze_json, form, api_result, api_name="analyze")

        settings = [video, subtitle, label_set, custom_labels, temperature, max_new_tokens, frame_choice,
                    leave_out, demo_parity]
        free = gr.State("free")
        for trigger in (send.click, message.submit):
            trigger(chat, [message, free, session, *settings], [message, chatbot, session],
                    api_name="chat_free", api_visibility="private", trigger_mode="always_last")
        for tag, button in ask_buttons.items():
            button.click(chat, [message, gr.State(tag), session, *settings], [message, chatbot, session],
                         api_name=f"chat_{tag}", api_visibility="private", trigger_mode="always_last")
        reset.click(reset_chat, session, [chatbot, session], api_visibility="private")
        api_chat.click(chat_api, [video, subtitle, message, api_task, label_set, custom_labels, temperature,
                                  max_new_tokens, api_state], [api_reply, api_state], api_name="chat")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=32)
    return demo


def launch(demo: gr.Blocks, **kwargs):
    return demo.launch(max_file_size=f"{MAX_UPLOAD_MB}mb", **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="port (default: GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--host", default=None, help="address to listen on (default: GRADIO_SERVER_NAME or 127.0.0.1)")
    args = parser.parse_args(argv)
    # Our own lines at INFO; other libraries only at WARNING (httpx at INFO would log request URLs).
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    engine = load_engine()
    log.info("engine loaded: %s", ", ".join(f"{k}={v}" for k, v in engine.info.items() if k != "warning"))
    launch(build_demo(engine), server_port=args.port, server_name=args.host)


if __name__ == "__main__":
    main()
