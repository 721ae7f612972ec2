"""Host probe over psutil: real readings, CPU arithmetic, failures, Ollama process detection."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import namedtuple
from types import SimpleNamespace

import psutil
import pytest

from core.probes import host as host_module
from core.probes.host import HostProbe, find_ollama_processes, ollama_role

MiB = 1024 * 1024

# --------------------------------------------------------------------------- real psutil


def test_real_host_readings_are_plausible():
    now = [100.0]
    probe = HostProbe(clock=lambda: now[0])
    now[0] += 1.0  # past min_cpu_interval, so this first probe has a CPU figure
    report = probe.probe()

    assert report.hostname == socket.gethostname()

    ram = report.ram
    assert ram.error is None
    assert ram.total_mb is not None and ram.used_mb is not None
    assert ram.available_mb is not None and ram.percent is not None
    assert ram.total_mb > ram.used_mb > 0
    assert ram.total_mb > ram.available_mb > 0
    assert 0 <= ram.percent <= 100

    swap = report.swap
    assert swap.error is None
    assert swap.total_mb is not None and swap.used_mb is not None and swap.percent is not None
    assert swap.total_mb >= swap.used_mb >= 0
    assert 0 <= swap.percent <= 100

    cpu = report.cpu
    assert cpu.count == psutil.cpu_count()
    assert cpu.percent is not None and 0 <= cpu.percent <= 100
    assert len(cpu.per_core) == psutil.cpu_count()
    assert all(0 <= value <= 100 for value in cpu.per_core)

    load = report.load_average
    assert load.error is None
    assert load.one is not None and load.five is not None and load.fifteen is not None
    assert min(load.one, load.five, load.fifteen) >= 0
    assert (load.one, load.five, load.fifteen) == tuple(
        pytest.approx(v, abs=5) for v in os.getloadavg()
    )

    data = json.loads(json.dumps(report.as_dict()))
    assert data["ram"]["total_mb"] == ram.total_mb
    assert isinstance(data["ollama_running"], bool)


def test_real_ram_matches_psutil():
    vm = psutil.virtual_memory()
    ram = HostProbe().ram()
    assert ram.total_mb == round(vm.total / MiB, 1)  # total does not move
    assert ram.used_mb == pytest.approx(vm.used / MiB, rel=0.2)


def test_first_cpu_reading_is_none_not_a_meaningless_zero():
    now = [100.0]
    probe = HostProbe(clock=lambda: now[0])
    cpu = probe.cpu()  # same instant as the baseline
    assert cpu.percent is None
    assert cpu.per_core == []
    assert cpu.note is not None
    assert cpu.note.startswith("first reading")
    assert cpu.count == psutil.cpu_count()

    now[0] += 1.0
    cpu = probe.cpu()
    assert cpu.percent is not None
    assert len(cpu.per_core) == psutil.cpu_count()
    assert cpu.note is None


# --------------------------------------------------------------------------- CPU arithmetic

CpuTimes = namedtuple(
    "CpuTimes",
    "user nice system idle iowait irq softirq steal guest guest_nice",
)


def times(user=0.0, system=0.0, idle=0.0, iowait=0.0, guest=0.0) -> CpuTimes:
    return CpuTimes(user, 0.0, system, idle, iowait, 0.0, 0.0, 0.0, guest, 0.0)


class FakePsutil:
    """Just enough psutil for the CPU arithmetic; every reading is scripted."""

    def __init__(self, readings):
        self._readings = list(readings)  # (total, per_core) per cpu_times pair
        self._current: tuple[CpuTimes, list[CpuTimes]] | None = None

    def cpu_count(self):
        return 2

    def cpu_times(self, percpu=False):
        if not percpu:
            self._current = self._readings.pop(0)
            return self._current[0]
        assert self._current is not None, "the total comes first, as in HostProbe"
        return self._current[1]


def test_cpu_percent_arithmetic_matches_psutil_rules():
    readings = [
        (times(user=100, idle=100), [times(user=50, idle=50), times(user=50, idle=50)]),
        # +30 user, +60 idle, +10 iowait (counts as idle), +20 guest (already in user) -> 30%
        (
            times(user=130, idle=160, iowait=10, guest=20),
            [times(user=80, idle=70), times(user=50, idle=100, iowait=10)],
        ),
    ]
    now = [0.0]
    probe = HostProbe(psutil_module=FakePsutil(readings), clock=lambda: now[0])
    now[0] = 5.0
    cpu = probe.cpu()
    assert cpu.percent == 30.0
    assert cpu.per_core == [60.0, 0.0]
    assert cpu.count == 2


def test_readings_closer_than_the_interval_repeat_the_last_figure():
    readings = [
        (times(user=0, idle=0), [times(), times()]),
        (times(user=50, idle=50), [times(user=50, idle=50), times(idle=100)]),
        (times(user=50, idle=60), [times(user=50, idle=60), times(idle=110)]),
        (times(user=150, idle=60), [times(user=100, idle=60), times(user=90, idle=110)]),
    ]
    now = [0.0]
    probe = HostProbe(psutil_module=FakePsutil(readings), clock=lambda: now[0])
    now[0] = 1.0
    assert probe.cpu().percent == 50.0
    now[0] = 1.05  # too soon: the same figure again, and the baseline stays where it was
    assert probe.cpu().percent == 50.0
    now[0] = 2.0  # measured against the reading at t=1.0: +100 user, +10 idle
    cpu = probe.cpu()
    assert cpu.percent == pytest.approx(90.9)
    assert cpu.per_core == [83.3, 90.0]


def test_cpu_baseline_belongs_to_the_probe_not_the_thread():
    # psutil.cpu_percent(interval=None) would give 0.0 on a new thread's first call.
    readings = [
        (times(user=0, idle=0), [times(), times()]),
        (times(user=25, idle=75), [times(user=25, idle=25), times(idle=50)]),
    ]
    now = [0.0]
    probe = HostProbe(psutil_module=FakePsutil(readings), clock=lambda: now[0])
    now[0] = 1.0
    result = []
    thread = threading.Thread(target=lambda: result.append(probe.cpu()))
    thread.start()
    thread.join()
    assert result[0].percent == 25.0
    assert result[0].per_core == [50.0, 0.0]


# --------------------------------------------------------------------------- failures


class BrokenPsutil:
    """Every reading raises, as psutil can in a locked-down container."""

    AccessDenied = psutil.AccessDenied
    NoSuchProcess = psutil.NoSuchProcess

    def __getattr__(self, name):
        def broken(*args, **kwargs):
            raise psutil.AccessDenied(msg=f"{name} denied")

        return broken


def test_every_failing_reading_gives_none_with_a_reason():
    probe = HostProbe(psutil_module=BrokenPsutil())
    report = probe.probe()
    assert report.ram.total_mb is None
    assert report.ram.error is not None
    assert report.ram.error.startswith("AccessDenied")
    assert "virtual_memory denied" in report.ram.error
    assert report.swap.total_mb is None and report.swap.error
    assert report.cpu.percent is None and report.cpu.count is None
    assert report.cpu.note == "CPU times unavailable"
    assert report.load_average.one is None and report.load_average.error is not None
    assert "getloadavg denied" in report.load_average.error
    assert report.ollama_processes == []
    assert report.ollama_error is not None
    assert report.ollama_error.startswith("process scan failed: AccessDenied")
    assert report.hostname == socket.gethostname()
    json.dumps(report.as_dict())


def test_load_average_missing_on_the_platform(monkeypatch):
    monkeypatch.delattr(os, "getloadavg")
    probe = HostProbe(psutil_module=SimpleNamespace())
    assert probe.load_average().error == "load average not available on this platform"


# --------------------------------------------------------------------------- Ollama processes


@pytest.mark.parametrize(
    ("name", "cmdline", "role"),
    [
        ("ollama", ["/usr/local/bin/ollama", "serve"], "server"),
        ("ollama.exe", ["C:\\Program Files\\Ollama\\ollama.exe", "serve"], "server"),
        ("python3", ["python3", "fake.py", "ollama serve"], "server"),
        ("python3", ["python3", "fake.py", "ollama", "serve"], "server"),
        ("ollama", ["/usr/bin/ollama", "runner", "--model", "/blobs/sha256-abc"], "runner"),
        ("ollama_llama_se", ["/tmp/ollama123/runners/cuda_v12/ollama_llama_server"], "runner"),
        ("ollama", ["ollama", "run", "llama3"], "other"),
        ("ollama", None, "other"),  # cmdline hidden from us
        ("python3", ["python3", "manage.py", "runserver"], None),
        ("ollama-webui", ["node", "server.js"], None),
        (None, None, None),
        ("kthreadd", [], None),
    ],
)
def test_ollama_role(name, cmdline, role):
    assert ollama_role(name, cmdline) == role


class FakeProc:
    def __init__(self, pid, name, cmdline, rss=None, error=None):
        self.pid = pid
        self.info = {"name": name, "cmdline": cmdline}
        self._rss = rss
        self._error = error

    def memory_info(self):
        if self._error is not None:
            raise self._error
        return SimpleNamespace(rss=self._rss, vms=2 * self._rss)


def test_ollama_processes_from_a_scripted_process_table(monkeypatch):
    procs = [
        FakeProc(1, "systemd", ["/sbin/init"], rss=10 * MiB),
        FakeProc(2, "kthreadd", [], rss=0),
        FakeProc(300, "ollama", ["/usr/local/bin/ollama", "serve"], rss=512 * MiB),
        FakeProc(310, "ollama", ["/usr/local/bin/ollama", "runner", "--port", "1"], 4096 * MiB),
        FakeProc(320, "ollama_llama_se", ["ollama_llama_server"], rss=1024 * MiB + MiB // 2),
        FakeProc(330, "ollama", ["ollama", "serve"], error=psutil.AccessDenied(330)),
        FakeProc(340, "ollama", ["ollama", "serve"], error=psutil.NoSuchProcess(340)),
        FakeProc(350, "ollama", ["ollama", "serve"], error=psutil.ZombieProcess(350)),
        FakeProc(360, None, None, rss=MiB),  # attributes denied: cannot tell, skipped
        FakeProc(370, "python3", ["python3", "app.py"], rss=MiB),
    ]
    seen_attrs = []

    def process_iter(attrs=None, ad_value=None):
        seen_attrs.append(attrs)
        return iter(procs)

    monkeypatch.setattr(psutil, "process_iter", process_iter)
    report = HostProbe().probe()

    assert seen_attrs == [["name", "cmdline"]]
    found = {p.pid: p for p in report.ollama_processes}
    assert sorted(found) == [300, 310, 320, 330]
    assert (found[300].role, found[300].rss_mb, found[300].note) == ("server", 512.0, None)
    assert (found[310].role, found[310].rss_mb) == ("runner", 4096.0)
    assert (found[320].role, found[320].rss_mb) == ("runner", 1024.5)
    assert found[330].rss_mb is None
    assert found[330].note is not None
    assert found[330].note.startswith("access denied")
    assert report.ollama_rss_mb == 512.0 + 4096.0 + 1024.5
    assert report.ollama_running is True
    assert report.ollama_error is None


def test_no_ollama_running(monkeypatch):
    monkeypatch.setattr(psutil, "process_iter", lambda *a, **k: iter([]))
    report = HostProbe().probe()
    assert report.ollama_processes == []
    assert report.ollama_rss_mb is None
    assert report.ollama_running is False
    assert report.as_dict()["ollama_running"] is False


def test_process_scan_failing_midway_keeps_what_it_found(monkeypatch):
    def process_iter(*args, **kwargs):
        yield FakeProc(300, "ollama", ["ollama", "serve"], rss=100 * MiB)
        raise OSError("/proc vanished")

    monkeypatch.setattr(psutil, "process_iter", process_iter)
    found, error = find_ollama_processes()
    assert [p.pid for p in found] == [300]
    assert error == "process scan failed: OSError: /proc vanished"


def test_probe_can_skip_the_process_scan(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("process table scanned")

    monkeypatch.setattr(psutil, "process_iter", fail)
    report = HostProbe().probe(include_processes=False)
    assert report.ollama_processes == []
    assert report.ollama_error is None


@pytest.fixture
def sleeper():
    """Start ``argv`` as a real process that sleeps; kill it afterwards."""
    started = []

    def start(argv):
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=10)


SLEEP = "import time; time.sleep(60)"


def test_real_process_with_ollama_serve_in_its_argv_is_found(sleeper):
    proc = sleeper([sys.executable, "-c", SLEEP, "ollama", "serve"])
    found, error = find_ollama_processes()
    assert error is None
    mine = [p for p in found if p.pid == proc.pid]
    assert len(mine) == 1
    assert mine[0].role == "server"
    assert mine[0].rss_mb is not None and mine[0].rss_mb > 1  # a Python interpreter's RSS
    assert mine[0].note is None
    # Our own pytest process is not mistaken for Ollama.
    assert os.getpid() not in {p.pid for p in found}


def test_real_process_named_ollama_is_found(sleeper, tmp_path):
    fake_binary = tmp_path / "ollama"
    fake_binary.symlink_to(sys.executable)  # the kernel names the process after this path
    proc = sleeper([str(fake_binary), "-c", SLEEP])
    deadline = time.monotonic() + 60  # only a failing run waits this long
    while True:
        found, _ = find_ollama_processes()
        mine = [p for p in found if p.pid == proc.pid]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(mine) == 1
    assert mine[0].name == "ollama"
    assert mine[0].role == "other"
    assert mine[0].rss_mb is not None and mine[0].rss_mb > 1


def test_default_host_probe_is_shared():
    assert host_module.default_host_probe() is host_module.default_host_probe()
