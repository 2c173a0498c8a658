"""A public demo that careless or hostile visitors cannot knock over (issue 13), in the
library and the handlers: text caps before any work, a stream closed early frees the
model, bounded conversations, clips forgotten after their time-to-live, re-analysis of a
deleted upload, pictures sent inline. The server-level checks are in ``test_app.py``."""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from emotion_llama.analysis import AnalysisOptions
from emotion_llama.cache import ClipCache
from emotion_llama.errors import SessionExpiredError, TextTooLongError
from emotion_llama.pipeline import Engine
from emotion_llama.vocab import GenerationSettings
from emotion_llama.writing import GENERATION_THREAD

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "happy.mp4"
QUICK = GenerationSettings(do_sample=False, max_new_tokens=4)
WORDS_2500 = " ".join(["surely"] * 2500)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engine(tiny_model) -> Engine:
    """The random tiny model with a cache of its own, so decodes can be counted."""
    return Engine(tiny_model, {"weights": "tiny (random)"}, cache=ClipCache())


# -- 2. text caps --------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["subtitle", "question"])
def test_a_2500_word_text_is_refused_before_the_clip_is_decoded(engine, case):
    options = AnalysisOptions(task="free", question=WORDS_2500) if case == "question" else AnalysisOptions()
    subtitle = WORDS_2500 if case == "subtitle" else None
    with pytest.raises(TextTooLongError, match=f"the {case} has 17,499 characters.*EMOTION_LLAMA_MAX_{case.upper()}"):
        engine.analyze(EXAMPLE, subtitle, options)
    assert engine.cache.decodes == 0


def test_32_labels_of_60_words_are_refused_when_parsed():
    from emotion_llama.prompts import parse_labels

    labels = ", ".join(" ".join([f"feeling{i}"] * 60) for i in range(32))
    with pytest.raises(TextTooLongError, match="label list has .* characters"):
        parse_labels(labels)
    with pytest.raises(TextTooLongError, match="the label has 55 characters"):
        parse_labels("calm, " + "x" * 55)


def test_token_caps_count_the_models_tokens(engine, monkeypatch):
    monkeypatch.setenv("EMOTION_LLAMA_MAX_SUBTITLE_TOKENS", "5")
    with pytest.raises(TextTooLongError, match=r"the subtitle has \d+ tokens; at most 5"):
        engine.analyze(EXAMPLE, "I cannot believe you did this to me again today.")
    assert engine.cache.decodes == 0


def test_label_scoring_refuses_a_prompt_longer_than_the_context(engine, monkeypatch):
    monkeypatch.setattr(engine.model, "label_log_likelihoods", lambda *a: pytest.fail("scored an overlong prompt"))
    options = AnalysisOptions(generation=GenerationSettings(do_sample=False, max_context_tokens=200))
    subtitle = " ".join(["a sentence of a normal length that the person says"] * 4)  # within the subtitle caps
    with pytest.raises(TextTooLongError, match="label question would be .* more than the 200"):
        engine.analyze(EXAMPLE, subtitle, options)


# -- 4. cancellation -----------------------------------------------------------------------------
def test_closing_a_1500_token_stream_frees_the_model_within_a_second(engine):
    from emotion_llama.prompts import first_turn, user_turn

    model = engine.model
    projected = model.project(engine.prepare(EXAMPLE)[1])
    sequence = model.assemble(first_turn(user_turn("reason", subtitle=None)), projected)
    long = GenerationSettings(do_sample=False, max_new_tokens=1500, min_new_tokens=1500)
    stream = engine.writer.stream(sequence, long)
    next(stream)  # the first chunk: the visitor leaves now
    started = time.perf_counter()
    stream.close()
    assert model.lock.acquire(timeout=1.0), "the model is still busy a second after the stream was closed"
    model.lock.release()
    assert time.perf_counter() - started < 1.0
    assert not [t for t in threading.enumerate() if t.name == GENERATION_THREAD], "generation outlived the stream"


# -- 8. bounded conversations ----------------------------------------------------------------------
def test_a_conversation_keeps_its_first_turn_and_the_newest_and_builds_each_prompt_once(engine, monkeypatch):
    session = engine.chat(EXAMPLE, "Hello there.", AnalysisOptions())
    session.max_turns = 3
    assembled = []
    real = engine.model.assemble
    monkeypatch.setattr(engine.model, "assemble", lambda pieces, p: assembled.append(1) or real(pieces, p))
    answers = []
    for question in ["One?", "Two?", "Three?", "Four?", "Five?", "Six?"]:
        assembled.clear()
        answers.append(list(session.ask(question, "free", QUICK))[-1])
        assert len(assembled) <= 3  # the new turn's length, the prompt, the kept turn's length
    assert [turn.answer for turn in session.turns] == [answers[0], answers[4], answers[5]]
    pieces = session.prompt(session.turns[-1].user, budget=2000)
    assert sum(1 for piece in pieces if piece.kind == "bos") == 4  # first, two kept, the new turn


def test_a_conversation_that_does_not_fit_its_budget_drops_the_oldest_later_turns(engine):
    session = engine.chat(EXAMPLE, None, AnalysisOptions())
    for question in ["What is the emotion?", "Why?", "And the voice?"]:
        list(session.ask(question, "free", QUICK))
    first, _, third = session.turns
    budget = first.tokens + third.tokens + 20  # room for the newest earlier turn, not both
    from emotion_llama.prompts import user_turn

    pieces = session.prompt(user_turn("free", subtitle=None, question="Last?"), budget)
    assert len(engine.model.assemble(pieces, session.projected)) <= budget
    assert sum(1 for piece in pieces if piece.kind == "bos") == 3  # first, the newest, the new turn
    with pytest.raises(TextTooLongError, match="conversation would be"):
        session.prompt(user_turn("free", subtitle=None, question="Last?"), first.tokens)


