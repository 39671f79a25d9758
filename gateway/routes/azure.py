"""Azure OpenAI's inbound surface: ``/openai/deployments/{deployment}/`` + ``chat/completions``,
``embeddings`` and ``completions``.

So that ``openai.AzureOpenAI(azure_endpoint=<gateway>, api_key=<gateway key>, api_version=...)`` works against
the gateway unchanged: the deployment in the path is the gateway's model alias (it wins over any ``model``
in the body, as on Azure), ``?api-version=`` is required as on Azure and otherwise not interpreted (the
answer is the gateway's OpenAI format, which every api-version's client reads), and the key may come in
Azure's ``api-key`` header (gateway/auth.py). Behind the door it is the same library function as the
``/v1`` route, so every stage applies and base64 embeddings come from gateway/embedding_format.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import invalid_request
from gateway.routes.completions import answer_completion
from gateway.routes.openai import answer_chat, answer_embeddings, begin, read_body
from gateway.schema import parse_json_object

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.pipeline import KeyIdentity
    from gateway.runtime import Runtime

PREFIX = "/openai/deployments/{deployment}"

Answer = Callable[[Request, "Runtime", "KeyIdentity", dict[str, Any]], Awaitable[Response]]


def add_routes(app: FastAPI, gateway: Gateway) -> None:
    """Register the Azure-style deployment endpoints serving ``gateway``."""

    def deployment_route(answer: Answer) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            runtime, key = await begin(gateway, request)
            if not request.query_params.get("api-version"):
                raise invalid_request(
                    "Missing required query parameter 'api-version' (Azure OpenAI's, e.g. 2024-10-21).",
                    param="api-version",
                )
            body = parse_json_object(await read_body(request, runtime.max_body_bytes))
            body["model"] = request.path_params["deployment"]
            return await answer(request, runtime, key, body)

        return endpoint

    async def chat(request: Request, runtime: Runtime, key: KeyIdentity, body: dict[str, Any]) -> Response:
        return await answer_chat(gateway, request, runtime, key, body)

    async def completion(
        request: Request, runtime: Runtime, key: KeyIdentity, body: dict[str, Any]
    ) -> Response:
        return await answer_completion(gateway, request, runtime, key, body)

    for path, answer in (
        ("/chat/completions", chat),
        ("/embeddings", answer_embeddings),
        ("/completions", completion),
    ):
        app.add_route(PREFIX + path, deployment_route(answer), methods=["POST"], include_in_schema=False)
