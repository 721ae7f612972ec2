"""`/health`: the process is alive. `/ready`: it can serve (503 naming what is down)."""

from __future__ import annotations

import asyncio
import time

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from chat import lifecycle


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _check_database() -> None:
    await sync_to_async(_database, thread_sensitive=True)()


async def _check_channel_layer() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    channel = await layer.new_channel("ready.")
    await layer.send(channel, {"type": "ready.ping"})
    message = await layer.receive(channel)
    if message.get("type") != "ready.ping":
        raise RuntimeError("channel layer returned an unexpected message")


async def _check_ollama() -> None:
    from chat import hosts

    # Ready when at least one Ollama host answers; the error names every host that is down.
    listing = await hosts.all_models(fresh=True)
    down = [entry for entry in listing if entry.error is not None]
    if len(down) == len(listing):
        raise ConnectionError("; ".join(str(entry.error) for entry in down))


READINESS_CHECKS = {
    "database": _check_database,
    "channel_layer": _check_channel_layer,
    "ollama": _check_ollama,
}


async def _run(name: str, check) -> tuple[str, dict]:
    timeout = settings.READY_CHECK_TIMEOUT  # read per request (deployments, tests)
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        result = {"ok": False, "error": f"no answer within {timeout:g} s"}
    except Exception as exc:  # a readiness probe reports failures, it never raises
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    else:
        result = {"ok": True}
    result["seconds"] = round(time.perf_counter() - started, 4)
    return name, result


@never_cache
async def health(request):
    return JsonResponse({"status": "ok"})


@never_cache
async def ready(request):
    results = dict(
        await asyncio.gather(*(_run(name, check) for name, check in READINESS_CHECKS.items()))
    )
    failing = [name for name, result in results.items() if not result["ok"]]
    if not lifecycle.accepting():
        failing.append("shutting_down")  # a load balancer sends new work elsewhere
    body = {"status": "unavailable" if failing else "ready", "failing": failing, "checks": results}
    return JsonResponse(body, status=503 if failing else 200)
