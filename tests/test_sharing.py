"""Sharing with a team: logins, the share link's wiring, fairness between visitors, and the
health report. The servers here run on loopback; a share link needs the internet, which
the tests do not have, so only its wiring is checked."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from emotion_llama.errors import ConfigError
from emotion_llama.ui import sharing

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "happy.mp4"
QUICK = {"task": "emotion", "max_new_tokens": 4, "temperature": 0.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_logins_come_from_the_flags_and_the_file_and_a_bad_one_is_refused_unechoed(tmp_path, monkeypatch):
    file = tmp_path / "logins.txt"
    file.write_text("# the team\nbob:pa:ss word\n\n")
    monkeypatch.setenv(sharing.AUTH_FILE_ENV, str(file))
    assert sharing.logins(["alice:secret"]) == [("alice", "secret"), ("bob", "pa:ss word")]
    with pytest.raises(ConfigError) as refused:
        sharing.logins(["alice:secret", "carol-no-colon-hunter2"])
    assert "login 2" in str(refused.value) and "hunter2" not in str(refused.value)
    monkeypatch.delenv(sharing.AUTH_FILE_ENV)
    assert sharing.logins(None) is None


def test_share_reaches_gradio_launch(monkeypatch):
    """``--share`` asks Gradio for its share link (the tunnel itself needs the internet)."""
    import gradio as gr

    import app
    from emotion_llama.pipeline import Engine, random_tiny_model

    seen = {}
    monkeypatch.setattr(app, "load_engine", lambda: Engine(random_tiny_model(), {"weights": "tiny (random)"}))
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: seen.update(kwargs) or (None, "", None))
    monkeypatch.setattr(gr.Blocks, "app", type("FakeApp", (), {"add_api_route": lambda *a, **k: None})(),
                        raising=False)
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)
    app.main(["--share", "--auth", "alice:secret"])
    assert seen["share"] is True and seen["auth"] == [("alice", "secret")]
    assert "share link" in app.render.reach_note(True, None, True)
    assert app.render.reach_note(False, "127.0.0.1", False) is None


@pytest.fixture(scope="module")
def signed_in_server(tmp_path_factory):
    """``python app.py --auth alice:secret`` on loopback, with the shipped model."""
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("gradio")), "EMOTION_LLAMA_PER_VISITOR": "2"}
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--auth", "alice:secret"], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            if httpx.get(url + "health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("the server did not start: " + server.stderr.read()[-2000:])
    yield url
    server.terminate()
    server.wait(timeout=30)


def test_with_a_login_the_page_asks_for_it_and_the_api_needs_it(signed_in_server):
    from gradio_client import Client, handle_file

    config = httpx.get(signed_in_server + "config", timeout=10)  # what the page reads first: it shows a login
    assert config.status_code == 401 and "Sign in with the user name" in config.json()["detail"]["auth_message"]
    assert httpx.post(signed_in_server + "login", data={"username": "alice", "password": "wrong"}).status_code == 400
    assert httpx.post(signed_in_server + "login", data={"username": "alice", "password": "secret"}).status_code == 200
    with pytest.raises(Exception):  # noqa: B017 - gradio_client's error type varies by refusal
        Client(signed_in_server, verbose=False)
    with pytest.raises(Exception):  # noqa: B017
        Client(signed_in_server, auth=("alice", "wrong"), verbose=False)
    client = Client(signed_in_server, auth=("alice", "secret"), verbose=False)
    result = client.predict(video=handle_file(str(EXAMPLE)), api_name="/analyze", **QUICK)
    assert result["label"] in result["probabilities"]


def test_one_client_gets_two_slots_and_readable_refusals_while_another_still_gets_in(signed_in_server):
    from gradio_client import Client, handle_file

    greedy, other = (Client(signed_in_server, auth=("alice", "secret"), verbose=False) for _ in range(2))
    clip = handle_file(str(EXAMPLE))

    def ask(client, task):
        started = time.perf_counter()
        try:
            client.predict(video=clip, api_name="/analyze", **{**QUICK, "task": task, "max_new_tokens": 200})
            return "done", time.perf_counter() - started
        except Exception as error:  # noqa: BLE001 - the refusal's text is what is checked
            return str(error), time.perf_counter() - started

    with ThreadPoolExecutor(11) as pool:
        burst = [pool.submit(ask, greedy, "reason") for _ in range(10)]
        time.sleep(1.0)
        second = pool.submit(ask, other, "emotion")
        outcomes = [job.result()[0] for job in burst]
        second_outcome, second_wait = second.result()
    refusals = [o for o in outcomes if o != "done"]
    assert outcomes.count("done") == 2 and len(refusals) == 8, outcomes
    assert all("already have 2 requests waiting or running" in o for o in refusals), refusals[:2]
    assert second_outcome == "done"
    print(f"second visitor waited {second_wait:.1f} s behind the first visitor's 2 requests")
    health = httpx.get(signed_in_server + "health", timeout=5).json()
    assert health["requests_refused"] >= 8


def test_the_health_report_counts_and_holds_nothing_of_any_request(signed_in_server):
    from gradio_client import Client, handle_file

    client = Client(signed_in_server, auth=("alice", "secret"), verbose=False)
    secret_words = "zebra violin forty-two"
    client.predict(video=handle_file(str(EXAMPLE)), subtitle=secret_words, api_name="/analyze", **QUICK)
    bad = ROOT / "README.md"
    with pytest.raises(Exception):  # noqa: B017
        client.predict(video=handle_file(str(bad)), api_name="/analyze", **QUICK)
    response = httpx.get(signed_in_server + "health", timeout=5)
    report = response.json()
    assert {"weights", "device", "queue_length", "requests_served", "requests_refused", "errors_by_kind"} <= set(report)
    assert report["requests_served"] >= 1 and sum(report["errors_by_kind"].values()) >= 1
    assert "zebra" not in response.text and "README" not in response.text and "alice" not in response.text


def test_behind_one_trusted_proxy_a_visitor_is_also_their_address(monkeypatch):
    from types import SimpleNamespace

    request = SimpleNamespace(headers={"x-forwarded-for": "203.0.113.9, 198.51.100.7"})  # a claim, then the proxy's
    assert sharing.visitor_keys("abc", request, trust_proxy=False) == {("session", "abc")}
    assert sharing.visitor_keys("abc", request, trust_proxy=True) == {("session", "abc"), ("address", "198.51.100.7")}
    monkeypatch.delenv(sharing.TRUSTED_PROXY_ENV, raising=False)
    monkeypatch.setenv("SPACE_ID", "user/emotion-llama")
    assert sharing.behind_proxy()
    monkeypatch.setenv(sharing.TRUSTED_PROXY_ENV, "0")
    assert not sharing.behind_proxy()
