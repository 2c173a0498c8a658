"""The web app: its API through ``gradio_client`` against a real server, and its helpers.

One server for the module (tiny model, greedy decoding, a handful of new tokens), with
``GRADIO_TEMP_DIR`` pointed at a fresh folder so the test can see every upload Gradio keeps.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from media_factory import expressive_face, make_face_clip, make_long_clip, make_png, media, one_face  # noqa: F401

from emotion_llama.errors import PromptError
from emotion_llama.vocab import MER2023_LABELS, MERR_LABELS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXAMPLE = ROOT / "examples" / "happy.mp4"
FAST = {"max_new_tokens": 6, "temperature": 0.0}
JSON_KEYS = {
    "label", "probabilities", "answer", "task", "modality_attention", "span_attention", "modalities_present",
    "filled_modalities", "subtitle", "frame_time", "warnings", "timings", "engine", "reasoning_check", "out_of_domain",
    "face_coverage", "face_note", "people", "person", "audio_note",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def without_timings(result: dict) -> dict:
    return {key: value for key, value in result.items() if key != "timings"}


@pytest.fixture(scope="module")
def engine():
    from emotion_llama.pipeline import load_engine

    return load_engine()


@pytest.fixture(scope="module")
def server(engine, gradio_temp):
    """The app with room for 8 requests per visitor: these tests send several at once from
    one client on purpose (fairness between visitors is ``test_sharing.py``'s)."""
    import app

    os.environ["EMOTION_LLAMA_PER_VISITOR"] = "8"
    try:
        demo = app.build_demo(engine)
    finally:
        del os.environ["EMOTION_LLAMA_PER_VISITOR"]
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_port=free_port(), quiet=True)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Fresh clips (not examples, so the app may delete their uploads) and bad files."""
    folder = tmp_path_factory.mktemp("app_clips")
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    text = folder / "notes.mp4"
    text.write_text("This is a shopping list, not a video.\nmilk\neggs\n")
    picture = make_png(folder / "picture.png").rename(folder / "picture.mp4")
    return {
        "picture": picture,
        "face": make_face_clip(folder / "face.mp4", expressive_face(1.0, 2.0), seconds=2.0, fps=10),
        "still": make_face_clip(folder / "still.mp4", one_face(), seconds=1.5, fps=10, audio=False),
        "long": make_long_clip(folder / "long.mp4", seconds=120.0),
        "empty": empty,
        "text": text,
    }


def analyze(client, path: Path, **kwargs):
    from gradio_client import handle_file

    return client.predict(video=handle_file(str(path)), api_name="/analyze", **{**FAST, **kwargs})


# -- the API ---------------------------------------------------------------------------------
def test_only_analyze_timeline_and_chat_are_public(client):
    assert set(client.view_api(return_format="dict", print_info=False)["named_endpoints"]) == {
        "/analyze", "/timeline", "/chat"}


def test_analyze_returns_the_documented_json(client, engine):
    from emotion_llama.pipeline import AnalysisOptions
    from emotion_llama.ui import generation_from_form

    words = "I can't believe it, we actually won!"
    result = analyze(client, EXAMPLE, subtitle=words, task="emotion", label_set="merr")
    assert set(result) == JSON_KEYS
    assert list(result["probabilities"]) and set(result["probabilities"]) == set(MERR_LABELS)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)
    assert isinstance(result["answer"], str)
    assert set(result["modality_attention"]) and sum(result["modality_attention"].values()) == pytest.approx(1.0, abs=1e-3)
    assert result["modalities_present"]["subtitle"] is True and result["modalities_present"]["global"] is True
    assert result["subtitle"] == {"text": words, "source": "user", "note": None}
    assert result["reasoning_check"] is None  # only a follow-up reasoning is checked
    assert isinstance(result["warnings"], list)
    assert {"prepare_and_encode", "label_probabilities", "generate"} <= set(result["timings"])
    # The same numbers as the library called directly.
    options = AnalysisOptions(task="emotion", labels=MERR_LABELS, generation=generation_from_form(0.0, 6))
    direct = engine.analyze(EXAMPLE, words, options).to_json()
    assert without_timings(result) == without_timings(direct)


def test_label_sets_and_tasks(client):
    six = analyze(client, EXAMPLE, label_set="mer2023", task="reason")
    assert set(six["probabilities"]) == set(MER2023_LABELS) and six["task"] == "reason"
    check = six["reasoning_check"]  # the reasoning is asked as a follow-up to the top label
    assert check["label"] == six["label"] and 1 <= check["drafts"] <= 4
    own = analyze(client, EXAMPLE, label_set="custom", custom_labels="calm, tense , joyful,calm", task="free",
                  question="Is the person <VideoHere> smiling?")
    assert list(own["probabilities"]) == ["calm", "tense", "joyful"]
    left_out = analyze(client, EXAMPLE, leave_out=["audio", "subtitle"], subtitle="hello there")
    assert left_out["modalities_present"]["audio"] is False and left_out["modalities_present"]["subtitle"] is False


def test_four_requests_at_once_match_one_at_a_time(client, clips):
    from gradio_client import handle_file

    alone = without_timings(analyze(client, clips["face"], subtitle="Look at this!"))
    jobs = [client.submit(video=handle_file(str(clips["face"])), subtitle="Look at this!", api_name="/analyze",
                          **FAST) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda job: job.result(timeout=300), jobs))
    assert [without_timings(result) for result in together] == [alone] * 4


@pytest.mark.parametrize("bad, words", [("empty", "empty"), ("text", "not a video"), ("picture", "image")])
def test_a_bad_upload_gets_a_readable_error_and_the_next_request_works(client, clips, bad, words):
    from gradio_client.exceptions import AppError

    import app

    with pytest.raises(AppError) as caught:
        analyze(client, clips[bad])
    message = str(caught.value)
    assert message and "Traceback" not in message and message != app.GENERIC_FAILURE
    assert words in message.lower()
    assert set(analyze(client, clips["still"])["probabilities"]) == set(MERR_LABELS)


def test_a_bug_shows_a_generic_message_and_logs_no_user_content(client, clips, engine, monkeypatch, caplog, capfd):
    from gradio_client.exceptions import AppError

    import app

    def broken(clip, subtitle, options):
        raise RuntimeError(f"kaboom while reading {clip} with {subtitle}")

    monkeypatch.setattr(engine, "analyze_iter", broken)
    with caplog.at_level("INFO"), pytest.raises(AppError) as caught:
        analyze(client, clips["still"], subtitle="my secret words")
    assert str(caught.value) == app.GENERIC_FAILURE
    assert "RuntimeError" in caplog.text
    logged = caplog.text + "".join(capfd.readouterr())
    assert "my secret words" not in logged and "still.mp4" not in logged


def test_a_long_clip_is_cut_to_the_limit_with_a_warning(client, clips):
    import app

    result = analyze(client, clips["long"])
    assert any(f"first {app.MAX_SECONDS:g} s" in warning for warning in result["warnings"])


def test_chat_streams_and_keeps_the_conversation(client, clips, engine, monkeypatch):
    from gradio_client import handle_file

    sessions = []
    real_chat = engine.chat

    def counting_chat(*args, **kwargs):
        sessions.append(real_chat(*args, **kwargs))
        return sessions[-1]

    monkeypatch.setattr(engine, "chat", counting_chat)
    video = handle_file(str(clips["face"]))
    first = client.submit(video=video, message="", task="emotion", api_name="/chat", **FAST)
    assert isinstance(first.result(timeout=300), str)
    assert first.outputs(), "the reply should stream"
    second = client.predict(video=video, message="Why do you think so?", task="free", api_name="/chat", **FAST)
    assert isinstance(second, str)
    assert len(sessions) == 1, "the clip is encoded once per conversation"
    assert [turn.answer for turn in sessions[0].turns] == [first.result(), second]
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="question"):
        client.predict(video=video, message="  ", task="free", api_name="/chat", **FAST)


def test_no_upload_is_left_behind(client, clips, gradio_temp):
    """Runs after the others: every clip and bad file uploaded above is gone from Gradio's folder."""
    analyze(client, clips["still"], subtitle="one more")
    uploaded = {sha256(path) for path in clips.values()}
    left = [path for path in files_under(gradio_temp) if sha256(path) in uploaded]
    assert left == []


