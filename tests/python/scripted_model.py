"""A scripted OpenAI-compatible chat model, for testing Cairn from the outside.

Cairn talks to it as to any OpenAI-compatible server (`CAIRN_MODEL_PROVIDER=openai`);
each request to `POST /v1/chat/completions` is answered by the next step of a script the
test pushed, so what "the model" says is exactly what the test expects. A step is a
function of the request body (so it can pick a tool among those Cairn offered) that
returns an answer: `text(...)` or `tool_call(...)`. Answers are sent whole, or as
server-sent events in OpenAI's delta format when the request says `"stream": true`.
Every request body is recorded. With no step left, it answers 500 naming the request,
which fails the test loudly instead of hanging it.

Run as a program (`python scripted_model.py`), it prints its base URL and answers every
request with the same short text until it is stopped: a fast, deterministic model for
tests that exercise the API rather than the model (scripts/test-api's schemathesis run).

This mirrors `server/model/scripted` (the Rust test server), in Python so a pytest test
can script it in-process.
"""

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def text(content):
    """An answer with this text (`finish_reason: stop`)."""
    return lambda request: {"content": content, "tool_calls": []}


def tool_call(name, arguments, call_id="call_scripted_1"):
    """An answer calling one tool (`finish_reason: tool_calls`). `name` may be a function
    of the request (to pick among the offered tools)."""

    def answer(request):
        chosen = name(request) if callable(name) else name
        return {
            "content": None,
            "tool_calls": [{"id": call_id, "name": chosen, "arguments": json.dumps(arguments)}],
        }

    return answer


def offered_tools(request):
    """The function names a chat completions request offers."""
    return [t["function"]["name"] for t in request.get("tools") or []]


class ScriptedModel:
    """`with ScriptedModel() as model:` serves on a free loopback port; `model.url` is the
    base URL (`http://127.0.0.1:PORT/v1`)."""

    def __init__(self, default=None):
        self.default = default
        self.script = deque()
        self.requests = []
        self._lock = threading.Lock()
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                with model._lock:
                    model.requests.append(body)
                    number = len(model.requests)
                    step = model.script.popleft() if model.script else model.default
                if step is None:
                    message = f"the scripted model has no step left for request {number}: {json.dumps(body)[:500]}"
                    return self._send(500, {"error": {"message": message, "type": "scripted"}})
                answer = step(body)
                if body.get("stream"):
                    self._stream(number, body, answer)
                else:
                    self._send(200, complete(number, body, answer))

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, number, body, answer):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                for chunk in chunks(number, body, answer):
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def push(self, *steps):
        """Appends steps to the script."""
        with self._lock:
            self.script.extend(steps)

    def remaining(self):
        with self._lock:
            return len(self.script)

    def reset(self):
        with self._lock:
            self.script.clear()
            self.requests.clear()


def _message(answer):
    message = {"role": "assistant", "content": answer["content"]}
    if answer["tool_calls"]:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in answer["tool_calls"]
        ]
    return message


def _finish(answer):
    return "tool_calls" if answer["tool_calls"] else "stop"


def complete(number, body, answer):
    return {
        "id": f"chatcmpl-scripted-{number}",
        "object": "chat.completion",
        "created": 0,
        "model": body.get("model", "scripted"),
        "choices": [{"index": 0, "message": _message(answer), "finish_reason": _finish(answer)}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def chunks(number, body, answer):
    base = {
        "id": f"chatcmpl-scripted-{number}",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": body.get("model", "scripted"),
    }
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
    content = answer["content"] or ""
    for i in range(0, len(content), 4):
        yield {**base, "choices": [{"index": 0, "delta": {"content": content[i : i + 4]}, "finish_reason": None}]}
    for index, call in enumerate(answer["tool_calls"]):
        yield {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["name"], "arguments": call["arguments"]},
                            }
                        ]
                    },
                    "finish_reason": None,
                }
            ],
        }
    yield {
        **base,
        "choices": [{"index": 0, "delta": {}, "finish_reason": _finish(answer)}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


if __name__ == "__main__":
    import signal
    import sys

    with ScriptedModel(default=text("Scripted answer.")) as served:
        print(served.url, flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        signal.pause()
