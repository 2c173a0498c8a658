"""The page's and the API's handlers, as top-level functions of a ``Demo``.

``app.py`` binds each to the one ``Demo`` (engine + upload store) and wires it to the
page. The page's Analyze and the ``/analyze`` endpoint share ``analysis_events``; the
page's chat and the ``/chat`` endpoint share ``chat_turn``. Every handler runs inside
``request``: the upload is deleted afterwards and any failure reaches the person as a
plain message (a bug as a generic one, logged without user content).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import astuple, dataclass, field, fields
from typing import Any

import gradio as gr

from ..analysis import Analysis, AnalysisOptions, Event
from ..chat import ChatSession
from ..errors import EmotionLlamaError, PromptError
from ..pipeline import Engine
from ..report import render_report
from ..vocab import ANSWER_TOKENS, DEFAULT_FRAME, DEFAULT_LABEL_SET, TASKS
from . import render
from .forms import options_from_form
from .gpu import GpuWork
from .sessions import ChatTicket, Conversation, ConversationStore
from .sharing import Health
from .uploads import UploadStore

GENERIC_FAILURE = (
    "Something went wrong on our side while handling this request. Please try again; "
    "if it keeps happening, try another clip."
)
NO_CLIP = "upload a video clip first, record one, or pick an example below"
log = logging.getLogger("emotion_llama.app")


@dataclass
class Demo:
    engine: Engine
    store: UploadStore
    conversations: ConversationStore = field(default_factory=ConversationStore)
    work: GpuWork | None = None  # the model's share of each request (``gpu.py``); made from ``engine``
    health: Health | None = None  # counts for the health report (``sharing.py``); made from ``engine``

    def __post_init__(self) -> None:
        self.work = self.work or GpuWork(self.engine)
        self.health = self.health or Health(self.engine.info)


@dataclass
class AnalysisView:
    """The analysis outputs of the page, by name; a field left at ``SKIP`` is not updated."""

    label: Any = None
    answer: Any = ""
    attention: Any = None
    overlay: Any = ""
    faces: Any = ""
    subtitle_used: Any = ""
    notes: Any = ""
    people: Any = ""
    person: Any = None
    report: Any = ""
    timings: Any = ""
    result_json: Any = None  # last: API clients of the page's stream read the JSON there

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def only(cls, **values: Any) -> tuple:
        """These outputs updated, every other left as it is."""
        return astuple(cls(**{**{name: gr.skip() for name in cls.names()}, **values}))

    @classmethod
    def of(cls, analysis: Analysis, options: AnalysisOptions) -> tuple:
        return astuple(cls(
            label=render.probability_label(analysis.probabilities),
            answer=analysis.answer,
            attention=render.attention_table(analysis.modality_attention),
            overlay=render.inline_image(analysis.overlay(), "where the answer looked in the frame"),
            faces=render.faces_html(analysis.face_crops, analysis.peak_frame_index,
                                    face_found=not analysis.filled_modalities.get("face", "").startswith("missing")),
            subtitle_used=render.subtitle_markdown(analysis.subtitle, analysis.subtitle_source,
                                                   "subtitle" in options.leave_out, analysis.subtitle_note),
            notes=render.modalities_markdown(analysis.modalities_present, analysis.filled_modalities,
                                             analysis.frame_time) + render.face_markdown(analysis.face_note)
            + "\n\n" + render.warnings_markdown(analysis.warnings),
            timings=render.timings_markdown(analysis.timings),
            result_json=analysis.to_json(),
            people=render.people_strip(analysis.people, analysis.person),
            person=gr.update(choices=render.person_choices(analysis.people), value=analysis.person,
                             visible=len(analysis.people) > 1),
            report=render.report_link(render_report(analysis, options)),
        ))


def user_facing(error: BaseException) -> gr.Error:
    """A user's mistake shows its own message; a bug shows a generic one and is logged without user content."""
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, EmotionLlamaError):
        return gr.Error(str(error), title="Cannot do that", print_exception=False)
    log.error("request failed with %s\n%s", type(error).__name__, "".join(traceback.format_tb(error.__traceback__)))
    return gr.Error(GENERIC_FAILURE, title="Internal error", print_exception=False)


@contextmanager
def request(demo: Demo, video: str | None) -> Iterator[None]:
    """Around every handler: the upload is deleted afterwards, errors reach the user in plain words."""
    try:
        with demo.store.using(video):
            yield
    except Exception as error:  # noqa: BLE001 - the one boundary where any failure becomes a message
        demo.health.failed(type(error).__name__ if isinstance(error, EmotionLlamaError | gr.Error) else "internal error")
        raise user_facing(error) from None
    demo.health.served()


def analysis_events(demo: Demo, video: str | None, subtitle: str | None,
                    options: AnalysisOptions) -> Iterator[Event | Analysis]:
    if not video:
        raise PromptError(NO_CLIP)
    words = (subtitle or "").strip() or None
    demo.engine.check_text(options, words)
    yield from demo.work.analysis(demo.engine.decoded(video, words, options), options)


# -- Analyze -----------------------------------------------------------------------------------
def analyze(demo: Demo, video, subtitle, task, question, label_set, custom_labels, temperature, max_new_tokens,
            frame_choice, leave_out, demo_parity, person=None, progress=gr.Progress()):  # noqa: B008 - Gradio's idiom
    """The page's Analyze: stages as progress, the answer as it is written, then every output."""
    yield AnalysisView.only(**{name: value for name, value in vars(AnalysisView()).items()
                               if name != "person"})  # no stale result; the person picked stays
    with request(demo, video):
        options = options_from_form(task, question, label_set, custom_labels, temperature, max_new_tokens,
                                    frame_choice, leave_out, demo_parity, person)
        progress(0.0, desc="reading the clip")
        with closing(analysis_events(demo, video, subtitle, options)) as events:  # a visitor who leaves stops it
            yield from _analysis_outputs(events, options, progress)