# -- helpers, without a server ---------------------------------------------------------------
def test_form_values_become_options():
    from emotion_llama.ui import options_from_form

    options = options_from_form("free", " why? ", "custom", "a, b", 0.7, 32, "middle", ["audio"], True)
    assert options.labels == ("a", "b") and options.question == "why?"
    assert options.generation.do_sample and options.generation.temperature == 0.7
    assert options.generation.max_new_tokens == 32 and options.leave_out == ("audio",) and options.demo_parity
    assert not options_from_form("emotion", "", "merr", "", 0, 8, "peak", [], False).generation.do_sample
    with pytest.raises(PromptError, match="labels"):
        options_from_form("emotion", "", "custom", "  ", 0, 8, "peak", [], False)
    with pytest.raises(PromptError, match="question"):
        options_from_form("free", "", "merr", "", 0, 8, "peak", [], False)


def test_face_strip_marks_the_peak_frame():
    from emotion_llama.ui import face_strip

    crops = np.zeros((5, 64, 64, 3), np.uint8)
    strip = face_strip(crops, peak_index=3, size=40)
    cell = 40 + 2 * 5
    assert strip.shape[1] == 5 * cell + 4 * 4
    peak_x = 3 * (cell + 4)
    assert tuple(strip[1, peak_x + 1]) == (240, 120, 0)
    assert tuple(strip[1, 1]) == (200, 200, 200)
    assert face_strip(np.zeros((0, 8, 8, 3), np.uint8), None) is None


