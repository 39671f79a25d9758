"""The benchmark upstream: nginx answering a fixed chat completion and a 200-chunk SSE stream.

nginx is the fastest upstream available here (about 130,000 requests/s on one core), so what the benchmark
measures is the system in front of it. It runs as a non-daemon child of the benchmark with its own prefix,
pid and log paths in a temporary folder, so it needs no root and leaves nothing behind.

Routes (any method, any body, any key):

- ``/v1/chat/completions`` -> the fixed JSON completion (with usage, so budgets can price it);
- ``/sse/v1/chat/completions`` -> ``STREAM_CHUNKS`` content chunks, a usage chunk and ``data: [DONE]``;
- ``/v1/models``, ``/ready``, ``/health`` -> small JSON.

Streaming is a separate path because nginx cannot look inside a request body for ``"stream": true``: the
systems under test route a second model (``bench-stream``) to the ``/sse/v1`` base URL.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

MODEL = "bench"
STREAM_MODEL = "bench-stream"
STREAM_CHUNKS = 200
CREATED = 1764115200
REPLY = "The quick brown fox jumps over the lazy dog while the gateway forwards every byte."


def chat_body() -> bytes:
    """The fixed non-streaming answer."""
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": REPLY},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 18, "total_tokens": 30},
        },
        separators=(",", ":"),
    ).encode()


def stream_body(chunks: int = STREAM_CHUNKS) -> bytes:
    """``chunks`` content chunks (the last one with ``finish_reason``), a usage chunk, then ``[DONE]``."""
    words = REPLY.split()
    events = []
    for i in range(chunks):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": " " + words[i % len(words)]}
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if i == chunks - 1 else None}],
        }
        events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    usage = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks},
    }
    events.append(b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


CONF = """daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = /v1/chat/completions {{
            default_type application/json;
            alias {tmp}/chat.json;
            error_page 405 =200 /static/chat.json;
        }}
        location = /sse/v1/chat/completions {{
            default_type text/event-stream;
            alias {tmp}/stream.sse;
            error_page 405 =200 /static/stream.sse;
        }}
        location /static/ {{
            internal;
            alias {tmp}/;
            types {{ application/json json; text/event-stream sse; }}
        }}
        location ~ ^/(sse/)?v1/models$ {{
            default_type application/json;
            return 200 '{{"object":"list","data":[{{"id":"{model}","object":"model","owned_by":"bench"}}]}}';
        }}
        location ~ ^/(ready|health)$ {{
            default_type application/json;
            return 200 '{{"status":"ok"}}';
        }}
    }}
}}
"""


class Nginx:
    """One nginx process serving the fixed answers on ``127.0.0.1:port``; use as a context manager."""

    def __init__(self, port: int, cpu: int | None = None) -> None:
        self.port = port
        self.cpu = cpu
        self.url = f"http://127.0.0.1:{port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        # Started as root, nginx's workers run as nobody: they must be able to read the answers.
        self.tmp.chmod(0o755)
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        """True when an ``nginx`` binary is on the PATH (or in /usr/sbin)."""
        return binary() is not None

    def command(self) -> list[str]:
        """The command line (with ``taskset`` when pinned)."""
        exe = binary()
        assert exe is not None
        conf = self.tmp / "nginx.conf"
        # -e (nginx >= 1.19.5) keeps start-up messages out of /var/log/nginx, which may not be writable.
        cmd = [exe, "-p", str(self.tmp), "-c", str(conf), "-e", str(self.tmp / "error.log")]
        if self.cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        return cmd

    def start(self, timeout: float = 10.0) -> float:
        """Write the files, start nginx and wait until it answers; returns the seconds that took."""
        (self.tmp / "chat.json").write_bytes(chat_body())
        (self.tmp / "stream.sse").write_bytes(stream_body())
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.tmp / sub).mkdir(exist_ok=True)
        (self.tmp / "nginx.conf").write_text(CONF.format(tmp=self.tmp, port=self.port, model=MODEL))
        started = time.perf_counter()
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return wait_ready(f"{self.url}/ready", started, timeout, self.process)

    def stop(self) -> None:
        """Stop nginx (SIGTERM, then SIGKILL) and remove its folder."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Nginx:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def binary() -> str | None:
    """The nginx executable, if installed."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )


def wait_ready(url: str, started: float, timeout: float, process: subprocess.Popen[bytes]) -> float:
    """Poll ``url`` every 5 ms until it answers 200; seconds since ``started``. Raises if the process dies."""
    deadline = started + timeout
    with httpx.Client(timeout=1.0) as client:
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RuntimeError(f"server exited with {process.returncode} before ready: {err[-2000:]}")
            try:
                if client.get(url).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate ``process`` and wait for it, killing it if it does not stop in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
