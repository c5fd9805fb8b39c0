"""A loopback stand-in for Gemini's generateContent endpoint (what google-genai speaks).

Each request pops the next scripted reply (status, body or a delay); with the
script empty it answers ``default``. Every request body is kept for asserts.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer(cells: list[dict], input_tokens: int = 1000, output_tokens: int = 50, text: str | None = None) -> tuple[int, dict]:
    body = {"candidates": [{"content": {"role": "model", "parts": [{"text": text if text is not None else json.dumps({"cells": cells})}]},
                            "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": input_tokens, "candidatesTokenCount": output_tokens,
                              "totalTokenCount": input_tokens + output_tokens}}
    return 200, body


def error(code: int, status: str) -> tuple[int, dict]:
    return code, {"error": {"code": code, "message": status.lower().replace("_", " "), "status": status}}


class FakeGemini:
    def __init__(self, default: tuple[int, dict] | None = None) -> None:
        self.script: list = []
        self.default = default or answer([])
        self.requests: list[dict] = []
        self.paths: list[str] = []
        self.keys: list[str | None] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                fake.requests.append(json.loads(self.rfile.read(n) or b"{}"))
                fake.paths.append(self.path)
                fake.keys.append(self.headers.get("x-goog-api-key"))
                reply = fake.script.pop(0) if fake.script else fake.default
                if isinstance(reply, float):  # a delay longer than the client's timeout
                    time.sleep(reply)
                    reply = fake.default
                status, body = reply
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> FakeGemini:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
