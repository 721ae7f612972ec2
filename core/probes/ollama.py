"""The models an Ollama server holds in memory, from its ``GET /api/ps``.

Synchronous (``httpx.Client``) because it runs inside the Celery sampler; from async code call
it with ``asyncio.to_thread``. Like the other probes it never raises: a server that is down,
slow, answers an error status or something that is not Ollama's JSON gives an
:class:`OllamaPsReport` with ``available=False`` and a ``reason``.

Deliberately independent of the chat app's async Ollama client: telemetry must keep working
(and keep saying *why* Ollama is unreachable) whatever state the chat side is in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.ollama.types import RunningModel, parse_ps

from ._common import describe_exception, utc_now_iso

logger = logging.getLogger(__name__)

__all__ = ["OllamaPsProbe", "OllamaPsReport", "RunningModel", "parse_ps"]

DEFAULT_TIMEOUT = 3.0
# An error body is shown in the reason; a misconfigured URL can answer a whole HTML page.
_MAX_REASON_BODY = 200


@dataclass(slots=True)
class OllamaPsReport:
    url: str
    available: bool
    reason: str | None = None
    models: list[RunningModel] = field(default_factory=list)
    #: Entries of the answer that were skipped because they were malformed.
    skipped: int = 0
    elapsed_ms: float | None = None
    taken_at: str = field(default_factory=utc_now_iso)

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "available": self.available,
            "reason": self.reason,
            "models": [model.as_dict() for model in self.models],
            "skipped": self.skipped,
            "elapsed_ms": self.elapsed_ms,
            "taken_at": self.taken_at,
        }


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
    error = body.get("error") if isinstance(body, dict) else None
    text = error if isinstance(error, str) else response.text.strip()
    return text[:_MAX_REASON_BODY]