def test_the_conversation_store_is_bounded_and_forgets_idle_conversations():
    from emotion_llama.ui.sessions import ConversationStore

    clock = FakeClock()
    store = ConversationStore(capacity=3, ttl=60, clock=clock)
    tickets = [store.open(("clip", i), object()) for i in range(5)]
    assert len(store) == 3
    with pytest.raises(SessionExpiredError, match="Press Reset"):
        store.get(tickets[0])  # closed to make room for newer ones
    store.get(tickets[2])
    clock.now = 45
    store.get(tickets[4])
    clock.now = 90  # tickets 2 and 3 idle for 90 s, ticket 4 for 45 s
    assert store.sweep() == 2 and len(store) == 1
    with pytest.raises(SessionExpiredError, match="1 minutes without a message"):
        store.get(tickets[3])


def test_decoded_clips_are_forgotten_after_their_time_to_live(tiny_model):
    clock = FakeClock()
    cache = ClipCache(ttl=60, clock=clock)
    engine = Engine(tiny_model, {"weights": "tiny (random)"}, cache=cache)
    engine.prepare(EXAMPLE)
    clock.now = 30
    engine.prepare(EXAMPLE)
    assert (cache.decodes, len(cache)) == (1, 1)
    clock.now = 91
    cache.sweep()
    assert len(cache) == 0
    engine.prepare(EXAMPLE)
    assert cache.decodes == 2


# -- 6, 7. the page's handlers ------------------------------------------------------------------------
def page_analyze(demo, clip: Path, subtitle: str = "", frame: str = "peak", parity: bool = False) -> list[tuple]:
    from emotion_llama.ui import handlers

    return list(handlers.analyze(demo, str(clip), subtitle, "emotion", "", "merr", "", 0.0, 4, frame, [], parity,
                                 progress=lambda *a, **k: None))


def test_reanalysing_a_deleted_upload_with_a_subtitle_frame_or_layout_works(engine, tmp_path):
    from emotion_llama.ui import handlers
    from emotion_llama.ui.uploads import UploadStore

    upload = tmp_path / "uploads" / "0a1b" / "clip.mp4"
    upload.parent.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "sad.mp4", upload)
    demo = handlers.Demo(engine, UploadStore(tmp_path / "uploads"))
    first = page_analyze(demo, upload)[-1][-1]
    assert not upload.exists(), "the upload is deleted when its request ends"
    typed = page_analyze(demo, upload, "I lost everything today.")[-1][-1]
    other_frame = page_analyze(demo, upload, frame="middle")[-1][-1]
    parity = page_analyze(demo, upload, parity=True)[-1][-1]
    assert typed["subtitle"] == {"text": "I lost everything today.", "source": "user", "note": None}
    assert first["probabilities"] != typed["probabilities"]
    assert other_frame["frame_time"] != first["frame_time"] and parity["frame_time"] < first["frame_time"]
    assert engine.cache.decodes == 1


def test_result_pictures_travel_inside_the_page(engine, tmp_path):
    from emotion_llama.ui import handlers
    from emotion_llama.ui.uploads import UploadStore

    demo = handlers.Demo(engine, UploadStore(tmp_path / "uploads"))
    view = handlers.AnalysisView(*page_analyze(demo, EXAMPLE)[-1])
    for picture in (view.overlay, view.faces):
        assert re.fullmatch(r'<img src="data:image/jpeg;base64,[A-Za-z0-9+/=]{1000,}" alt="[^"]+" style="[^"]+">',
                            picture)


def test_a_visitor_whose_conversation_was_closed_is_told_so_and_reset_starts_anew(engine, tmp_path):
    from emotion_llama.ui import handlers
    from emotion_llama.ui.sessions import ConversationStore
    from emotion_llama.ui.uploads import UploadStore

    clock = FakeClock()
    demo = handlers.Demo(engine, UploadStore(tmp_path / "uploads"), ConversationStore(capacity=4, ttl=600,
                                                                                      clock=clock))
    ask = ["", "emotion"]
    form = [str(EXAMPLE), "", "merr", "", 0.0, 4, "peak", [], False]
    ticket = list(handlers.chat(demo, *ask, None, *form))[-1][2]
    assert list(handlers.chat(demo, *ask, ticket, *form))[-1][2] == ticket  # the same conversation goes on
    clock.now = 601
    with pytest.raises(Exception, match="conversation was closed.*10 minutes without a message.*Press Reset"):
        list(handlers.chat(demo, *ask, ticket, *form))
    assert handlers.reset_chat(demo, ticket) == ([], None)
    transcript = list(handlers.chat(demo, *ask, None, *form))[-1][1]
    assert [message["role"] for message in transcript] == ["user", "assistant"]


def test_the_page_states_the_face_coverage(engine, tmp_path):
    from emotion_llama.ui import handlers
    from emotion_llama.ui.uploads import UploadStore

    demo = handlers.Demo(engine, UploadStore(tmp_path / "uploads"))
    view = handlers.AnalysisView(*page_analyze(demo, EXAMPLE)[-1])
    seen = view.result_json["face_coverage"]
    assert re.search(r"\*\*Face:\*\* face seen in (\d+) of (\d+) sampled frames", view.notes)
    found, total = map(int, re.search(r"seen in (\d+) of (\d+)", view.notes).groups())
    assert found / total == pytest.approx(seen, abs=1e-3)
