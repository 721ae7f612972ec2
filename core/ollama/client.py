"""An async client for Ollama's HTTP API (plain Python on httpx; no Django).

One `OllamaClient` wraps one pooled `httpx.AsyncClient`, which is bound to the event loop
that first uses it: use `get_client(base_url)` to get the cached client of the running loop.

Every failure is raised as a subclass of `core.ollama.errors.OllamaError`. Streams
(`chat`, `generate`, `pull`, `stream_raw`) close the upstream response as soon as they are
closed or their consumer is cancelled, which makes Ollama stop generating.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
import orjson

from core.ollama.aiohttp_transport import AiohttpTransport
from core.ollama.errors import (
    ModelNotFound,
    OllamaBadRequest,
    OllamaBusy,
    OllamaError,
    OllamaProtocolError,
    OllamaServerError,
    OllamaStreamError,
    OllamaTimeout,
    OllamaUnreachable,
    parse_missing_model,
)
from core.ollama.streams import RawStream, RawStreamOpener, ResponseStream
from core.ollama.types import (
    ChatChunk,
    EmbedResult,
    GenerateChunk,
    LocalModel,
    ModelShow,
    RunningModel,
    parse_ps,
)

T = TypeVar("T")

DEFAULT_PORT = 11434
Think = bool | Literal["low", "medium", "high"]
KeepAlive = float | int | str
Format = Literal["json"] | Mapping[str, Any]


def normalize_base_url(base_url: str) -> str:
    """`localhost:11434` -> `http://localhost:11434`; no trailing slash."""
    url = (base_url or "").strip() or f"http://127.0.0.1:{DEFAULT_PORT}"
    if "://" not in url:
        url = f"http://{url}"
    return url.rstrip("/")


def _error_message(status: int, content: bytes) -> str:
    text = content.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return text[:500] or f"HTTP {status}"


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _image(value: str | bytes) -> str:
    return base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(message)
    if out.get("images") is not None:
        out["images"] = [_image(i) for i in out["images"]]
    return out


class OllamaClient:
    """A pooled async client for one Ollama host.

    `http_client` picks the pooled HTTP transport: aiohttp's (`core.ollama.aiohttp_transport`)
    or httpx's own (httpcore); both fail with the same errors. `transport` replaces it (e.g.
    `httpx.MockTransport` in tests); the connection limits then do not apply. Images (chat
    messages' `images`, generate's `images`) may be given as base64 strings or raw bytes.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        write_timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 512,
        max_keepalive_connections: int = 32,
        http_client: Literal["httpx", "aiohttp"] | str = "aiohttp",
    ) -> None:
        self.base_url = normalize_base_url(base_url)
        self.host = self.base_url
        self.read_timeout = read_timeout
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=30.0,
        )
        if transport is None and http_client == "aiohttp":
            # aiohttp under httpx's API: less CPU per streamed chunk and per request than
            # httpcore and h11 (issue 16), failing with the same httpx exceptions.
            transport = AiohttpTransport(limits)
        if transport is None:
            transport = httpx.AsyncHTTPTransport(limits=limits)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=write_timeout, pool=read_timeout
            ),
            transport=transport,
            headers=dict(headers or {}),
            trust_env=False,  # a local Ollama must not be reached through HTTP(S)_PROXY
        )

    def __repr__(self) -> str:
        return f"OllamaClient({self.base_url!r})"

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> OllamaClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ error mapping

    def _transport_error(self, exc: httpx.HTTPError, started: bool) -> OllamaError:
        host = self.host
        if isinstance(exc, httpx.ConnectTimeout):
            return OllamaUnreachable(f"Timed out connecting to Ollama at {host}", host=host)
        if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol):
            detail = str(exc) or type(exc).__name__
            return OllamaUnreachable(f"Cannot connect to Ollama at {host}: {detail}", host=host)
        if isinstance(exc, httpx.TimeoutException):
            return OllamaTimeout(
                f"Ollama at {host} sent nothing for {self.read_timeout:g} s", host=host
            )
        if isinstance(exc, httpx.TransportError | httpx.DecodingError | httpx.StreamError):
            if started:
                message = f"The connection to Ollama at {host} dropped mid-stream"
            else:
                message = f"Ollama at {host} closed the connection without a complete response"
            detail = str(exc)
            return OllamaProtocolError(f"{message}: {detail}" if detail else message, host=host)
        return OllamaError(f"Error talking to Ollama at {host}: {exc}", host=host)

    def _status_error(
        self, status: int, content: bytes, headers: httpx.Headers, model: str | None
    ) -> OllamaError:
        host = self.host
        message = _error_message(status, content)
        if status == 404:
            missing = parse_missing_model(message)
            if missing is not None or model is not None:
                return ModelNotFound(message, host=host, status_code=status, model=missing or model)
        if status == 400:
            return OllamaBadRequest(message, host=host, status_code=status)
        if status == 503:
            return OllamaBusy(
                message, host=host, status_code=status, retry_after=_retry_after(headers)
            )
        return OllamaServerError(message, host=host, status_code=status)

    def _decode_line(self, line: str | bytes) -> dict[str, Any]:
        try:
            obj = orjson.loads(line)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            if isinstance(line, bytes):
                line = line.decode("utf-8", "replace")
            raise OllamaProtocolError(
                f"Ollama at {self.host} sent a malformed line: {line[:200]!r}", host=self.host
            )
        return obj

    # ------------------------------------------------------------------ request helpers

    async def _request_json(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        model: str | None = None,
    ) -> Any:
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, False) from exc
        if response.status_code >= 400:
            raise self._status_error(
                response.status_code, response.content, response.headers, model
            )
        if not response.content.strip():
            return None
        try:
            data = response.json()
        except ValueError as exc:
            raise OllamaProtocolError(
                f"Ollama at {self.host} sent invalid JSON: {response.text[:200]!r}",
                host=self.host,
                status_code=response.status_code,
            ) from exc
        if isinstance(data, dict) and data.get("error"):
            raise OllamaServerError(
                str(data["error"]), host=self.host, status_code=response.status_code
            )
        return data

    async def _stream(
        self,
        path: str,
        body: Mapping[str, Any],
        parse: Callable[[dict[str, Any]], T],
        *,
        model: str | None,
        is_final: Callable[[dict[str, Any]], bool] = lambda obj: obj.get("done") is True,
    ) -> AsyncGenerator[T, None]:
        """POST, then yield each NDJSON object parsed; the final one once the body has ended.

        The final object is held back until the response is complete, so the connection
        goes back to the pool even when the consumer stops right after it.
        """
        request = self._http.build_request("POST", path, json=body)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, False) from exc
        final: dict[str, Any] | None = None
        try:
            if response.status_code >= 400:
                try:
                    content = await response.aread()
                except httpx.HTTPError:
                    content = b""
                raise self._status_error(response.status_code, content, response.headers, model)
            try:
                # A network read often holds many lines (a fast model, a busy process): they
                # are split and parsed here in one loop, not one by one through httpx's text
                # and line decoders (issue 16: the relay's cost per token).
                buffer = b""
                async for data in response.aiter_bytes():
                    if final is not None:
                        continue
                    buffer += data
                    if b"\n" not in data:
                        continue
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if final is not None or not line.strip():
                            continue
                        obj = self._decode_line(line)
                        if "error" in obj:
                            raise OllamaStreamError(
                                str(obj["error"]), host=self.host, status_code=response.status_code
                            )
                        if is_final(obj):
                            final = obj
                            continue
                        yield parse(obj)
                if final is None and buffer.strip():  # a last line without its newline
                    obj = self._decode_line(buffer)
                    if "error" in obj:
                        raise OllamaStreamError(
                            str(obj["error"]), host=self.host, status_code=response.status_code
                        )
                    if is_final(obj):
                        final = obj
                    else:
                        yield parse(obj)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, True) from exc
            if final is None:
                raise OllamaProtocolError(
                    f"Ollama at {self.host} ended the stream before its final chunk",
                    host=self.host,
                    status_code=response.status_code,
                )
        finally:
            await response.aclose()
        yield parse(final)

    # ------------------------------------------------------------------ chat / generate

    @staticmethod
    def _chat_body(
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        stream: bool,
        options: Mapping[str, Any] | None,
        format: Format | None,
        keep_alive: KeepAlive | None,
        think: Think | None,
        tools: Sequence[Mapping[str, Any]] | None,
    ) -> dict[str, Any]:
        return _drop_none(
            model=model,
            messages=[_message(m) for m in messages],
            stream=stream,
            options=dict(options) if options is not None else None,
            format=format,
            keep_alive=keep_alive,
            think=think,
            tools=list(tools) if tools is not None else None,
        )

    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        options: Mapping[str, Any] | None = None,
        format: Format | None = None,
        keep_alive: KeepAlive | None = None,
        think: Think | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> ResponseStream[ChatChunk]:
        """Stream /api/chat: ChatChunks, the last with `done=True` and `timings`."""
        body = self._chat_body(
            model,
            messages,
            stream=True,
            options=options,
            format=format,
            keep_alive=keep_alive,
            think=think,
            tools=tools,
        )
        return ResponseStream(self._stream("/api/chat", body, ChatChunk.from_response, model=model))

    @staticmethod
    def _generate_body(
        model: str,
        prompt: str | None,
        *,
        stream: bool,
        system: str | None,
        images: Sequence[str | bytes] | None,
        options: Mapping[str, Any] | None,
        format: Format | None,
        keep_alive: KeepAlive | None,
        think: Think | None,
        context: Sequence[int] | None,
        raw: bool | None,
        suffix: str | None,
    ) -> dict[str, Any]:
        return _drop_none(
            model=model,
            prompt=prompt,
            suffix=suffix,
            system=system,
            images=[_image(i) for i in images] if images is not None else None,
            stream=stream,
            options=dict(options) if options is not None else None,
            format=format,
            keep_alive=keep_alive,
            think=think,
            context=list(context) if context is not None else None,
            raw=raw,
        )

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        system: str | None = None,
        images: Sequence[str | bytes] | None = None,
        options: Mapping[str, Any] | None = None,
        format: Format | None = None,
        keep_alive: KeepAlive | None = None,
        think: Think | None = None,
        context: Sequence[int] | None = None,
        raw: bool | None = None,
        suffix: str | None = None,
    ) -> ResponseStream[GenerateChunk]:
        """Stream /api/generate. `images` are base64 strings (bytes are encoded for you)."""
        body = self._generate_body(
            model,
            prompt,
            stream=True,
            system=system,
            images=images,
            options=options,
            format=format,
            keep_alive=keep_alive,
            think=think,
            context=context,
            raw=raw,
            suffix=suffix,
        )
        return ResponseStream(
            self._stream("/api/generate", body, GenerateChunk.from_response, model=model)
        )

    async def load(self, model: str, keep_alive: KeepAlive | None = None) -> GenerateChunk:
        """Load a model into memory without generating (`done_reason == "load"`)."""
        body = _drop_none(model=model, keep_alive=keep_alive, stream=False)
        return GenerateChunk.from_response(
            await self._request_json("POST", "/api/generate", body, model=model)
        )

    async def version(self) -> str:
        data = await self._request_json("GET", "/api/version")
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(version, str):
            raise OllamaProtocolError(f"Ollama at {self.host} sent no version", host=self.host)
        return version

    async def _model_list(self, path: str) -> list[dict[str, Any]]:
        data = await self._request_json("GET", path)
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise OllamaProtocolError(
                f"Ollama at {self.host} sent no model list for {path}", host=self.host
            )
        return [m for m in models if isinstance(m, dict)]

    async def tags(self) -> list[LocalModel]:
        """Installed models (/api/tags)."""
        return [LocalModel.from_response(m) for m in await self._model_list("/api/tags")]

    async def ps(self) -> list[RunningModel]:
        """Models loaded in memory (/api/ps)."""
        try:
            models, _ = parse_ps(await self._request_json("GET", "/api/ps"))
        except ValueError as exc:
            raise OllamaProtocolError(f"Ollama at {self.host}: {exc}", host=self.host) from exc
        return models

    async def show(self, model: str) -> ModelShow:
        data = await self._request_json("POST", "/api/show", {"model": model}, model=model)
        if not isinstance(data, dict):
            raise OllamaProtocolError(f"Ollama at {self.host} sent no model info", host=self.host)
        return ModelShow.from_response(data)

    async def embed(
        self,
        model: str,
        input: str | Sequence[str],
        *,
        truncate: bool | None = None,
        options: Mapping[str, Any] | None = None,
        keep_alive: KeepAlive | None = None,
        dimensions: int | None = None,
    ) -> EmbedResult:
        """POST /api/embed: one vector per input (a single string is one input)."""
        body = _drop_none(
            model=model,
            input=input if isinstance(input, str) else list(input),
            truncate=truncate,
            options=dict(options) if options is not None else None,
            keep_alive=keep_alive,
            dimensions=dimensions,
        )
        data = await self._request_json("POST", "/api/embed", body, model=model)
        try:
            return EmbedResult.from_response(data)
        except ValueError as exc:
            raise OllamaProtocolError(f"Ollama at {self.host}: {exc}", host=self.host) from exc

    def pull(self, model: str, *, insecure: bool | None = None) -> ResponseStream[dict[str, Any]]:
        """Stream /api/pull progress dicts; the last is `{"status": "success"}`."""
        body = _drop_none(model=model, insecure=insecure, stream=True)
        return ResponseStream(
            self._stream(
                "/api/pull",
                body,
                dict,
                model=model,
                is_final=lambda obj: obj.get("status") == "success",
            )
        )

    async def delete(self, model: str) -> None:
        """Delete an installed model; ModelNotFound when there is none."""
        await self._request_json("DELETE", "/api/delete", {"model": model}, model=model)

    # ------------------------------------------------------------------ raw pass-through

    def stream_raw(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> RawStreamOpener:
        """Open `method path` and hand back the response to relay byte for byte.

        `upstream = await client.stream_raw("POST", "/api/chat", body)` (or
        `async with client.stream_raw(...) as upstream`) returns once Ollama answered: then
        `upstream.status_code`, `upstream.headers` / `content_type`, and
        `upstream.aiter_bytes()` (or `aiter_lines()`) yield the body unchanged and close the
        response at the end; `await upstream.aclose()` closes it early (stops generation).
        An error status, a refused connection or a timeout before the first byte raise the
        same typed errors as the other methods (ModelNotFound, OllamaBadRequest, OllamaBusy,
        OllamaUnreachable, OllamaTimeout, ...), so the caller can answer with
        `{"error": exc.message}` and `exc.status_code`.
        """
        body = content if content is not None else None
        model = json_body.get("model") if isinstance(json_body, Mapping) else None
        send_headers = {"Accept-Encoding": "identity", **dict(headers or {})}

        async def open_() -> RawStream:
            request = self._http.build_request(
                method.upper(),
                path,
                json=json_body if content is None else None,
                content=body,
                params=params,
                headers=send_headers,
            )
            try:
                response = await self._http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, False) from exc
            if response.status_code >= 400:
                try:
                    error_body = await response.aread()
                except httpx.HTTPError:
                    error_body = b""
                finally:
                    await response.aclose()
                raise self._status_error(
                    response.status_code,
                    error_body,
                    response.headers,
                    model if isinstance(model, str) else None,
                )
            return RawStream(response, self._transport_error)

        return RawStreamOpener(open_)