def test_the_face_strip_says_when_its_crops_are_the_frame_centre_and_not_a_face():
    from emotion_llama.ui.render import NO_FACE_CAPTION, faces_html

    crops = np.zeros((4, 32, 32, 3), np.uint8)
    assert "<img" in faces_html(crops, 0, face_found=True) and NO_FACE_CAPTION not in faces_html(crops, 0, True)
    captioned = faces_html(crops, 0, face_found=False)
    assert captioned.startswith("<img") and captioned.endswith(f"<p><em>{NO_FACE_CAPTION}</em></p>")
    assert faces_html(None, None, face_found=False) == ""


def test_banner_says_what_the_model_is_and_how_to_load_the_official_one():
    from emotion_llama.ui import engine_banner

    untrained = engine_banner({"weights": "tiny (random)", "device": "cpu", "dtype": "float32", "warning": "x"})
    assert "untrained" in untrained and "EMOTION_LLAMA_WEIGHTS=official" in untrained and "HF_TOKEN" in untrained
    assert "EMOTION_LLAMA_CHECKPOINT" in untrained
    trained = engine_banner({"weights": "tiny", "device": "cpu", "dtype": "float32"})
    assert "synthetic" in trained and "model_card" in trained and "mean nothing" in trained
    assert "official weights" in engine_banner({"weights": "official", "device": "cuda", "dtype": "float16"})


def test_upload_store_deletes_only_its_uploads(tmp_path):
    from emotion_llama.ui import UploadStore

    root = tmp_path / "gradio"
    kept, upload, outside = root / "a" / "example.mp4", root / "b" / "clip.mp4", tmp_path / "mine.mp4"
    for path, content in ((kept, b"example"), (upload, b"upload"), (outside, b"upload")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    example_source = tmp_path / "examples" / "example.mp4"
    example_source.parent.mkdir()
    example_source.write_bytes(b"example")
    store = UploadStore(root, keep=[example_source])
    for path in (kept, upload, outside):
        store.acquire(str(path))
    store.acquire(str(upload))
    store.release(str(upload))
    assert upload.exists(), "a second request still uses it"
    for path in (kept, upload, outside):
        store.release(str(path))
    assert not upload.exists() and not upload.parent.exists()
    assert kept.exists() and outside.exists()


def test_a_replaced_upload_is_deleted_unless_a_request_uses_or_holds_it(tmp_path):
    from emotion_llama.ui import UploadStore

    root = tmp_path / "gradio"
    names = ("replaced", "in_use", "held", "example")
    files = {name: root / name / "clip.mp4" for name in names}
    for name, path in files.items():
        path.parent.mkdir(parents=True)
        path.write_bytes(name.encode())
    (tmp_path / "example.mp4").write_bytes(b"example")
    outside = tmp_path / "mine.mp4"
    outside.write_bytes(b"mine")
    store = UploadStore(root, keep=[tmp_path / "example.mp4"])
    store.acquire(str(files["in_use"]))
    store.hold(str(files["held"]), 60)
    deleted = {name: store.discard(str(path)) for name, path in files.items()}
    assert deleted == {"replaced": True, "in_use": False, "held": False, "example": False}
    assert not files["replaced"].parent.exists()
    assert all(files[name].exists() for name in names[1:])
    assert not store.discard(str(outside)) and outside.exists()
    assert not store.discard(None)
    store.release(str(files["in_use"]))
    assert not files["in_use"].exists(), "its request ended, so it goes as before"


def test_an_upload_over_the_size_limit_is_refused(engine, gradio_temp, tmp_path, monkeypatch):
    from gradio_client import Client, handle_file

    import app

    monkeypatch.setattr(app, "MAX_UPLOAD_MB", 1)
    demo = app.build_demo(engine)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_port=free_port(), quiet=True)
    try:
        big = tmp_path / "big.mp4"
        big.write_bytes(np.random.default_rng(0).bytes(2 * 1024 * 1024))
        with pytest.raises(Exception, match="exceeds the maximum file size"):
            Client(url, verbose=False).predict(video=handle_file(str(big)), api_name="/analyze", **FAST)
        # The server refuses it too, whatever the client checks.
        with big.open("rb") as handle:
            response = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.mp4", handle, "video/mp4")})
        assert response.status_code == 413
        assert [path for path in files_under(gradio_temp) if path.name == "big.mp4"] == []
    finally:
        demo.close()


