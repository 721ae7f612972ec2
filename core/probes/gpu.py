"""GPU telemetry over NVML (``pynvml``, from the ``nvidia-ml-py`` package).

Nothing in here raises to the caller. A host without the NVIDIA library, without the driver,
without a GPU, or with a GPU that has fallen off the bus gives a :class:`GpuReport` with
``available=False`` and a human-readable ``reason``; one query a GPU does not support (fan speed
on a data-centre card, power on some laptops, per-process memory without permission) gives
``None`` for that field and an entry in :attr:`GpuInfo.errors`.

NVML life cycle
---------------
NVML must be initialised (``nvmlInit``) before any other call and shut down (``nvmlShutdown``)
when the process is done with it. :class:`NvmlSession` does that once per process and per
NVML module:

* lazily, on the first probe, under a lock (probes may run in several threads at once; NVML
  calls themselves are thread-safe once initialised);
* once: every :class:`GpuProbe` built on the same module shares one session, so a hundred
  probes mean one ``nvmlInit``;
* shut down once, at interpreter exit (``atexit``), or explicitly with
  :meth:`NvmlSession.shutdown`;
* a failed ``nvmlInit`` is remembered for ``retry_interval`` seconds (so a host without a GPU does
  not retry loading the library twice per chat request), then tried again: a driver installed or
  loaded later is picked up without restarting the worker;
* if NVML reports ``Uninitialized`` in the middle of a probe (someone else shut it down), or the
  driver goes away, the session is marked lost and re-initialised on the next probe;
* after ``fork()`` (Celery's prefork pool, gunicorn-style servers) the child never uses the
  parent's NVML state: it initialises its own on first use (``os.register_at_fork`` hook, plus a
  pid check). The child never shuts down the parent's session.

The NVML module is injectable (``GpuProbe(nvml=fake)``); tests pass a fake that raises the real
``pynvml.NVMLError`` subclasses.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._common import bytes_to_mb, describe_exception, utc_now_iso

logger = logging.getLogger(__name__)

__all__ = [
    "GpuInfo",
    "GpuProbe",
    "GpuProcess",
    "GpuReport",
    "NvmlSession",
    "default_gpu_probe",
    "describe_nvml_error",
]

# NVML return codes (nvmlReturn_t). They are a stable C ABI, so they are spelled out here rather
# than read from whatever module was injected.
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_NOT_READY = 27
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0

_REASONS: dict[int, str] = {
    NVML_ERROR_UNINITIALIZED: "NVML is not initialised",
    NVML_ERROR_INVALID_ARGUMENT: "invalid argument passed to NVML",
    NVML_ERROR_NOT_SUPPORTED: "not supported by this GPU or driver",
    NVML_ERROR_NO_PERMISSION: "no permission to query the NVIDIA driver",
    NVML_ERROR_NOT_FOUND: "not found",
    NVML_ERROR_INSUFFICIENT_POWER: "GPU has insufficient external power",
    NVML_ERROR_DRIVER_NOT_LOADED: "NVIDIA driver not loaded (NVML could not talk to the driver)",
    NVML_ERROR_TIMEOUT: "NVML timed out",
    NVML_ERROR_IRQ_ISSUE: "NVIDIA driver interrupt problem",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVIDIA driver not found (NVML library not found)",
    NVML_ERROR_FUNCTION_NOT_FOUND: "not available in this NVIDIA driver version",
    NVML_ERROR_CORRUPTED_INFOROM: "GPU infoROM is corrupted",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost (fell off the bus or stopped responding)",
    NVML_ERROR_RESET_REQUIRED: "GPU requires a reset",
    NVML_ERROR_OPERATING_SYSTEM: "the operating system blocked the NVML request",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
        "NVIDIA driver/library version mismatch (reload the driver or reboot)"
    ),
    NVML_ERROR_MEMORY: "NVML ran out of memory",
    NVML_ERROR_NO_DATA: "no data available yet",
    NVML_ERROR_NOT_READY: "GPU not ready",
    NVML_ERROR_GPU_NOT_FOUND: "GPU not found",
    NVML_ERROR_UNKNOWN: "unknown NVML error",
}

# Errors after which the whole device is unusable: stop querying it (each further query may
# take the driver's full timeout).
_DEVICE_FATAL = frozenset(
    {NVML_ERROR_GPU_IS_LOST, NVML_ERROR_RESET_REQUIRED, NVML_ERROR_GPU_NOT_FOUND}
)
# Errors after which the NVML session itself must be rebuilt.
_SESSION_FATAL = frozenset({NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_LIB_RM_VERSION_MISMATCH})


def _nvml_code(exc: BaseException) -> int | None:
    """The NVML return code carried by a ``pynvml.NVMLError`` (``exc.value``), else None."""
    # Duck-typed on purpose: pynvml.NVMLError and every NVMLError_* subclass carry ``value``.
    # Never compare NVMLError instances with ==: their __eq__ breaks on other types.
    if not any(cls.__name__ == "NVMLError" for cls in type(exc).__mro__):
        return None
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def describe_nvml_error(exc: BaseException) -> str:
    """A short human reason for an NVML (or any) exception; never raises."""
    code = _nvml_code(exc)
    if code is None:
        return describe_exception(exc)
    return _REASONS.get(code, f"NVML error {code} ({describe_exception(exc)})")


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class GpuProcess:
    """A compute process using a GPU (as NVML sees it: in a container the pid may be the host's)."""

    pid: int
    #: None when the driver does not report it (Windows WDDM, MIG without permission).
    used_memory_mb: float | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class GpuInfo:
    """One GPU. Every measured field is None when its query failed; see :attr:`errors`."""

    index: int
    name: str | None = None
    uuid: str | None = None
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    memory_free_mb: float | None = None
    #: Percent of the last sample period in which a kernel was running.
    utilization_percent: int | None = None
    #: Percent of the last sample period in which device memory was read or written.
    memory_utilization_percent: int | None = None
    temperature_c: int | None = None
    power_draw_w: float | None = None
    power_limit_w: float | None = None
    fan_speed_percent: int | None = None
    processes: list[GpuProcess] = field(default_factory=list)
    #: Why :attr:`processes` is empty although the GPU answered (not supported, no permission).
    processes_note: str | None = None
    #: Query name -> reason, for each query that failed (``{"fan_speed": "not supported ..."}``).
    errors: dict[str, str] = field(default_factory=dict)
    #: Set when the device as a whole is unusable (lost, needs a reset); the rest is then partial.
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class GpuReport:
    """The result of one GPU probe.

    ``available`` is True when at least one GPU answered. When it is False, ``reason`` says why
    (no library, no driver, no GPU, every GPU lost...) and ``gpus`` holds the failed devices, if
    any were enumerated.
    """

    available: bool
    reason: str | None = None
    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str | None = None
    taken_at: str = field(default_factory=utc_now_iso)

    @classmethod
    def unavailable(cls, reason: str, gpus: list[GpuInfo] | None = None) -> GpuReport:
        return cls(available=False, reason=reason, gpus=list(gpus or []))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- session

_sessions: weakref.WeakSet[NvmlSession] = weakref.WeakSet()
_shared_sessions: dict[int, NvmlSession] = {}
_shared_lock = threading.Lock()


class NvmlSession:
    """One process-wide NVML initialisation for one NVML module. Thread-safe.

    Use :meth:`shared` to get the session every probe on that module uses; construct one
    directly only to control ``retry_interval`` or ``clock`` (tests).
    """

    def __init__(
        self,
        nvml: Any,
        *,
        retry_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nvml = nvml
        self.retry_interval = retry_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._initialised = False
        self._pid = os.getpid()
        self._failed_at: float | None = None
        self._failure_reason: str | None = None
        _sessions.add(self)

    @classmethod
    def shared(cls, nvml: Any) -> NvmlSession:
        """The session shared by every probe built on ``nvml`` (created on first use)."""
        with _shared_lock:
            session = _shared_sessions.get(id(nvml))
            # The session keeps a strong reference to its module, so the id cannot be reused
            # by another object while the entry exists; the identity check is belt and braces.
            if session is None or session.nvml is not nvml:
                session = cls(nvml)
                _shared_sessions[id(nvml)] = session
            return session

    @property
    def initialised(self) -> bool:
        return self._initialised and self._pid == os.getpid()

    def ensure(self) -> str | None:
        """Initialise NVML if needed. Returns None when ready, else the reason it is not."""
        with self._lock:
            self._forget_if_forked()
            if self._initialised:
                return None
            now = self._clock()
            if (
                self._failed_at is not None
                and self._failure_reason is not None
                and now - self._failed_at < self.retry_interval
            ):
                return self._failure_reason
            try:
                self.nvml.nvmlInit()
            except Exception as exc:
                reason = describe_nvml_error(exc)
                if reason != self._failure_reason:
                    logger.info("NVML unavailable: %s", reason)
                self._failed_at = now
                self._failure_reason = reason
                return reason
            self._initialised = True
            self._pid = os.getpid()
            self._failed_at = None
            self._failure_reason = None
            return None

    def mark_lost(self) -> None:
        """NVML said ``Uninitialized``: it is no longer ours to shut down; re-init next time."""
        with self._lock:
            self._initialised = False
            self._failed_at = None
            self._failure_reason = None

    def reset(self) -> None:
        """Shut down (if initialised here) and re-initialise on the next :meth:`ensure`."""
        self.shutdown()
        with self._lock:
            self._failed_at = None
            self._failure_reason = None

    def shutdown(self, *, timeout: float = -1) -> bool:
        """``nvmlShutdown`` if this process initialised NVML. True if it did. Never raises."""
        if not self._lock.acquire(timeout=timeout):
            return False
        try:
            self._forget_if_forked()
            if not self._initialised:
                return False
            self._initialised = False
            try:
                self.nvml.nvmlShutdown()
            except Exception as exc:
                logger.debug("nvmlShutdown failed: %s", describe_nvml_error(exc))
            return True
        finally:
            self._lock.release()

    def _forget_if_forked(self) -> None:
        # Called with the lock held. A forked child inherits the flag but not a usable NVML
        # state; it must initialise its own and must not shut down the parent's.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._initialised = False
            self._failed_at = None
            self._failure_reason = None

    def _after_fork_in_child(self) -> None:
        # The lock may have been held by another thread of the parent at fork time.
        self._lock = threading.Lock()
        self._forget_if_forked()


def _shutdown_all_sessions() -> None:
    """atexit hook: shut down every session this process initialised."""
    for session in list(_sessions):
        session.shutdown(timeout=2.0)


def _reset_sessions_after_fork() -> None:
    global _shared_lock, _default_lock
    _shared_lock = threading.Lock()
    _default_lock = threading.Lock()
    for session in list(_sessions):
        session._after_fork_in_child()


atexit.register(_shutdown_all_sessions)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_sessions_after_fork)


# --------------------------------------------------------------------------- probe


class _SessionLostError(Exception):
    """NVML reported Uninitialized (or the driver vanished) in the middle of a probe."""

    def __init__(self, reason: str, *, shut_down: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.shut_down = shut_down


class _DeviceLostError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _text(value: Any) -> str | None:
    """Old pynvml versions return bytes for names and UUIDs; recent ones return str."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _milliwatts_to_watts(value: Any) -> float | None:
    number = _int_or_none(value)
    return None if number is None else round(number / 1000, 1)


def _load_pynvml() -> Any:
    import pynvml  # optional dependency, imported on first use

    return pynvml


class GpuProbe:
    """Reads every NVIDIA GPU on this host through NVML.

    ``GpuProbe()`` uses the installed ``pynvml`` (imported on first probe); ``GpuProbe(nvml=m)``
    uses module-like object ``m``. Probes on the same module share one :class:`NvmlSession`
    unless ``session`` is given.

    :meth:`probe` never raises; it is synchronous and makes blocking driver calls (typically a
    few milliseconds in all), so call it from async code with ``asyncio.to_thread``.
    """

    def __init__(self, nvml: Any | None = None, *, session: NvmlSession | None = None) -> None:
        if session is not None and nvml is not None and session.nvml is not nvml:
            raise ValueError("session was built on another NVML module")
        self._nvml = nvml if nvml is not None else (session.nvml if session else None)
        self._session = session

    def _get_session(self) -> NvmlSession | str:
        if self._session is not None:
            return self._session
        nvml = self._nvml
        if nvml is None:
            try:
                nvml = _load_pynvml()
            except Exception as exc:  # ImportError, or a broken install
                return (
                    "NVML Python bindings not installed (pip install nvidia-ml-py): "
                    f"{describe_exception(exc)}"
                )
            self._nvml = nvml
        self._session = NvmlSession.shared(nvml)
        return self._session

    @property
    def session(self) -> NvmlSession | None:
        """The NVML session, once the module is known (after the first probe if not injected)."""
        result = self._get_session()
        return result if isinstance(result, NvmlSession) else None

    def probe(self, *, minimal: bool = False) -> GpuReport:
        """Read every GPU. ``minimal=True`` reads only identity, memory and utilisation
        (what the per-request snapshot needs), skipping temperature, power, fan and processes.
        """
        try:
            return self._probe(minimal=minimal)
        except Exception as exc:  # last resort: a probe must never break a request or a task
            logger.exception("GPU probe failed unexpectedly")
            return GpuReport.unavailable(f"GPU probe failed: {describe_exception(exc)}")

    def _probe(self, *, minimal: bool) -> GpuReport:
        session = self._get_session()
        if isinstance(session, str):
            return GpuReport.unavailable(session)
        reason = session.ensure()
        if reason is not None:
            return GpuReport.unavailable(reason)
        nvml = session.nvml
        try:
            count = self._call(nvml.nvmlDeviceGetCount)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                return GpuReport.unavailable(f"NVML returned an invalid GPU count: {count!r}")
            if count == 0:
                return GpuReport.unavailable("no NVIDIA GPU detected")
            driver_version = None if minimal else self._driver_version(nvml)
            gpus = [self._probe_device(nvml, index, minimal=minimal) for index in range(count)]
        except _SessionLostError as lost:
            if lost.shut_down:
                session.reset()
            else:
                session.mark_lost()
            return GpuReport.unavailable(lost.reason)
        except _DeviceLostError as lost:  # from nvmlDeviceGetCount: treat as no usable GPU
            return GpuReport.unavailable(lost.reason)
        except Exception as exc:
            if _nvml_code(exc) is None:
                raise
            return GpuReport.unavailable(f"cannot enumerate GPUs: {describe_nvml_error(exc)}")

        if not any(gpu.ok for gpu in gpus):
            details = "; ".join(f"GPU {gpu.index}: {gpu.error}" for gpu in gpus)
            return GpuReport(
                available=False,
                reason=f"no GPU answered ({details})",
                gpus=gpus,
                driver_version=driver_version,
            )
        return GpuReport(available=True, gpus=gpus, driver_version=driver_version)

    def _driver_version(self, nvml: Any) -> str | None:
        fn = getattr(nvml, "nvmlSystemGetDriverVersion", None)
        if fn is None:
            return None
        try:
            return _text(self._call(fn))
        except _SessionLostError:
            raise
        except Exception as exc:
            logger.debug("driver version unavailable: %s", describe_nvml_error(exc))
            return None

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any) -> Any:
        """Call an NVML function, translating the errors that abort a device or the session."""
        try:
            return fn(*args)
        except Exception as exc:
            code = _nvml_code(exc)
            if code == NVML_ERROR_UNINITIALIZED:
                raise _SessionLostError(
                    "NVML was shut down during the probe; it will be re-initialised next time",
                    shut_down=False,
                ) from exc
            if code in _SESSION_FATAL:
                raise _SessionLostError(describe_nvml_error(exc), shut_down=True) from exc
            if code in _DEVICE_FATAL:
                raise _DeviceLostError(describe_nvml_error(exc)) from exc
            raise

    def _probe_device(self, nvml: Any, index: int, *, minimal: bool) -> GpuInfo:
        info = GpuInfo(index=index)

        def query(name: str, fn_name: str, *args: Any) -> Any:
            fn = getattr(nvml, fn_name, None)
            if fn is None:
                info.errors[name] = f"{fn_name} not provided by this NVML binding"
                return None
            try:
                return self._call(fn, *args)
            except (_SessionLostError, _DeviceLostError):
                raise
            except Exception as exc:
                info.errors[name] = describe_nvml_error(exc)
                return None

        try:
            handle = self._call(nvml.nvmlDeviceGetHandleByIndex, index)
        except (_SessionLostError, _DeviceLostError) as exc:
            if isinstance(exc, _SessionLostError):
                raise
            info.error = exc.reason
            return info
        except Exception as exc:
            info.error = f"cannot open GPU {index}: {describe_nvml_error(exc)}"
            return info

        try:
            info.name = _text(query("name", "nvmlDeviceGetName", handle))
            info.uuid = _text(query("uuid", "nvmlDeviceGetUUID", handle))

            memory = query("memory", "nvmlDeviceGetMemoryInfo", handle)
            if memory is not None:
                info.memory_total_mb = bytes_to_mb(getattr(memory, "total", None))
                info.memory_used_mb = bytes_to_mb(getattr(memory, "used", None))
                info.memory_free_mb = bytes_to_mb(getattr(memory, "free", None))

            rates = query("utilization", "nvmlDeviceGetUtilizationRates", handle)
            if rates is not None:
                info.utilization_percent = _int_or_none(getattr(rates, "gpu", None))
                info.memory_utilization_percent = _int_or_none(getattr(rates, "memory", None))

            if not minimal:
                sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", NVML_TEMPERATURE_GPU)
                info.temperature_c = _int_or_none(
                    query("temperature", "nvmlDeviceGetTemperature", handle, sensor)
                )
                info.power_draw_w = _milliwatts_to_watts(
                    query("power_draw", "nvmlDeviceGetPowerUsage", handle)
                )
                info.power_limit_w = _milliwatts_to_watts(
                    query("power_limit", "nvmlDeviceGetEnforcedPowerLimit", handle)
                )
                info.fan_speed_percent = _int_or_none(
                    query("fan_speed", "nvmlDeviceGetFanSpeed", handle)
                )
                info.processes, info.processes_note = self._processes(nvml, handle)
        except _DeviceLostError as lost:
            info.error = lost.reason
        return info

    def _processes(self, nvml: Any, handle: Any) -> tuple[list[GpuProcess], str | None]:
        try:
            raw = self._call(nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        except (_SessionLostError, _DeviceLostError):
            raise
        except Exception as exc:
            # An old driver lacks the _v3 entry point behind the unversioned name; pynvml then
            # raises NVMLLibraryMismatchError (not an NVMLError). Fall back to _v2.
            fallback = getattr(nvml, "nvmlDeviceGetComputeRunningProcesses_v2", None)
            if type(exc).__name__ != "NVMLLibraryMismatchError" or fallback is None:
                return [], f"processes unavailable: {describe_nvml_error(exc)}"
            try:
                raw = self._call(fallback, handle)
            except (_SessionLostError, _DeviceLostError):
                raise
            except Exception as exc2:
                return [], f"processes unavailable: {describe_nvml_error(exc2)}"
        processes: list[GpuProcess] = []
        for item in raw or []:
            pid = _int_or_none(getattr(item, "pid", None))
            if pid is None:
                continue
            processes.append(
                GpuProcess(
                    pid=pid, used_memory_mb=bytes_to_mb(getattr(item, "usedGpuMemory", None))
                )
            )
        return processes, None


_default_probe: GpuProbe | None = None
_default_lock = threading.Lock()


def default_gpu_probe() -> GpuProbe:
    """The process-wide probe on the installed ``pynvml`` (what tasks and requests should use)."""
    global _default_probe
    if _default_probe is None:
        with _default_lock:
            if _default_probe is None:
                _default_probe = GpuProbe()
    return _default_probe