# ---------------------------------------------------------------------- per-loop cache

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, OllamaClient]] = (
    weakref.WeakKeyDictionary()
)
_clients_lock = threading.Lock()


def _prune_closed_loops() -> None:
    for loop in list(_clients.keys()):
        if loop.is_closed():
            _clients.pop(loop, None)


def get_client(base_url: str, **kwargs: Any) -> OllamaClient:
    """The OllamaClient for `base_url` on the running event loop (created on first use).

    httpx.AsyncClient is bound to the loop that first uses it, so clients are cached per
    (loop, host). `kwargs` (timeouts, headers, ...) apply when the client is created.
    Must be called from a coroutine (RuntimeError otherwise).
    """
    loop = asyncio.get_running_loop()
    key = normalize_base_url(base_url)
    with _clients_lock:
        _prune_closed_loops()
        per_loop = _clients.get(loop)
        if per_loop is None:
            per_loop = _clients[loop] = {}
        client = per_loop.get(key)
        if client is None or client.is_closed:
            client = per_loop[key] = OllamaClient(key, **kwargs)
        return client


async def close_all() -> None:
    """Close the cached clients of the running loop (and forget those of closed loops)."""
    loop = asyncio.get_running_loop()
    with _clients_lock:
        clients = list(_clients.pop(loop, {}).values())
        _prune_closed_loops()
    for client in clients:
        await client.aclose()


__all__ = ["OllamaClient", "close_all", "get_client", "normalize_base_url"]
