"""GET /metrics: Prometheus' text format, for a scraper that holds `METRICS_TOKEN` or comes
from `METRICS_ALLOWED_NETWORKS`; a 404 when neither is set (the default: nothing to find).

The counters and histograms come from config.metrics (summed over the web processes in
multiprocess mode); the states are read now: each host's gate (in flight, queued: shared by
every process through Redis) and the latest telemetry sample of each machine.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from chat import hosts
from config import database
from config.metrics import PREFIX
from core.gate import GateStats
from monitoring.models import HostSample
from monitoring.selectors.samples import latest_samples

logger = logging.getLogger(__name__)

MB = 1024 * 1024


def refusal(request: HttpRequest) -> HttpResponse | None:
    """Why this request may not scrape, or None. Both conditions apply when both are set."""
    token, networks = settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return HttpResponse("not found\n", status=404, content_type="text/plain")
    if networks:
        try:
            address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
        except ValueError:
            address = None
        if address is None or not any(address in network for network in networks):
            return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            response = HttpResponse("a bearer token is required\n", status=401)
            response["Content-Type"] = "text/plain"
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return None


async def metrics(request: HttpRequest) -> HttpResponse:
    refused = refusal(request)
    if refused is not None:
        return refused
    if request.method not in {"GET", "HEAD"}:
        return HttpResponse("method not allowed\n", status=405, content_type="text/plain")
    state = _State()
    gate = hosts.get_gate()
    for host in hosts.hosts():
        try:
            state.gates.append(await gate.stats(host))
        except Exception as exc:  # Redis away: the rest still scrapes, and says so
            logger.warning("metrics: no gate figures for %s: %s", host, exc)
            state.errors += 1
    try:
        state.samples = await database.run(latest_samples)
    except Exception as exc:
        logger.warning("metrics: no telemetry: %s", exc)
        state.errors += 1
    states = CollectorRegistry()
    states.register(state)
    body = generate_latest(_events()) + generate_latest(states)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def _events() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@dataclass(eq=False)  # a registry keys its collectors by identity
class _State(Collector):
    gates: list[GateStats] = field(default_factory=list)
    samples: list[HostSample] = field(default_factory=list)
    errors: int = 0

    def collect(self) -> Iterator[Metric]:
        yield from self._gate_metrics()
        yield from self._telemetry()
        errors = GaugeMetricFamily(
            f"{PREFIX}_scrape_errors", "Parts of this scrape that could not be read."
        )
        errors.add_metric([], self.errors)
        yield errors

    def _gate_metrics(self) -> Iterator[Metric]:
        families = {
            "in_flight": GaugeMetricFamily(
                f"{PREFIX}_generations_in_flight",
                "Generations holding a slot of the gate, by Ollama host.",
                labels=["host"],
            ),
            "queued": GaugeMetricFamily(
                f"{PREFIX}_queue_length",
                "Requests waiting in the gate's queue, by Ollama host.",
                labels=["host"],
            ),
            "max_concurrency": GaugeMetricFamily(
                f"{PREFIX}_gate_slots", "Slots of the gate, by Ollama host.", labels=["host"]
            ),
        }
        for stats in self.gates:
            for name, family in families.items():
                family.add_metric([stats.host], getattr(stats, name))
        yield from families.values()

    def _telemetry(self) -> Iterator[Metric]:
        def gauge(name: str, text: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", text, labels=labels)

        host_gauges: dict[str, tuple[GaugeMetricFamily, float]] = {
            "ram_used_mb": (gauge("ram_used_bytes", "RAM in use.", ["host"]), MB),
            "ram_total_mb": (gauge("ram_total_bytes", "RAM in all.", ["host"]), MB),
            "cpu_percent": (gauge("cpu_percent", "CPU busy, in percent.", ["host"]), 1),
            "ollama_rss_mb": (
                gauge("ollama_rss_bytes", "Resident memory of the Ollama processes.", ["host"]),
                MB,
            ),
        }
        labels = ["host", "gpu", "name"]
        gpu_gauges: dict[str, tuple[GaugeMetricFamily, float]] = {
            "utilization_percent": (gauge("gpu_utilization_percent", "GPU busy.", labels), 1),
            "memory_used_mb": (gauge("gpu_memory_used_bytes", "GPU memory in use.", labels), MB),
            "memory_total_mb": (gauge("gpu_memory_total_bytes", "GPU memory.", labels), MB),
            "temperature_c": (gauge("gpu_temperature_celsius", "GPU temperature.", labels), 1),
            "power_draw_w": (gauge("gpu_power_watts", "GPU power draw.", labels), 1),
        }
        taken = gauge(
            "telemetry_sample_timestamp_seconds", "When the latest sample was taken.", ["host"]
        )
        for sample in self.samples:
            taken.add_metric([sample.host], sample.taken_at.timestamp())
            for attribute, (family, scale) in host_gauges.items():
                _add(family, [sample.host], getattr(sample, attribute), scale)
            for gpu in sample.gpus.all():
                gpu_labels = [sample.host, str(gpu.index), gpu.name]
                for attribute, (family, scale) in gpu_gauges.items():
                    _add(family, gpu_labels, getattr(gpu, attribute), scale)
        yield taken
        yield from (family for family, _ in host_gauges.values())
        yield from (family for family, _ in gpu_gauges.values())


def _add(family: GaugeMetricFamily, labels: list[str], value: Any, scale: float) -> None:
    if value is not None:
        family.add_metric(labels, float(value) * scale)
