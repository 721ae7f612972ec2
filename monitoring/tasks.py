"""Celery tasks: thin wrappers around :mod:`monitoring.services`.

Both are scheduled by beat (config/settings.py, "Monitoring"). Soft time limits need the
prefork pool (the default); under ``--pool=solo`` or threads only the services' own bounds
(probe timeouts, the pruning time budget) apply.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings

from core.probes import default_host_probe
from monitoring import services

logger = logging.getLogger(__name__)


@worker_process_init.connect
def _take_cpu_baseline(**kwargs) -> None:
    # CPU usage is measured between two readings of the same probe: take the first as each
    # pool process starts, so that its first sample already has a CPU figure.
    default_host_probe()


@shared_task(
    name="monitoring.tasks.sample_telemetry",
    bind=True,
    ignore_result=True,
    # Probes are bounded at PROBE_TIMEOUT (10 s); the rest is three small INSERTs.
    soft_time_limit=20,
    time_limit=30,
)
def sample_telemetry(self, host: str | None = None) -> dict:
    """Record one sample of this machine, tagged with TELEMETRY_HOST.

    ``host`` is the machine beat meant (with TELEMETRY_HOSTS it routes the task to that
    machine's queue); a worker that is not that machine refuses rather than mislabel its own
    figures as another's.
    """
    if host and host != settings.TELEMETRY_HOST:
        logger.error(
            "sample_telemetry for %r reached the worker of %r: check that worker's -Q and "
            "TELEMETRY_HOST",
            host,
            settings.TELEMETRY_HOST,
        )
        return {"recorded": False, "reason": "wrong host"}
    outcome = services.record_sample(task_id=self.request.id)
    sample = outcome.sample
    return {
        "recorded": outcome.created,
        "sample": sample.pk,
        "host": sample.host,
        "gpu_available": sample.gpu_available,
    }


@shared_task(
    name="monitoring.tasks.prune_telemetry",
    ignore_result=True,
    soft_time_limit=services.PRUNE_MAX_SECONDS + 60,
    time_limit=services.PRUNE_MAX_SECONDS + 90,
)
def prune_telemetry() -> dict:
    """Delete samples older than TELEMETRY_RETENTION_DAYS, in bounded batches. Idempotent."""
    result = services.prune()
    if result.host_samples:
        logger.info(
            "pruned %d host samples (%d GPU, %d model rows) older than %s%s",
            result.host_samples,
            result.gpu_samples,
            result.loaded_model_samples,
            result.cutoff.isoformat(),
            "" if result.complete else "; more left for the next run",
        )
    return {
        "host_samples": result.host_samples,
        "gpu_samples": result.gpu_samples,
        "loaded_model_samples": result.loaded_model_samples,
        "complete": result.complete,
    }
