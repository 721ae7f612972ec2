"""Which Ollama host serves a request, and the process-wide generation gate."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from core.gate import Gate, build_gate
from core.ollama import LocalModel, ModelNotFound, OllamaError, get_client
from core.ollama.client import OllamaClient

TAGS_TTL_SECONDS = 5.0
# A model's context length changes only when it is pulled or created again.
SHOW_TTL_SECONDS = 300.0

_gate: Gate | None = None
_tags_cache: dict[str, tuple[float, list[LocalModel]]] = {}
_fetching: dict[str, asyncio.Task[HostModels]] = {}
# (host, model): when fetched, and the model's context length (None: /api/show gives none).
_context_cache: dict[tuple[str, str], tuple[float, int | None]] = {}
_showing: dict[tuple[str, str], asyncio.Task[int | None]] = {}


def get_gate() -> Gate:
    global _gate
    if _gate is None:
        _gate = build_gate(
            settings.REDIS_URL,
            max_concurrency=settings.OLLAMA_MAX_CONCURRENCY,
            max_queue=settings.OLLAMA_MAX_QUEUE,
            lease_seconds=settings.OLLAMA_GATE_LEASE_SECONDS,
            client_options=settings.REDIS_POOL_OPTIONS,
            fair=settings.OLLAMA_GATE_POLICY == "turns",
        )
    return _gate


@receiver(setting_changed)
def _reset(setting, **kwargs):
    global _gate
    if setting in {
        "REDIS_URL",
        "OLLAMA_MAX_CONCURRENCY",
        "OLLAMA_MAX_QUEUE",
        "OLLAMA_URLS",
        "OLLAMA_GATE_POLICY",
    }:
        _gate = None
        _tags_cache.clear()


def client_for(host: str) -> OllamaClient:
    return get_client(
        host,
        connect_timeout=settings.OLLAMA_CONNECT_TIMEOUT,
        read_timeout=settings.OLLAMA_READ_TIMEOUT,
        http_client=settings.OLLAMA_HTTP_CLIENT,
    )


def hosts() -> list[str]:
    return list(settings.OLLAMA_URLS)


def normalize_model(name: str) -> str:
    """Ollama reads a name without a tag as `:latest`."""
    name = name.strip()
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass(frozen=True)
class HostModels:
    host: str
    models: list[LocalModel]
    error: OllamaError | None = None


def raise_if_all_failed(listing: list[HostModels]) -> None:
    """No host answered: their first error is the answer."""
    errors = [entry.error for entry in listing]
    if errors and errors[0] is not None and all(errors):
        raise errors[0]


async def host_models(host: str, *, fresh: bool = False) -> HostModels:
    cached = _tags_cache.get(host)
    if cached and not fresh and time.monotonic() - cached[0] < TAGS_TTL_SECONDS:
        return HostModels(host, cached[1])
    # One request to the host however many chats need its list at once: a burst of chats
    # that found the cache expired would otherwise each wait for a request of its own.
    loop = asyncio.get_running_loop()
    fetch = _fetching.get(host)
    if fetch is None or fetch.get_loop() is not loop:
        fetch = _fetching[host] = loop.create_task(_fetch_models(host))
    return await asyncio.shield(fetch)


async def _fetch_models(host: str) -> HostModels:
    try:
        try:
            models = await client_for(host).tags()
        except OllamaError as exc:
            _tags_cache.pop(host, None)
            return HostModels(host, [], exc)
        _tags_cache[host] = (time.monotonic(), models)
        return HostModels(host, models)
    finally:
        _fetching.pop(host, None)


def forget_models() -> None:
    """Drop the cached model lists (after a pull or a delete)."""
    _tags_cache.clear()


async def running_by_host() -> dict[str, list[dict]]:
    """Each host's loaded models as Ollama lists them; a host that is down lists none."""

    async def one(host: str) -> tuple[str, list[dict]]:
        try:
            return host, [m.raw for m in await client_for(host).ps()]
        except OllamaError:
            return host, []

    return dict(await asyncio.gather(*(one(h) for h in hosts())))


async def all_models(*, fresh: bool = False) -> list[HostModels]:
    return list(await asyncio.gather(*(host_models(h, fresh=fresh) for h in hosts())))


