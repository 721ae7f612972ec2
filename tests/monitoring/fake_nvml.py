"""A fake of the ``pynvml`` module for the functions the GPU probe uses.

It behaves like the real bindings where the probe can tell the difference:

* every failure is a REAL ``pynvml.NVMLError`` subclass (``pynvml.NVMLError(code)`` maps the
  code to ``NVMLError_LibraryNotFound``, ``NVMLError_NotSupported``...), so the probe is tested
  against the exceptions it will meet in production;
* like libnvidia-ml, it is reference-counted: ``nvmlInit`` increments, ``nvmlShutdown``
  decrements, and ANY other call made while the count is zero -- before ``nvmlInit`` or after
  the last ``nvmlShutdown`` -- raises ``NVMLError_Uninitialized``. A probe that forgets to
  initialise cannot pass a test;
* device functions take the handle returned by ``nvmlDeviceGetHandleByIndex`` (passing an index
  raises ``NVMLError_InvalidArgument``), memory is in bytes, power in milliwatts, names are
  ``str`` (as in nvidia-ml-py >= 11.5; configure ``bytes`` to imitate older bindings);
* ``nvmlDeviceGetComputeRunningProcesses`` returns objects with ``pid`` and ``usedGpuMemory``
  (None where the driver does not report it, as on Windows WDDM).

Scenarios: :meth:`FakeNvml.no_library`, :meth:`driver_not_loaded`, :meth:`no_permission`,
:meth:`no_gpu`, :meth:`query_fails`, :meth:`gpu_lost`; or configure ``init_error``,
``failures`` (module-level functions) and ``FakeGpu.failures`` / ``FakeGpu.lost`` directly.
Counters: ``init_attempts``, ``init_count`` (successful), ``shutdown_count``, ``calls``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

MiB = 1024 * 1024
GiB = 1024 * MiB

#: What a configured failure can be: an NVML return code (raised as the real NVMLError
#: subclass) or any exception instance (raised as is).
Failure = int | BaseException


@dataclass
class FakeProcess:
    pid: int
    #: Bytes, or None when the driver does not say.
    used_gpu_memory: int | None


@dataclass
class FakeGpu:
    name: str | bytes = "NVIDIA GeForce RTX 4090"
    uuid: str | bytes = "GPU-5c1e6a4e-0000-4000-8000-000000000000"
    memory_total: int = 24564 * MiB
    memory_used: int = 5120 * MiB + 512 * 1024  # 5120.5 MiB
    utilization_gpu: int = 87
    utilization_memory: int = 41
    temperature: int = 66
    power_usage_mw: int = 312_456  # 312.5 W
    power_limit_mw: int = 450_000  # 450.0 W
    fan_speed: int = 47
    processes: list[FakeProcess] = field(default_factory=list)
    #: NVML function name -> failure, for this device only.
    failures: dict[str, Failure] = field(default_factory=dict)
    #: Every query on this device raises GpuIsLost; with ``lost_at_handle`` getting its handle
    #: already does.
    lost: bool = False
    lost_at_handle: bool = False

    @property
    def memory_free(self) -> int:
        return self.memory_total - self.memory_used


@dataclass(frozen=True)
class FakeHandle:
    index: int


def _error(failure: Failure) -> BaseException:
    if isinstance(failure, BaseException):
        return failure
    return pynvml.NVMLError(failure)


class FakeNvml:
    """Module-like object: pass it where the probe expects the ``pynvml`` module."""

    # The real exception hierarchy and constants, as the module exposes them.
    NVMLError = pynvml.NVMLError
    NVMLLibraryMismatchError = pynvml.NVMLLibraryMismatchError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        init_error: Failure | None = None,
        failures: dict[str, Failure] | None = None,
        driver_version: str = "550.54.14",
        init_delay: float = 0.0,
    ) -> None:
        self.gpus: list[FakeGpu] = list(gpus) if gpus is not None else [FakeGpu()]
        self.init_error = init_error
        self.failures: dict[str, Failure] = dict(failures or {})
        self.driver_version = driver_version
        #: Seconds nvmlInit takes (the real one takes ~100 ms); widens race windows in tests.
        self.init_delay = init_delay
        self.init_attempts = 0
        self.init_count = 0
        self.shutdown_count = 0
        self.refcount = 0
        #: (function name, device index or None) for every call, in order.
        self.calls: list[tuple[str, int | None]] = []
        #: Thread ident of every call (to check where the probe ran).
        self.call_threads: list[int] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ scenarios

    @classmethod
    def no_library(cls) -> FakeNvml:
        """No libnvidia-ml.so: what this machine (no NVIDIA driver) really does."""
        return cls(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    @classmethod
    def driver_not_loaded(cls) -> FakeNvml:
        return cls(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)

    @classmethod
    def no_permission(cls) -> FakeNvml:
        return cls(init_error=pynvml.NVML_ERROR_NO_PERMISSION)

    @classmethod
    def no_gpu(cls) -> FakeNvml:
        return cls(gpus=[])

    @classmethod
    def query_fails(
        cls, function: str, code: Failure = pynvml.NVML_ERROR_NOT_SUPPORTED
    ) -> FakeNvml:
        """One GPU on which ``function`` fails with ``code`` (NotSupported by default)."""
        return cls(gpus=[FakeGpu(failures={function: code})])

    @classmethod
    def gpu_lost(cls, *, at_handle: bool = False) -> FakeNvml:
        """Two GPUs; the second has fallen off the bus."""
        healthy = FakeGpu()
        lost = FakeGpu(
            name="NVIDIA A100-SXM4-80GB",
            uuid="GPU-lost-0001",
            lost=True,
            lost_at_handle=at_handle,
        )
        return cls(gpus=[healthy, lost])

    # ------------------------------------------------------------------ bookkeeping

    @property
    def initialised(self) -> bool:
        return self.refcount > 0

    def _enter(self, name: str, index: int | None = None) -> None:
        with self._lock:
            self.calls.append((name, index))
            self.call_threads.append(threading.get_ident())
            initialised = self.refcount > 0
        if not initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        if name in self.failures:
            raise _error(self.failures[name])

    def _device(self, name: str, handle: Any) -> FakeGpu:
        index = handle.index if isinstance(handle, FakeHandle) else None
        self._enter(name, index)
        if not isinstance(handle, FakeHandle) or not 0 <= handle.index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[handle.index]
        if gpu.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if name in gpu.failures:
            raise _error(gpu.failures[name])
        return gpu

    def device_calls(self, index: int) -> list[str]:
        return [name for name, i in self.calls if i == index]

    # ------------------------------------------------------------------ init / shutdown

    def nvmlInit(self) -> None:
        if self.init_delay:
            time.sleep(self.init_delay)  # outside the lock: the fake itself must not serialise
        with self._lock:
            self.init_attempts += 1
            self.calls.append(("nvmlInit", None))
            if self.init_error is not None:
                raise _error(self.init_error)
            self.refcount += 1
            self.init_count += 1

    def nvmlShutdown(self) -> None:
        with self._lock:
            self.calls.append(("nvmlShutdown", None))
            if self.refcount == 0:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
            self.refcount -= 1
            self.shutdown_count += 1

    # ------------------------------------------------------------------ system

    def nvmlSystemGetDriverVersion(self) -> str:
        self._enter("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._enter("nvmlDeviceGetHandleByIndex", index if isinstance(index, int) else None)
        if not isinstance(index, int) or not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        gpu = self.gpus[index]
        if gpu.lost and gpu.lost_at_handle:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        if "nvmlDeviceGetHandleByIndex" in gpu.failures:
            raise _error(gpu.failures["nvmlDeviceGetHandleByIndex"])
        return FakeHandle(index)

    # ------------------------------------------------------------------ device queries

    def nvmlDeviceGetName(self, handle: Any) -> str | bytes:
        return self._device("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes:
        return self._device("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any:
        gpu = self._device("nvmlDeviceGetMemoryInfo", handle)
        return SimpleNamespace(total=gpu.memory_total, free=gpu.memory_free, used=gpu.memory_used)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any:
        gpu = self._device("nvmlDeviceGetUtilizationRates", handle)
        return SimpleNamespace(gpu=gpu.utilization_gpu, memory=gpu.utilization_memory)

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        gpu = self._device("nvmlDeviceGetTemperature", handle)
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return self._device("nvmlDeviceGetPowerUsage", handle).power_usage_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return self._device("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetFanSpeed(self, handle: Any) -> int:
        return self._device("nvmlDeviceGetFanSpeed", handle).fan_speed

    def _processes(self, gpu: FakeGpu) -> list[Any]:
        return [
            SimpleNamespace(
                pid=p.pid, usedGpuMemory=p.used_gpu_memory, gpuInstanceId=0, computeInstanceId=0
            )
            for p in gpu.processes
        ]

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]:
        return self._processes(self._device("nvmlDeviceGetComputeRunningProcesses", handle))

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: Any) -> list[Any]:
        return self._processes(self._device("nvmlDeviceGetComputeRunningProcesses_v2", handle))
