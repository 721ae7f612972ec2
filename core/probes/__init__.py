"""Telemetry probes: plain, typed Python (no Django), safe to call from requests and tasks.

* :mod:`.gpu` -- NVIDIA GPUs through NVML (``pynvml``): :class:`GpuProbe` -> :class:`GpuReport`.
* :mod:`.host` -- RAM, swap, CPU, load and the Ollama processes through psutil:
  :class:`HostProbe` -> :class:`HostReport`.
* :mod:`.snapshot` -- the cheap per-request GPU/RAM :func:`snapshot` and :func:`resource_delta`.
* :mod:`.ollama` -- the models each Ollama server has loaded (``GET /api/ps``):
  :class:`OllamaPsProbe` -> :class:`OllamaPsReport`.

No probe raises: failures come back as ``available=False``/``None`` fields with a reason.
Every result is a dataclass with ``as_dict()`` (JSON-serialisable).
"""

from .gpu import (
    GpuInfo,
    GpuProbe,
    GpuProcess,
    GpuReport,
    NvmlSession,
    default_gpu_probe,
    describe_nvml_error,
)
from .host import (
    CpuInfo,
    HostProbe,
    HostReport,
    LoadAverage,
    OllamaProcess,
    RamInfo,
    SwapInfo,
    default_host_probe,
    find_ollama_processes,
    ollama_role,
)
from .ollama import OllamaPsProbe, OllamaPsReport, RunningModel, parse_ps
from .snapshot import (
    GpuDelta,
    GpuSnapshot,
    RamSnapshot,
    ResourceDelta,
    ResourceSnapshot,
    asnapshot,
    compute_resource_delta,
    resource_delta,
    snapshot,
    take_snapshot,
)

__all__ = [
    "CpuInfo",
    "GpuDelta",
    "GpuInfo",
    "GpuProbe",
    "GpuProcess",
    "GpuReport",
    "GpuSnapshot",
    "HostProbe",
    "HostReport",
    "LoadAverage",
    "NvmlSession",
    "OllamaProcess",
    "OllamaPsProbe",
    "OllamaPsReport",
    "RamInfo",
    "RamSnapshot",
    "ResourceDelta",
    "ResourceSnapshot",
    "RunningModel",
    "SwapInfo",
    "asnapshot",
    "compute_resource_delta",
    "default_gpu_probe",
    "default_host_probe",
    "describe_nvml_error",
    "find_ollama_processes",
    "ollama_role",
    "parse_ps",
    "resource_delta",
    "snapshot",
    "take_snapshot",
]
