"""NVML's view of one process's GPU memory, sampled in a thread: the peak per named phase.

Independent of the monitor's code on purpose: `make gpu` sets this in-process figure beside
what `mineru-fit monitor watch` samples from outside.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Optional

COMPUTE_PROCESSES = ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2",
                     "nvmlDeviceGetComputeRunningProcesses")


class NvmlPeak:
    """Samples this process's GPU memory through NVML at `interval_s`; peaks per phase.

    NVML's per-process figure when it lists this pid. When it never does (a sandbox or container
    that hides pids), the device's used memory above its level before this process touched CUDA
    stands in, and `source` says so. With NVML accounting already on (it is a card setting, so
    it is never switched on here) the driver's own per-process maximum is read at the end too.
    """

    def __init__(self, gpu_index: int = 0, interval_s: float = 0.02, pid: Optional[int] = None) -> None:
        self.gpu_index = gpu_index
        self.interval_s = interval_s
        self.pid = pid or os.getpid()
        self.phase = "start"
        self.process_peaks: dict[str, int] = {}
        self.delta_peaks: dict[str, int] = {}
        self.samples = 0
        self.process_samples = 0
        self.baseline_bytes: Optional[int] = None
        self._span_s: tuple[float, float] = (0.0, 0.0)
        self.reason: Optional[str] = None
        self._nvml: Any = None
        self._handle: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="nvml-peak")
        self._open()

    def _open(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            # NVML numbers GPUs as nvidia-smi does; with CUDA_VISIBLE_DEVICES set, pass the NVML index.
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
            self._nvml = pynvml
            self.baseline_bytes = self._device_used()
        except Exception as exc:  # no driver, no GPU: the caller still runs, without samples
            self._nvml = None
            self.reason = f"NVML unavailable: {exc}"

    def _device_used(self) -> Optional[int]:
        nvml = self._nvml
        version = getattr(nvml, "nvmlMemory_v2", None)
        try:
            # v1 "used" counts driver-reserved memory on new drivers; v2 reports it apart.
            info = (nvml.nvmlDeviceGetMemoryInfo(self._handle, version=version) if version is not None
                    else nvml.nvmlDeviceGetMemoryInfo(self._handle))
            return int(info.used)
        except Exception:
            try:
                return int(nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
            except Exception:
                return None

    def _process_used(self) -> Optional[int]:
        nvml = self._nvml
        for name in COMPUTE_PROCESSES:
            fn = getattr(nvml, name, None)
            if fn is None:
                continue
            try:
                entries = fn(self._handle)
            except nvml.NVMLError:
                continue
            for entry in entries:
                if entry.pid == self.pid and entry.usedGpuMemory is not None:
                    return int(entry.usedGpuMemory)
            return None
        return None

    def read(self) -> tuple[Optional[int], Optional[int]]:
        """(NVML's figure for this pid or None, the device's used memory above the baseline or None)."""
        if self._nvml is None:
            return None, None
        used = self._device_used()
        delta = max(0, used - self.baseline_bytes) if used is not None and self.baseline_bytes is not None else None
        return self._process_used(), delta

    def start(self) -> "NvmlPeak":
        if self._nvml is not None:
            self._thread.start()
        return self

    def _run(self) -> None:
        first = time.perf_counter()
        while not self._stop.is_set():
            self._span_s = (first, time.perf_counter())
            process, delta = self.read()
            phase = self.phase
            self.samples += 1
            if process is not None:
                self.process_samples += 1
                self.process_peaks[phase] = max(self.process_peaks.get(phase, 0), process)
            if delta is not None:
                self.delta_peaks[phase] = max(self.delta_peaks.get(phase, 0), delta)
            time.sleep(self.interval_s)

    @property
    def source(self) -> Optional[str]:
        if self.process_samples:
            return "nvml-process"
        return "nvml-device-delta" if self.delta_peaks else None

    @property
    def peaks(self) -> dict[str, int]:
        return self.process_peaks if self.process_samples else self.delta_peaks

    def now(self) -> Optional[int]:
        process, delta = self.read()
        return process if process is not None else delta

    def accounting_max_bytes(self) -> Optional[int]:
        """The driver's own maximum for this pid, only where accounting mode is already on."""
        nvml = self._nvml
        if nvml is None:
            return None
        try:
            if nvml.nvmlDeviceGetAccountingMode(self._handle) != nvml.NVML_FEATURE_ENABLED:
                return None
            return int(nvml.nvmlDeviceGetAccountingStats(self._handle, self.pid).maxMemoryUsage)
        except Exception:
            return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def result(self) -> dict[str, Any]:
        """What the record keeps: the peak, its source and per phase, the sample count and rate."""
        peaks = self.peaks
        return {
            "nvml_peak_bytes": max(peaks.values()) if peaks else None,
            "nvml_peak_by_phase": dict(peaks),
            "nvml_source": self.source,
            "nvml_samples": self.samples,
            "nvml_sample_rate_hz": round((self.samples - 1) / (self._span_s[1] - self._span_s[0]), 1)
            if self.samples > 1 and self._span_s[1] > self._span_s[0] else None,
            "nvml_device_baseline_bytes": self.baseline_bytes,
            "nvml_accounting_max_bytes": self.accounting_max_bytes(),
            "nvml_reason": self.reason,
        }
