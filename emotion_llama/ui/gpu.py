"""The model's share of each request, ready for a borrowed GPU (Hugging Face ZeroGPU).

On ZeroGPU, ``spaces.GPU`` runs a function in a forked worker that holds a GPU for that
call only: its arguments and results are pickled across, and nothing it changes stays in
the server's process. So only model work goes there, with host-memory inputs and outputs:

- an analysis gets the decoded clip (``Engine.decoded``, run before, outside) and gives
  back progress events and the ``Analysis`` (numbers, text and numpy pictures);
- a timeline sends its segments in batches of ``TIMELINE_BATCH``, decoded (about 8 MB each),
  and gets each one's scores back (``timeline.score_segments``);
- a chat turn gets the conversation's state (``ChatSession`` pickles without its model)
  or, for a first turn, the decoded clip, and gives back the reply as it grows, then the
  session with the new turn, which the server keeps (``ConversationStore``).

Uploads, decoding, face tracking and the conversation store stay in the server process.
Off ZeroGPU (a GPU Space, a CPU, tests) ``spaces.GPU`` returns the function unchanged.
Each call states how long it may hold the GPU (``duration``, seconds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from ..analysis import Analysis, AnalysisOptions, Event
from ..chat import ChatSession
from ..clip import PreparedClip
from ..timeline import score_segments
from ..vocab import GenerationSettings

ANALYSIS_SECONDS = 60  # encode, score the labels, write up to 2 drafts of 1,000 tokens, attention
CHAT_SECONDS = 40  # encode (first turn only) and write one reply
TIMELINE_SECONDS = 30  # encode and score a batch of segments (label scoring and attention, no generation)
TIMELINE_BATCH = 8


def zero_gpu(function: Callable, duration: int) -> Callable:
    """``function`` as ZeroGPU's ``spaces.GPU`` wraps it; unchanged without the package."""
    try:
        import spaces
    except ImportError:
        return function
    return spaces.GPU(function, duration=duration)


def _analysis(engine, prepared: PreparedClip, options: AnalysisOptions) -> Iterator[Event | Analysis]:
    yield from engine.analyze_iter(prepared, None, options)


def _reply(engine, chat: ChatSession | PreparedClip, question: str, task: str, settings: GenerationSettings,
           options: AnalysisOptions) -> Iterator[str | ChatSession]:
    """The reply as it grows, then the session holding the new turn."""
    if isinstance(chat, PreparedClip):
        session = engine.chat(chat, None, options)
    else:
        session = chat.attach(engine.model, engine.writer)
    yield from session.ask(question, task, settings)
    yield session


class GpuWork:
    """``analysis``, ``reply`` and ``score`` (timeline segments) of one engine, each wrapped
    for a borrowed GPU by ``wrap``."""

    def __init__(self, engine, wrap: Callable[[Callable, int], Callable] = zero_gpu):
        self.analysis = wrap(partial(_analysis, engine), ANALYSIS_SECONDS)
        self.reply = wrap(partial(_reply, engine), CHAT_SECONDS)
        self.score = wrap(partial(score_segments, engine), TIMELINE_SECONDS)
