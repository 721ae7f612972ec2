"""The models an Ollama server holds in memory, from its ``GET /api/ps``.

Synchronous (``httpx.Client``) because it runs inside the Celery sampler; from async code call
it with ``asyncio.to_thread``. Like the other probes it never raises: a server that is down,
slow, answers an error status or something that is not Ollama's JSON gives an
:class:`OllamaPsReport` with ``available=False`` and a ``reason``.

Deliberately independent of the chat app's async Ollama client: telemetry must keep working
(and keep saying *why* Ollama is unreachable) whatever state the chat side is in.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from ._common import as_number, describe_exception, utc_now_iso

logger = logging.getLogger(__name__)

__all__ = ["LoadedModel", "OllamaPsProbe", "OllamaPsReport", "parse_ps"]

DEFAULT_TIMEOUT = 3.0
# An error body is shown in the reason; a misconfigured URL can answer a whole HTML page.
_MAX_REASON_BODY = 200


@dataclass(slots=True)
class LoadedModel:
    name: str
    #: Bytes the model occupies in total, and the part of it in GPU memory.
    size: int | None
    size_vram: int | None
    #: ISO 8601 with offset (Ollama's RFC 3339, fractional seconds cut to microseconds);
    #: None when missing or unparseable.
    expires_at: str | None
    digest: str | None = None
    context_length: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class OllamaPsReport:
    url: str
    available: bool
    reason: str | None = None
    models: list[LoadedModel] = field(default_factory=list)
    #: Entries of the answer that were skipped because they were malformed.
    skipped: int = 0
    elapsed_ms: float | None = None
    taken_at: str = field(default_factory=utc_now_iso)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _size(value: Any) -> int | None:
    number = as_number(value)
    if number is None or number < 0:
        return None
    return int(number)


def _expires(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    # Go writes up to nine fractional digits; fromisoformat on 3.11 wants at most six.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + "." + rest[: min(digits, 6)] + rest[digits:]
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.isoformat()


def parse_ps(payload: Any) -> tuple[list[LoadedModel], int]:
    """Ollama's ``/api/ps`` JSON -> (models, number of malformed entries skipped).

    Raises ``ValueError`` when the payload is not ``{"models": [...]}`` at all.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
        raise ValueError('not an Ollama /api/ps answer (no "models" list)')
    models: list[LoadedModel] = []
    skipped = 0
    for entry in payload["models"]:
        if not isinstance(entry, dict):
            skipped += 1
            continue
        name = entry.get("name") or entry.get("model")
        if not isinstance(name, str) or not name:
            skipped += 1
            continue
        digest = entry.get("digest")
        ctx = entry.get("context_length")
        models.append(
            LoadedModel(
                name=name,
                size=_size(entry.get("size")),
                size_vram=_size(entry.get("size_vram")),
                expires_at=_expires(entry.get("expires_at")),
                digest=digest if isinstance(digest, str) else None,
                context_length=ctx if isinstance(ctx, int) and not isinstance(ctx, bool) else None,
            )
        )
    return models, skipped


class OllamaPsProbe:
    """Asks Ollama servers which models they have loaded.

    ``transport`` is injectable (``httpx.MockTransport``) but the tests use a real server.
    """

    def __init__(
        self, *, timeout: float = DEFAULT_TIMEOUT, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.timeout = timeout
        self._transport = transport

    def probe(self, url: str) -> OllamaPsReport:
        """One server. Never raises."""
        try:
            return self._probe(url)
        except Exception as exc:  # last resort: a probe must never break the sampler
            logger.exception("Ollama ps probe failed unexpectedly")
            return OllamaPsReport(url=url, available=False, reason=describe_exception(exc))

    def probe_many(self, urls: Iterable[str]) -> list[OllamaPsReport]:
        """Several servers at once (one slow server costs its timeout, not the sum). In order."""
        urls = list(urls)
        if len(urls) <= 1:
            return [self.probe(url) for url in urls]
        with ThreadPoolExecutor(
            max_workers=min(8, len(urls)), thread_name_prefix="ollama-ps"
        ) as ex:
            return list(ex.map(self.probe, urls))

    def _probe(self, url: str) -> OllamaPsReport:
        endpoint = url.rstrip("/") + "/api/ps"
        started = time.perf_counter()

        def report(**kwargs: Any) -> OllamaPsReport:
            elapsed = round((time.perf_counter() - started) * 1000, 1)
            return OllamaPsReport(url=url, elapsed_ms=elapsed, **kwargs)

        try:
            with httpx.Client(
                timeout=httpx.Timeout(self.timeout),
                transport=self._transport,
                follow_redirects=False,
                # HTTP(S)_PROXY is for the internet; it must not intercept a LAN Ollama.
                trust_env=False,
            ) as client:
                response = client.get(endpoint, headers={"Accept": "application/json"})
        except httpx.TimeoutException:
            return report(available=False, reason=f"no answer within {self.timeout:g} s")
        except httpx.ConnectError as exc:
            return report(available=False, reason=f"cannot connect: {describe_exception(exc)}")
        except httpx.HTTPError as exc:
            return report(available=False, reason=f"HTTP error: {describe_exception(exc)}")

        if response.status_code != 200:
            detail = _error_detail(response)
            reason = f"HTTP {response.status_code}" + (f": {detail}" if detail else "")
            return report(available=False, reason=reason)
        try:
            payload = response.json()
        except ValueError:
            return report(available=False, reason="the answer is not JSON")
        try:
            models, skipped = parse_ps(payload)
        except ValueError as exc:
            return report(available=False, reason=str(exc))
        return report(available=True, models=models, skipped=skipped)


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        text = body["error"]
    else:
        text = response.text.strip()
    return text[:_MAX_REASON_BODY]