def _analysis_outputs(events, options: AnalysisOptions, progress) -> Iterator[tuple]:
    stages = 0
    for item in events:
        if isinstance(item, Analysis):
            yield AnalysisView.of(item, options)
        elif item.kind == "stage":
            stages += 1
            progress(min(stages / 4, 0.95), desc=item.value)
        else:
            yield AnalysisView.only(answer=item.value)


def analyze_api(demo: Demo, video, subtitle=None, task="emotion", question=None, label_set=DEFAULT_LABEL_SET,
                custom_labels=None, temperature=0.0, max_new_tokens=ANSWER_TOKENS, frame_choice=DEFAULT_FRAME,
                leave_out=None, demo_parity=False, person=None) -> dict:
    """``/analyze``: one whole analysis as the JSON of ``python -m emotion_llama analyze --json``;
    ``person``: whose face to read, an index of the result's ``people`` (None: the one seen most)."""
    with request(demo, video):
        options = options_from_form(task, question, label_set, custom_labels, temperature, max_new_tokens,
                                    frame_choice, leave_out, demo_parity, person)
        result = None
        for result in analysis_events(demo, video, subtitle, options):
            pass
        return result.to_json()


# -- Chat --------------------------------------------------------------------------------------
def conversation_of(demo: Demo, video: str | None, subtitle: str | None, options: AnalysisOptions,
                    ticket: ChatTicket | None) -> tuple[ChatTicket, Conversation]:
    """The conversation of this clip and settings: the visitor's own if it is about them,
    else a new one (the clip encoded once)."""
    if not video:
        raise PromptError(NO_CLIP)
    words = (subtitle or "").strip() or None
    key = (video, words, options.labels, options.leave_out, options.demo_parity, options.frame_choice)
    if ticket is not None and ticket.key == key:
        return ticket, demo.conversations.get(ticket)
    demo.conversations.close(ticket)
    demo.engine.check_text(options, words)
    ticket = demo.conversations.open(key, demo.engine.decoded(video, words, options))
    return ticket, demo.conversations.get(ticket)


def chat_turn(demo: Demo, video, subtitle, message, task, options: AnalysisOptions, ticket: ChatTicket | None,
              done=None) -> Iterator[tuple[str, ChatTicket, Conversation]]:
    """One turn, shared by the page and ``/chat``: the reply as it grows, the ticket and the
    conversation; ``done(reply, conversation)`` runs before the next turn of it may start."""
    question = (message or "").strip()
    if task not in TASKS:
        raise PromptError(f"task must be one of {', '.join(TASKS)}")
    if task == "free" and not question:
        raise PromptError("type a question, or use one of the buttons")
    ticket, conversation = conversation_of(demo, video, subtitle, options, ticket)
    with conversation.lock, closing(demo.work.reply(conversation.session, question, task, options.generation,
                                                    options)) as replies:
        text = ""
        for reply in replies:
            if isinstance(reply, ChatSession):  # the turn is complete: keep the session holding it
                conversation.session = reply
            else:
                text = reply
                yield text, ticket, conversation
        if done:
            done(text, conversation)


def chat(demo: Demo, message, task, state, video, subtitle, label_set, custom_labels, temperature,
         max_new_tokens, frame_choice, leave_out, demo_parity):
    """The page's chat: the reply streams into the transcript; the box is cleared once, so
    what the person types while a reply streams is kept for the next turn."""
    with request(demo, video):
        options = options_from_form("emotion", None, label_set, custom_labels, temperature, max_new_tokens,
                                    frame_choice, leave_out, demo_parity)
        shown = (message or "").strip() if task == "free" else f"[{task}] {(message or '').strip()}".strip()
        box, history = "", []

        def keep(reply: str, conversation: Conversation) -> None:
            conversation.messages = [*history, {"role": "assistant", "content": reply}]

        with closing(chat_turn(demo, video, subtitle, message, task, options, state, keep)) as turn:
            for reply, ticket, conversation in turn:
                if not history:  # read under the turn's lock: a queued turn never shows a stale transcript
                    history = [*conversation.messages, {"role": "user", "content": shown}]
                yield box, [*history, {"role": "assistant", "content": reply}], ticket
                box = gr.skip()


def chat_api(demo: Demo, video, subtitle=None, message=None, task="free", label_set=DEFAULT_LABEL_SET,
             custom_labels=None, temperature=0.0, max_new_tokens=ANSWER_TOKENS, state=None):
    """``/chat``: one turn for API clients; turns with the same client continue the conversation."""
    with request(demo, video):
        options = options_from_form("emotion", None, label_set, custom_labels, temperature, max_new_tokens,
                                    DEFAULT_FRAME, [], False)
        for reply, ticket, _ in chat_turn(demo, video, subtitle, message, task, options, state):
            yield reply, ticket


def replace_clip(demo: Demo, video: str | None, shown: str | None) -> str | None:
    """The visitor picked, recorded or cleared a clip: the one shown before, if no request
    used it, is deleted now. Returns the clip now shown (kept in the page's state)."""
    if shown != video:
        demo.store.discard(shown)
    return video


def reset_chat(demo: Demo, ticket: ChatTicket | None):
    """Forget the conversation: the next turn opens a new one."""
    demo.conversations.close(ticket)
    return [], None
