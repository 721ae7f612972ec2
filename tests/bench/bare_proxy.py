"""The peer of the relay-cost benchmark: a bare pass-through proxy for Ollama's `/api/chat`.

No authentication, no database, no queue, no records: one Starlette route that sends the body
on to the upstream named by `BARE_PROXY_UPSTREAM` with httpx and relays the streamed response
chunk by chunk. It runs under the same ASGI server as the app, as its own process:

    BARE_PROXY_UPSTREAM=http://127.0.0.1:11434 daphne -p 8001 tests.bench.bare_proxy:app

This is what "relaying tokens" costs at the least in Python on this server; the gateway's CPU
per token is compared with it (tests.bench.relay_cost).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ.get("BARE_PROXY_UPSTREAM", "http://127.0.0.1:11434")

_client: httpx.AsyncClient | None = None


def client() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(
            base_url=UPSTREAM,
            timeout=httpx.Timeout(300.0, connect=5.0),
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=1024),
            trust_env=False,
        )
    return _client


async def chat(request: Request) -> Response:
    body = await request.body()
    upstream = client().build_request(
        "POST", "/api/chat", content=body, headers={"Content-Type": "application/json"}
    )
    response = await client().send(upstream, stream=True)

    async def relay() -> AsyncIterator[bytes]:
        async for chunk in response.aiter_raw():
            yield chunk

    return StreamingResponse(
        relay(),
        status_code=response.status_code,
        media_type=response.headers.get("content-type", "application/x-ndjson"),
        background=BackgroundTask(response.aclose),
    )


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/api/chat", chat, methods=["POST"]), Route("/health", health)])
