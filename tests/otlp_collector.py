"""In-process OTLP trace receivers on loopback, for tests in any folder: one per protocol.

``http_collector()`` answers POST /v1/traces with protobuf bodies (OTLP/HTTP); ``grpc_collector()`` is a
``grpc.aio`` server implementing the collector's ``TraceService`` (OTLP/gRPC). Both decode every export
into an ``ExportTraceServiceRequest`` and keep it with the request's headers (gRPC metadata), so a test
reads what a real collector would have received.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
    TraceServiceServicer,
    add_TraceServiceServicer_to_server,
)

STOP_SECONDS = 10


@dataclass
class Collector:
    """A running receiver: its base URL and every export it received, in order."""

    url: str
    exports: list[tuple[dict[str, str], ExportTraceServiceRequest]] = field(default_factory=list)


class _HttpHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        collector: Collector = self.server.collector  # type: ignore[attr-defined]
        if self.path == "/v1/traces" and self.headers.get("content-type") == "application/x-protobuf":
            headers = {name.lower(): value for name, value in self.headers.items()}
            collector.exports.append((headers, ExportTraceServiceRequest.FromString(body)))
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
        else:
            reply = b""
            self.send_response(404)
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest treats stray output as noise


@contextmanager
def http_collector() -> Iterator[Collector]:
    """An OTLP/HTTP receiver on a free loopback port until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HttpHandler)
    collector = Collector(f"http://127.0.0.1:{server.server_port}")
    server.collector = collector  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_SECONDS)


class _TraceService(TraceServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    # The method's name is the gRPC service's (TraceService/Export).
    async def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
        metadata = {str(key): str(value) for key, value in context.invocation_metadata() or ()}
        self.collector.exports.append((metadata, request))
        return ExportTraceServiceResponse()


@contextmanager
def grpc_collector() -> Iterator[Collector]:
    """An OTLP/gRPC receiver (plaintext) on a free loopback port until the block ends.

    The server lives and dies inside its own thread's event loop (`asyncio.run`): the block's end only sets an
    event, and the thread stops the server and lets `asyncio.run` close the loop, so nothing of grpc's is
    left pending on a closed loop for the garbage collector to trip over during a later test.
    """
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        done = asyncio.Event()
        box["loop"], box["done"] = asyncio.get_running_loop(), done
        server = grpc.aio.server()
        box["collector"] = Collector("")
        add_TraceServiceServicer_to_server(_TraceService(box["collector"]), server)
        port = server.add_insecure_port("127.0.0.1:0")
        box["collector"].url = f"http://127.0.0.1:{port}"
        await server.start()
        ready.set()
        try:
            await done.wait()
        finally:
            await server.stop(None)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        if not ready.wait(timeout=STOP_SECONDS * 3):
            raise RuntimeError("the gRPC collector did not start")
        yield box["collector"]
    finally:
        if "loop" in box:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                box["loop"].call_soon_threadsafe(box["done"].set)
        # What the tests check was received before this point: a stop slowed by a busy machine must not fail
        # them, and the thread is a daemon, so it cannot outlive the run.
        thread.join(timeout=STOP_SECONDS * 3)