ODD_AND_BAD = [
    "zero_bytes.mp4", "truncated.mp4", "text_renamed.mp4", "png_renamed.mp4", "audio_only.mp4", "audio_only.m4a",
    "face_no_audio.mp4", "no_face.mp4", "short_0.2s.mp4", "long_10min.mp4", "uhd_4k.mp4", "vp9.webm", "clip.mov",
    "clip.mkv", "clip.avi", "variable_frame_rate.mp4", "rotated_face.mp4", "unknown_codec.avi",
]


def test_every_bad_or_odd_input_gets_a_result_or_a_readable_message(client, clips, media):
    """The media issue's list, uploaded to the running app: never a generic failure, and
    the app keeps serving afterwards."""
    from gradio_client.exceptions import AppError

    import app

    outcomes = {}
    for name in ODD_AND_BAD:
        try:
            result = analyze(client, media[name])
        except AppError as error:
            message = str(error)
            assert message and message != app.GENERIC_FAILURE and "Traceback" not in message, (name, message)
            outcomes[name] = "error"
        else:
            assert set(result["probabilities"]) == set(MERR_LABELS), name
            outcomes[name] = "result"
    assert outcomes["zero_bytes.mp4"] == outcomes["text_renamed.mp4"] == outcomes["audio_only.mp4"] == "error"
    assert outcomes["face_no_audio.mp4"] == outcomes["no_face.mp4"] == outcomes["vp9.webm"] == "result"
    assert set(analyze(client, clips["still"])["probabilities"]) == set(MERR_LABELS)


# -- a public demo: one concurrency budget, cancellation, hostile text (issue 13) ----------------
MODEL_HANDLERS = {"analyze", "analyze_api", "chat", "chat_api"}


def test_every_event_that_runs_the_model_shares_one_concurrency_budget(engine, gradio_temp):
    import app

    demo = app.build_demo(engine)
    model_events = [fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") in MODEL_HANDLERS]
    assert len(model_events) == 2 + 1 + 1 + len(app.TAGGED_TASKS) + 1  # Analyze, /analyze, Send, Enter, buttons, /chat
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in model_events} == {("model", app.CONCURRENCY)}
    demo.close()


def test_at_most_the_budget_of_requests_run_the_model_at_once_across_endpoints(engine, gradio_temp, clips,
                                                                               monkeypatch):
    import threading
    import time
    from contextlib import contextmanager

    from gradio_client import Client, handle_file

    import app
    from emotion_llama.ui.uploads import UploadStore

    running, peak, lock = [0], [0], threading.Lock()
    real_using = UploadStore.using

    @contextmanager
    def counted(self, path):  # every handler runs inside ``UploadStore.using``
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.5)  # long enough for every admitted request to overlap
            with real_using(self, path):
                yield
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(UploadStore, "using", counted)
    monkeypatch.setenv("EMOTION_LLAMA_PER_VISITOR", "8")  # six requests from one client, on purpose
    demo = app.build_demo(engine)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_port=free_port(), quiet=True)
    try:
        client = Client(url, verbose=False)
        video = handle_file(str(clips["face"]))
        jobs = [client.submit(video=video, api_name="/analyze", **FAST) for _ in range(3)]
        jobs += [client.submit(video=video, message="Why?", task="free", api_name="/chat", **FAST) for _ in range(3)]
        for job in jobs:
            job.result(timeout=300)
    finally:
        demo.close()
    assert peak[0] == app.CONCURRENCY


