"""`kairo-step smoke`: passes against the real server, fails with the status and body against a broken one."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kairo import exitcodes
from kairo.steps import smoke

# A tiny HTTP service: answer(path, headers, body) -> (status, JSON-able body).
Answer = Callable[[str, dict, dict], tuple[int, object]]
GOOD_CHAT = (200, {"Result": "Paris"})
GOOD_OPENAI = (200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}}]})


@contextlib.contextmanager
def service(answer: Answer) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 — http.server's name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            status, data = answer(self.path, dict(self.headers), body)
            raw = data.encode() if isinstance(data, str) else json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_smoke(url: str, tmp_path, *extra: str) -> int:
    return smoke.main(["--url", url, "--outputs", str(tmp_path / "out"), "--max-tokens", "4", *extra])


@pytest.mark.slow
def test_smoke_passes_against_the_server_and_prints_both_answers(adapter_server, tmp_path, capsys):
    assert run_smoke(adapter_server, tmp_path, "--model", "beta") == exitcodes.OK
    out = capsys.readouterr().out
    assert "POST /chat → " in out and "POST /v1/chat/completions → " in out
    chat_answer = (tmp_path / "out" / "chat-answer").read_text()
    assert chat_answer.startswith(smoke.DEFAULT_PROMPT)  # Kaito's return_full_text
    assert f"POST /chat → {chat_answer}" in out


def test_smoke_fails_with_the_status_and_body_when_chat_answers_500(tmp_path, capsys):
    with service(lambda path, headers, body: (500, {"detail": "Error during text generation"})) as url:
        assert run_smoke(url, tmp_path) == exitcodes.FAILED
    err = capsys.readouterr().err
    assert "POST /chat failed with HTTP 500" in err and "Error during text generation" in err
    assert not (tmp_path / "out" / "chat-answer").exists()


def test_smoke_fails_when_the_openai_endpoint_is_missing(tmp_path, capsys):
    def answer(path, headers, body):
        return GOOD_CHAT if path == "/chat" else (404, {"detail": "Not Found"})

    with service(answer) as url:
        assert run_smoke(url, tmp_path) == exitcodes.FAILED
    assert "POST /v1/chat/completions failed with HTTP 404: {\"detail\": \"Not Found\"}" in capsys.readouterr().err


def test_smoke_fails_on_a_200_without_an_answer(tmp_path, capsys):
    def answer(path, headers, body):
        return (200, {"Result": 42}) if path == "/chat" else GOOD_OPENAI

    with service(answer) as url:
        assert run_smoke(url, tmp_path) == exitcodes.FAILED
    assert 'POST /chat failed with HTTP 200: {"Result": 42}' in capsys.readouterr().err


def test_smoke_sends_kaitos_body_and_an_openai_chat_request(tmp_path):
    seen = {}

    def answer(path, headers, body):
        seen[path] = body
        return GOOD_CHAT if path == "/chat" else GOOD_OPENAI

    with service(answer) as url:
        assert run_smoke(url, tmp_path, "--prompt", "YOUR QUESTION HERE") == exitcodes.OK
    assert seen["/chat"] == {"prompt": "YOUR QUESTION HERE"}
    assert seen["/v1/chat/completions"]["messages"] == [{"role": "user", "content": "YOUR QUESTION HERE"}]


def test_smoke_sends_the_bearer_token_from_the_key_file(tmp_path, capsys):
    def answer(path, headers, body):
        if headers.get("Authorization") != "Bearer k3y":
            return 401, {"detail": "a valid API key is required"}
        return GOOD_CHAT if path == "/chat" else GOOD_OPENAI

    (tmp_path / "key").write_text("k3y\n")
    with service(answer) as url:
        assert run_smoke(url, tmp_path) == exitcodes.FAILED
        assert "HTTP 401" in capsys.readouterr().err
        assert run_smoke(url, tmp_path, "--api-key-file", str(tmp_path / "key")) == exitcodes.OK
    assert "k3y" not in capsys.readouterr().err


def test_smoke_waits_while_the_service_is_still_loading(tmp_path):
    calls = []

    def answer(path, headers, body):
        calls.append(path)
        if len(calls) < 3:
            return 503, {"detail": "the model is still loading"}
        return GOOD_CHAT if path == "/chat" else GOOD_OPENAI

    with service(answer) as url:
        assert run_smoke(url, tmp_path, "--wait", "30") == exitcodes.OK
    assert calls == ["/chat", "/chat", "/chat", "/v1/chat/completions"]


def test_smoke_exits_75_when_nothing_answers(tmp_path, capsys):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        assert run_smoke(f"http://127.0.0.1:{port}", tmp_path, "--wait", "0") == exitcodes.TRANSIENT
    assert "POST /chat: the service did not answer" in capsys.readouterr().err


def test_smoke_refuses_a_url_without_a_scheme(tmp_path, capsys):
    assert run_smoke("my-workspace.default.svc", tmp_path) == exitcodes.BAD_INPUT
    assert "give an http:// or https:// URL" in capsys.readouterr().err
