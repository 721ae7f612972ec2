"""Host telemetry over psutil: RAM, swap, CPU, load average and the Ollama processes' memory.

Nothing in here raises to the caller: a reading that fails gives None fields and an ``error``
(or ``note``) saying why.

CPU percent, and the first-call caveat
--------------------------------------
CPU usage is a rate, so it needs two readings of the CPU time counters. The probe never sleeps
to get them (``psutil.cpu_percent(interval=1)`` would block a worker for a second); it uses
``interval=None`` semantics instead: each :meth:`HostProbe.probe` reports the usage *since the
previous reading* of the same :class:`HostProbe`. Consequences:

* the very first reading has nothing to compare with. The probe takes its baseline when it is
  constructed, and if less than ``min_cpu_interval`` (0.1 s, psutil's own advice) has passed
  since then, ``cpu.percent`` is None (not the meaningless 0.0 psutil would return) and
  ``cpu.note`` says so; the next probe has a value;
* with a probe polled every N seconds (the Celery sampler), the figure is the average over
  those N seconds, which is what a time series wants;
* readings closer together than ``min_cpu_interval`` repeat the previous figure rather than
  divide a few clock ticks by each other.

The baseline belongs to the probe instance, not to the calling thread. (psutil's own
``cpu_percent(interval=None)`` keeps one baseline per thread id, so from a thread pool -- such
as ``asyncio.to_thread`` -- each new thread's first call would return 0.0.)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from ._common import as_number, bytes_to_mb, describe_exception, utc_now_iso

logger = logging.getLogger(__name__)

__all__ = [
    "CpuInfo",
    "HostProbe",
    "HostReport",
    "LoadAverage",
    "OllamaProcess",
    "RamInfo",
    "SwapInfo",
    "default_host_probe",
    "find_ollama_processes",
    "ollama_role",
]


@dataclass(slots=True)
class RamInfo:
    total_mb: float | None = None
    used_mb: float | None = None
    available_mb: float | None = None
    #: psutil's figure: (total - available) / total.
    percent: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class SwapInfo:
    total_mb: float | None = None
    used_mb: float | None = None
    percent: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class CpuInfo:
    #: Logical CPUs.
    count: int | None = None
    #: Whole-host usage since the previous reading (see the module docstring); None at first.
    percent: float | None = None
    #: One figure per logical CPU, same semantics; empty when ``percent`` is None.
    per_core: list[float] = field(default_factory=list)
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class LoadAverage:
    one: float | None = None
    five: float | None = None
    fifteen: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class OllamaProcess:
    pid: int
    name: str | None
    #: "server" (``ollama serve``), "runner" (the per-model process holding the weights),
    #: or "other" (the ``ollama`` CLI, ...).
    role: str
    #: Resident memory; None when the OS refused (another user's process).
    rss_mb: float | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class HostReport:
    hostname: str | None
    ram: RamInfo
    swap: SwapInfo
    cpu: CpuInfo
    load_average: LoadAverage
    ollama_processes: list[OllamaProcess] = field(default_factory=list)
    #: Sum of the RSS that could be read; None when no Ollama process's RSS was readable.
    ollama_rss_mb: float | None = None
    #: Why the process scan failed as a whole (None when it ran).
    ollama_error: str | None = None
    taken_at: str = field(default_factory=utc_now_iso)

    @property
    def ollama_running(self) -> bool:
        return bool(self.ollama_processes)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["ollama_running"] = self.ollama_running
        return data


# --------------------------------------------------------------------------- Ollama processes


def _stem(path_or_name: str) -> str:
    base = path_or_name.replace("\\", "/").rsplit("/", 1)[-1].lower()
    return base.removesuffix(".exe")


def ollama_role(name: str | None, cmdline: Sequence[str] | None) -> str | None:
    """Whether a process (by name and argv) is Ollama, and which part: "server", "runner",
    "other", or None when it is not Ollama.

    Matches the process name ``ollama`` (``ollama.exe``), the old runner binary
    ``ollama_llama_server`` (truncated to 15 characters in Linux process names), an argv[0]
    named ``ollama``, or a command line containing ``ollama serve``.
    """
    args = [str(arg) for arg in (cmdline or []) if arg is not None]
    joined = " ".join(args).lower()
    stem = _stem(name or "")
    argv0 = _stem(args[0]) if args else ""
    if "ollama serve" in joined:
        return "server"
    if stem.startswith("ollama_llama_se") or argv0.startswith("ollama_llama_se"):
        return "runner"
    if stem == "ollama" or argv0 == "ollama":
        sub = args[1].lower() if len(args) > 1 else ""
        if sub == "serve":
            return "server"
        if sub == "runner":
            return "runner"
        return "other"
    return None


def _exc_class(ps: Any, name: str) -> type[BaseException]:
    cls = getattr(ps, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return cls
    fallback: type[BaseException] = getattr(psutil, name)
    return fallback


def find_ollama_processes(ps: Any = psutil) -> tuple[list[OllamaProcess], str | None]:
    """The Ollama processes on this host with their RSS, and an error if the scan failed.

    A process that exits during the scan is skipped; one whose memory the OS will not show
    (``AccessDenied``) is listed with ``rss_mb=None`` and a note. Never raises.
    """
    no_such_process = _exc_class(ps, "NoSuchProcess")  # includes ZombieProcess
    access_denied = _exc_class(ps, "AccessDenied")
    found: list[OllamaProcess] = []
    try:
        for proc in ps.process_iter(["name", "cmdline"]):
            try:
                info = getattr(proc, "info", None) or {}
                name = info.get("name")
                role = ollama_role(name, info.get("cmdline"))
                if role is None:
                    continue
                pid = int(proc.pid)
                try:
                    rss = proc.memory_info().rss
                except access_denied:
                    found.append(
                        OllamaProcess(
                            pid=pid,
                            name=name,
                            role=role,
                            note="access denied reading its memory (run as the same user as "
                            "Ollama to see it)",
                        )
                    )
                    continue
                found.append(OllamaProcess(pid=pid, name=name, role=role, rss_mb=bytes_to_mb(rss)))
            except no_such_process:
                continue  # exited (or became a zombie) while we looked
            except access_denied:
                continue  # cannot even tell what it is
            except Exception as exc:  # one odd process must not hide the others
                logger.debug("skipping process during Ollama scan: %s", describe_exception(exc))
                continue
    except Exception as exc:
        return found, f"process scan failed: {describe_exception(exc)}"
    found.sort(key=lambda p: p.pid)
    return found, None


# --------------------------------------------------------------------------- CPU arithmetic


def _cpu_percent_between(before: Any, after: Any) -> float:
    """Busy share of the CPU time elapsed between two ``cpu_times()`` readings, as psutil
    computes it: guest time is already in user time on Linux, iowait counts as idle, and a
    counter that went backwards counts as zero."""
    fields = getattr(after, "_fields", ())
    deltas = {
        name: max(0.0, float(getattr(after, name)) - float(getattr(before, name)))
        for name in fields
    }
    total = sum(deltas.values()) - deltas.get("guest", 0.0) - deltas.get("guest_nice", 0.0)
    if total <= 0:
        return 0.0
    busy = total - deltas.get("idle", 0.0) - deltas.get("iowait", 0.0)
    return round(min(100.0, max(0.0, busy / total * 100)), 1)


@dataclass(slots=True)
class _CpuSample:
    at: float
    total: Any
    per_core: list[Any]


# --------------------------------------------------------------------------- probe


class HostProbe:
    """Reads this host's RAM, swap, CPU, load and Ollama processes through psutil.

    ``psutil_module`` is injectable for tests. Thread-safe; :meth:`probe` never raises and never
    sleeps, but the process scan reads ``/proc`` for every process (tens of milliseconds on a
    busy host): call it from async code with ``asyncio.to_thread``.
    """

    def __init__(
        self,
        psutil_module: Any | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_cpu_interval: float = 0.1,
    ) -> None:
        self._ps = psutil_module if psutil_module is not None else psutil
        self._clock = clock
        self.min_cpu_interval = min_cpu_interval
        self._cpu_lock = threading.Lock()
        self._baseline: _CpuSample | None = self._read_cpu_times()
        self._last_result: tuple[float, list[float]] | None = None

    # -- pieces, each usable alone (the snapshot only needs ram())

    def ram(self) -> RamInfo:
        try:
            vm = self._ps.virtual_memory()
            return RamInfo(
                total_mb=bytes_to_mb(vm.total),
                used_mb=bytes_to_mb(vm.used),
                available_mb=bytes_to_mb(vm.available),
                percent=_percent(vm.percent),
            )
        except Exception as exc:
            return RamInfo(error=describe_exception(exc))

    def swap(self) -> SwapInfo:
        try:
            sm = self._ps.swap_memory()
            return SwapInfo(
                total_mb=bytes_to_mb(sm.total),
                used_mb=bytes_to_mb(sm.used),
                percent=_percent(sm.percent),
            )
        except Exception as exc:
            return SwapInfo(error=describe_exception(exc))

    def load_average(self) -> LoadAverage:
        getloadavg = getattr(self._ps, "getloadavg", None) or getattr(os, "getloadavg", None)
        if getloadavg is None:
            return LoadAverage(error="load average not available on this platform")
        try:
            one, five, fifteen = getloadavg()
        except Exception as exc:
            return LoadAverage(error=describe_exception(exc))
        return LoadAverage(one=_round2(one), five=_round2(five), fifteen=_round2(fifteen))

    def cpu(self) -> CpuInfo:
        count: int | None
        try:
            count = self._ps.cpu_count()
        except Exception:
            count = None
        sample = self._read_cpu_times()
        if sample is None:
            return CpuInfo(count=count, note="CPU times unavailable")
        with self._cpu_lock:
            baseline = self._baseline
            if baseline is None or len(baseline.per_core) != len(sample.per_core):
                # No baseline yet, or CPUs were hot-plugged: start over from this reading.
                self._baseline = sample
                self._last_result = None
                return CpuInfo(count=count, note=_FIRST_READING_NOTE)
            if sample.at - baseline.at < self.min_cpu_interval:
                if self._last_result is None:
                    return CpuInfo(count=count, note=_FIRST_READING_NOTE)
                percent, per_core = self._last_result
                return CpuInfo(count=count, percent=percent, per_core=list(per_core))
            percent = _cpu_percent_between(baseline.total, sample.total)
            per_core = [
                _cpu_percent_between(b, a)
                for b, a in zip(baseline.per_core, sample.per_core, strict=True)
            ]
            self._baseline = sample
            self._last_result = (percent, per_core)
        return CpuInfo(count=count, percent=percent, per_core=list(per_core))

    def ollama_processes(self) -> tuple[list[OllamaProcess], str | None]:
        return find_ollama_processes(self._ps)

    def hostname(self) -> str | None:
        try:
            return socket.gethostname() or None
        except Exception:
            return None

    # -- everything

    def probe(self, *, include_processes: bool = True) -> HostReport:
        try:
            processes: list[OllamaProcess] = []
            scan_error: str | None = None
            if include_processes:
                processes, scan_error = self.ollama_processes()
            known = [p.rss_mb for p in processes if p.rss_mb is not None]
            return HostReport(
                hostname=self.hostname(),
                ram=self.ram(),
                swap=self.swap(),
                cpu=self.cpu(),
                load_average=self.load_average(),
                ollama_processes=processes,
                ollama_rss_mb=round(sum(known), 1) if known else None,
                ollama_error=scan_error,
            )
        except Exception as exc:  # last resort: never break a task
            logger.exception("host probe failed unexpectedly")
            reason = describe_exception(exc)
            return HostReport(
                hostname=None,
                ram=RamInfo(error=reason),
                swap=SwapInfo(error=reason),
                cpu=CpuInfo(note=reason),
                load_average=LoadAverage(error=reason),
                ollama_error=reason,
            )

    def _read_cpu_times(self) -> _CpuSample | None:
        try:
            return _CpuSample(
                at=self._clock(),
                total=self._ps.cpu_times(),
                per_core=list(self._ps.cpu_times(percpu=True)),
            )
        except Exception as exc:
            logger.debug("cpu_times failed: %s", describe_exception(exc))
            return None


_FIRST_READING_NOTE = (
    "first reading: CPU usage is measured between two readings; the next probe will have it"
)


def _percent(value: Any) -> float | None:
    number = as_number(value)
    return None if number is None else round(number, 1)


def _round2(value: Any) -> float | None:
    number = as_number(value)
    return None if number is None else round(number, 2)


_default_probe: HostProbe | None = None
_default_lock = threading.Lock()


def default_host_probe() -> HostProbe:
    """The process-wide host probe (one CPU baseline shared by every caller)."""
    global _default_probe
    if _default_probe is None:
        with _default_lock:
            if _default_probe is None:
                _default_probe = HostProbe()
    return _default_probe