def test_closing_a_1500_token_chat_stream_frees_the_model_within_a_second(client, clips, engine, monkeypatch):
    import time

    from gradio_client import handle_file

    from emotion_llama.ui import forms
    from emotion_llama.vocab import GenerationSettings

    # A reply that cannot end early: 1,500 tokens (more than the form offers), no end-of-answer before.
    monkeypatch.setattr(forms, "generation_from_form", lambda temperature, tokens: GenerationSettings(
        do_sample=False, max_new_tokens=1500, min_new_tokens=1500))
    job = client.submit(video=handle_file(str(clips["face"])), message="Tell me everything.", task="free",
                        max_new_tokens=1000, temperature=0.0, api_name="/chat")
    deadline = time.monotonic() + 120
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.outputs(), f"the reply should have started streaming ({job.exception()})"
    job.cancel()
    closed = time.monotonic()
    assert engine.model.lock.acquire(timeout=5)
    freed = time.monotonic() - closed
    engine.model.lock.release()
    assert freed < 1.0, f"the model was busy {freed:.2f} s after the stream was closed"
    assert len(job.outputs()[-1]) < 1000, "generation went on after the stream was closed"


@pytest.mark.parametrize("field", ["subtitle", "question", "custom_labels"])
def test_hostile_text_gets_a_readable_refusal(client, clips, field):
    from gradio_client.exceptions import AppError

    import app

    words = " ".join(["surely"] * 2500)
    values = {"subtitle": words, "question": words, "custom_labels": ", ".join([" ".join(["calm"] * 60)] * 32)}
    extra = {"task": "free"} if field == "question" else {"label_set": "custom"} if field == "custom_labels" else {}
    with pytest.raises(AppError) as refused:
        analyze(client, clips["face"], **{field: values[field]}, **extra)
    assert "EMOTION_LLAMA_MAX_" in str(refused.value) and str(refused.value) != app.GENERIC_FAILURE


def test_an_upload_no_request_uses_is_deleted_after_the_stated_time(engine, gradio_temp, clips, monkeypatch):
    import time

    import app

    monkeypatch.setenv("EMOTION_LLAMA_UNUSED_UPLOAD", "2")
    demo = app.build_demo(engine)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_port=free_port(), quiet=True)
    try:
        note = next(block.value for block in demo.blocks.values() if block.elem_id == "responsible-use")
        assert "within 4 seconds" in note and "for 15 minutes after its last use" in note
        with clips["still"].open("rb") as handle:
            response = httpx.post(f"{url}gradio_api/upload", files={"files": ("never_used.mp4", handle, "video/mp4")})
        started = time.monotonic()
        uploaded = Path(response.json()[0])
        assert uploaded.is_file()
        deadline = time.monotonic() + 10
        while uploaded.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not uploaded.exists(), "an upload no request used outlived the time the page states"
        assert time.monotonic() - started <= 4 + 1.5  # the promise, and slack for a busy machine
    finally:
        demo.close()


def test_timeline_and_person_through_the_api(client, clips):
    """``/timeline`` returns the timeline JSON; ``/analyze`` reads the person asked for."""
    from gradio_client import handle_file

    timeline = client.predict(video=handle_file(str(clips["long"])), label_set="merr", api_name="/timeline")
    segments = timeline["segments"]
    assert len(segments) >= 10 and segments[0]["start"] == 0.0
    assert all(2.0 - 1e-6 <= s["end"] - s["start"] <= 8.0 + 1e-6 for s in segments[:-1])
    assert abs(segments[-1]["end"] - timeline["duration"]) < 0.1
    two = handle_file(str(ROOT / "examples" / "two_people.mp4"))
    first, second = (client.predict(video=two, task="emotion", person=n, api_name="/analyze") for n in (0, 1))
    assert (first["person"], second["person"], len(first["people"])) == (0, 1, 2)
    assert first["people"][0]["box"][0] < first["people"][1]["box"][0]  # person 1 on the left, person 2 on the right
    with pytest.raises(Exception, match="there is no person 5"):
        client.predict(video=two, task="emotion", person=5, api_name="/analyze")