async def default_model() -> str:
    """OLLAMA_DEFAULT_MODEL, or else the first model the hosts list."""
    if settings.OLLAMA_DEFAULT_MODEL:
        return settings.OLLAMA_DEFAULT_MODEL
    listing = await all_models()
    for entry in listing:
        if entry.models:
            return entry.models[0].name
    errors = [entry.error for entry in listing if entry.error is not None]
    if errors:
        raise errors[0]
    raise ModelNotFound(
        "no model is installed on the Ollama server; pull one first",
        host=", ".join(hosts()),
        status_code=404,
        model="",
    )


async def pick_host(model: str) -> str:
    """The least busy host that has `model`. Raises ModelNotFound or the hosts' error."""
    wanted = normalize_model(model)
    for fresh in (False, True):  # a model pulled seconds ago is not in a cached list yet
        listing = await all_models(fresh=fresh)
        candidates = [
            entry.host
            for entry in listing
            if any(normalize_model(m.name) == wanted for m in entry.models)
        ]
        if candidates:
            break
    else:
        errors = [entry.error for entry in listing if entry.error is not None]
        if errors and len(errors) == len(listing):
            raise errors[0]
        raise ModelNotFound(
            f'model "{model}" not found, try pulling it first',
            host=", ".join(hosts()),
            status_code=404,
            model=model,
        )
    if len(candidates) == 1:
        return candidates[0]
    gate = get_gate()
    stats = await asyncio.gather(*(gate.stats(host) for host in candidates))
    load = {host: s.in_flight + s.queued for host, s in zip(candidates, stats, strict=True)}
    return min(candidates, key=lambda host: (load[host], candidates.index(host)))


# --------------------------------------------------------------------------- context window


async def context_window(host: str, model: str, num_ctx: int | None) -> int:
    """The tokens a chat with `model` on `host` may use: the model's context length (/api/show's
    model_info), capped by the request's or conversation's `num_ctx`, or when none is set by
    OLLAMA_CONTEXT_LENGTH (the Ollama server's own default). A model whose length /api/show
    does not give, or a failed /api/show, leaves the cap alone: this never raises for that."""
    cap = num_ctx if num_ctx is not None and num_ctx > 0 else settings.OLLAMA_CONTEXT_LENGTH
    length = await model_context_length(host, model)
    return min(length, cap) if length is not None else cap


async def model_context_length(host: str, model: str) -> int | None:
    """`model`'s context length as /api/show gives it (None: unknown), cached per host and
    model for SHOW_TTL_SECONDS; a failure is not kept, and one request serves a burst."""
    key = (host, normalize_model(model))
    cached = _context_cache.get(key)
    if cached and time.monotonic() - cached[0] < SHOW_TTL_SECONDS:
        return cached[1]
    loop = asyncio.get_running_loop()
    fetch = _showing.get(key)
    if fetch is None or fetch.get_loop() is not loop:
        fetch = _showing[key] = loop.create_task(_fetch_context_length(key))
    return await asyncio.shield(fetch)


async def _fetch_context_length(key: tuple[str, str]) -> int | None:
    host, model = key
    try:
        try:
            shown = await client_for(host).show(model)
        except OllamaError:
            _context_cache.pop(key, None)
            return None
        length = shown.context_length
        if length is not None and length <= 0:
            length = None
        _context_cache[key] = (time.monotonic(), length)
        return length
    finally:
        _showing.pop(key, None)


def forget_context_lengths() -> None:
    """Drop the cached context lengths (after a pull, a create or a delete)."""
    _context_cache.clear()


@receiver(setting_changed)
def _reset_context_lengths(setting: str, **kwargs: object) -> None:
    if setting == "OLLAMA_URLS":
        _context_cache.clear()


# --------------------------------------------------------------------------- model administration


async def hosts_having(model: str) -> tuple[list[str], list[HostModels]]:
    """The hosts that have `model` installed (fresh lists), and the listing itself (to tell
    "installed nowhere" from "no host answered")."""
    wanted = normalize_model(model)
    listing = await all_models(fresh=True)
    having = [
        entry.host
        for entry in listing
        if any(normalize_model(m.name) == wanted for m in entry.models)
    ]
    return having, listing


async def delete_everywhere(model: str) -> tuple[list[str], list[HostModels]]:
    """Delete `model` from every host that has it: the hosts it was deleted from, and the
    listing. The cached lists and context lengths are forgotten after a delete."""
    having, listing = await hosts_having(model)
    for host in having:
        await client_for(host).delete(model)
    if having:
        forget_models()
        forget_context_lengths()
    return having, listing
