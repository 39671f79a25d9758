"""The official ``openai`` npm client (pinned in tests/clients/node/package-lock.json) against the gateway on
loopback with the mock provider: chat, streaming, the default ``embeddings.create`` (which asks for base64
and decodes it itself), legacy ``completions.create``, the Responses API (``responses.create``, ``stream``,
``parse``) and an error.

scripts/test installs node and the client (``npm ci``). Like the browser tests, these skip locally when node
or the installed client is missing, and fail in CI (``CI`` set), where a missing one is a broken setup.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_testing import KEY, TEST_CONFIG, auth, run_server

from gateway.app import create_app
from gateway.config import parse_config

CLIENT_DIR = Path(__file__).resolve().parent.parent / "clients" / "node"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    problem = None
    if path is None:
        problem = "node is not installed"
    elif not (CLIENT_DIR / "node_modules" / "openai" / "package.json").is_file():
        problem = f"the openai npm client is not installed (run npm ci in {CLIENT_DIR})"
    if problem is not None:
        if in_ci():
            pytest.fail(f"{problem}; in CI the node client tests must run, not skip", pytrace=False)
        pytest.skip(problem)
    assert path is not None
    return path


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with run_server(create_app(parse_config(TEST_CONFIG))) as url:
        yield url


def run(node: str, base_url: str, scenario: str) -> dict[str, Any]:
    env = {**os.environ, "GATEWAY_URL": base_url, "GATEWAY_KEY": KEY}
    done = subprocess.run(
        [node, "client.mjs", scenario], cwd=CLIENT_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_installed_client_is_the_pinned_version(node: str) -> None:
    lock = json.loads((CLIENT_DIR / "package-lock.json").read_text())
    installed = json.loads((CLIENT_DIR / "node_modules" / "openai" / "package.json").read_text())
    assert installed["version"] == lock["packages"]["node_modules/openai"]["version"]


def test_chat(node: str, base_url: str) -> None:
    result = run(node, base_url, "chat")
    assert result["text"] == "hello from node"
    assert result["usage"]["completion_tokens"] > 0


def test_stream(node: str, base_url: str) -> None:
    result = run(node, base_url, "stream")
    assert result["text"] == "fixed answer"
    assert result["usage"]["total_tokens"] > 0


def test_default_embeddings_decode_base64_to_the_right_vectors(node: str, base_url: str) -> None:
    result = run(node, base_url, "embeddings")
    floats = httpx.post(
        f"{base_url}/v1/embeddings",
        headers=auth(),
        json={"model": "echo", "input": ["alpha", "beta"], "encoding_format": "float"},
    ).json()
    expected = [item["embedding"] for item in floats["data"]]
    assert [len(v) for v in result["vectors"]] == [16, 16]  # 4 when base64 was ignored (issue 14)
    for decoded, plain in zip(result["vectors"], expected, strict=True):
        assert decoded == pytest.approx(plain, abs=1e-6)  # float32 on the wire
    assert result["model"] == floats["model"] != ""


def test_completions(node: str, base_url: str) -> None:
    result = run(node, base_url, "completions")
    assert result == {"object": "text_completion", "text": "complete me"}


def test_errors_reach_the_client_typed(node: str, base_url: str) -> None:
    result = run(node, base_url, "error")
    assert result == {"status": 404, "code": "model_not_found", "name": "NotFoundError"}


def test_responses_create_and_retrieve(node: str, base_url: str) -> None:
    result = run(node, base_url, "responses")
    assert result["text"] == "hello from node responses" and result["status"] == "completed"
    assert result["retrieved"] == result["id"] and result["id"].startswith("resp_")
    assert result["usage"]["output_tokens"] > 0


def test_responses_stream_events_in_order(node: str, base_url: str) -> None:
    result = run(node, base_url, "responses_stream")
    types = result["types"]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert types.index("response.output_text.delta") < types.index("response.output_text.done")
    assert (result["text"], result["status"]) == ("fixed answer", "completed")


def test_responses_parse_answers_a_valid_instance(node: str, base_url: str) -> None:
    parsed = run(node, base_url, "responses_parse")["parsed"]
    assert set(parsed) == {"name", "population"}
    assert isinstance(parsed["name"], str) and isinstance(parsed["population"], int)
