"""The machine a benchmark ran on, and peak memory of a process tree.

``machine_info()`` names what a reader needs to compare numbers: CPU model, cores, RAM, load,
versions. ``TreeMemory`` samples the summed RSS of this process and all its descendants (the
driver, Ray's GCS/raylet and every Ray worker when Ray was started by this process) in a
background thread and keeps the peak.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from typing import Optional


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _ram_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_info() -> dict:
    """CPU model, cores, RAM, load average, accelerator, and torch/ray/python versions."""
    import torch

    try:
        import ray

        ray_version = ray.__version__
    except ImportError:  # pragma: no cover
        ray_version = None
    flags = _cpu_flags()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    return {
        "cpu": _cpu_model(),
        "cores": cpu_count(),
        "ram_gib": _ram_gib(),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_1m_at_start": round(load[0], 2) if load[0] is not None else None,
        "torch": torch.__version__,
        "ray": ray_version,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def load_avg() -> Optional[float]:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _label(p) -> str:
    """A short name for a process: Ray's process title (``ray::MapWorker(...)``, ``ray::IDLE``; it
    changes when an idle worker becomes an actor, so it is read at every sample) or the program."""
    try:
        cmd = p.cmdline()
        first = cmd[0] if cmd else p.name()
    except Exception:  # noqa: BLE001 -- exited or not readable
        return "?"
    if first.startswith("ray::"):
        return first[:80]
    return (os.path.basename(first) + (" " + os.path.basename(cmd[1]) if len(cmd) > 1 and "python" in first else ""))[:80]


def _psutil():
    """psutil if installed, else the copy Ray ships (importing ray puts it on the path)."""
    try:
        import psutil
    except ImportError:
        import ray  # noqa: F401 -- adds ray/thirdparty_files (with psutil) to sys.path
        import psutil
    return psutil


def _tree_psutil(root: int, by_label: Optional[dict[str, int]] = None) -> tuple[int, dict[int, float]]:
    psutil = _psutil()

    try:
        proc = psutil.Process(root)
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0, {}
    total, cpu = 0, {}
    for p in procs:
        try:
            with p.oneshot():
                rss = p.memory_info().rss
                t = p.cpu_times()
            total += rss
            cpu[p.pid] = t.user + t.system
            if by_label is not None:
                label = "driver" if p.pid == root else _label(p)
                by_label[label] = by_label.get(label, 0) + rss
        except psutil.Error:  # exited between listing and reading
            pass
    return total, cpu


def _tree_proc(root: int) -> tuple[int, dict[int, float]]:
    """Without psutil: (summed RSS bytes, {pid: CPU seconds}) of the tree from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    cpu: dict[int, float] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    tick = os.sysconf("SC_CLK_TCK")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/statm") as f:
                rss[int(name)] = int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
        cpu[int(name)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        children.setdefault(int(fields[1]), []).append(int(name))
    total, stack, seen = 0, [root], {}
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        if pid in cpu:
            seen[pid] = cpu[pid]
        stack.extend(children.get(pid, []))
    return total, seen


def tree_rss(root: Optional[int] = None) -> int:
    """Summed RSS (bytes) of process ``root`` (default: this one) and all its descendants.

    Shared pages (Ray's object store is shared memory) count once per process that maps them,
    so this is an upper bound of the tree's footprint, the same way for every run compared."""
    return tree_sample(root)[0]


def tree_sample(root: Optional[int] = None, by_label: Optional[dict[str, int]] = None) -> tuple[int, dict[int, float]]:
    """(summed RSS bytes, {pid: CPU seconds so far}) of the tree; ``by_label`` (RSS summed per
    process kind) needs psutil (installed, or Ray's copy)."""
    root = os.getpid() if root is None else root
    try:
        return _tree_psutil(root, by_label)
    except ImportError:
        return _tree_proc(root)


class TreeMemory:
    """Context manager: samples the process tree every ``interval_s``; keeps the peak summed RSS
    (bytes) and the CPU seconds the tree used meanwhile (``cpu_s``: per process, last sample minus
    its value at the start, so a worker that exits counts up to its last sample). CPU seconds do
    not depend on how many other programs share the machine; wall seconds do."""

    def __init__(self, interval_s: float = 0.25):
        self.interval_s = interval_s
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self.peak_by_process: dict[str, int] = {}   # RSS per process kind at the peak sample
        self._cpu0: dict[int, float] = {}
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        by_label: dict[str, int] = {}
        rss, cpu = tree_sample(by_label=by_label)
        if rss > self.peak:
            self.peak, self.peak_by_process = rss, by_label
        self._cpu.update(cpu)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_by_pid().values())

    def cpu_by_pid(self) -> dict[int, float]:
        """CPU seconds each process of the tree used while sampled."""
        return {pid: v - self._cpu0.get(pid, 0.0) for pid, v in self._cpu.items()}

    def __enter__(self) -> "TreeMemory":
        self.baseline, self._cpu0 = tree_sample()
        self.peak = 0
        self._cpu = dict(self._cpu0)
        self._sample()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


class Timer:
    """``with Timer() as t: ...; t.s`` -> elapsed seconds (perf_counter)."""

    def __enter__(self) -> "Timer":
        self.t0 = time.perf_counter()
        self.s = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self.t0
