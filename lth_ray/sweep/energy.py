"""GPU energy of a trial from NVML's energy counter (the study measured energy with carbontracker).

The counter is per device: when several trials share a GPU, each one's figure covers the whole
card during its lifetime, so energies of packed trials overlap and must not be summed.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


class EnergyMeter:
    """Reads the total energy (mJ) of the GPU this process sees; `wh()` is the energy since start."""

    def __init__(self) -> None:
        self._nvml = None
        self._handle = None
        self._start_mj: int | None = None
        try:
            import pynvml  # nvidia-ml-py; absent on CPU-only machines

            pynvml.nvmlInit()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
            index = int(visible) if visible.isdigit() else 0
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self._nvml = pynvml
        except Exception as e:  # no driver, no library, or a GPU without the counter
            log.debug("GPU energy not available: %s", e)

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def wh(self) -> float | None:
        if self._nvml is None or self._start_mj is None:
            return None
        try:
            now = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except Exception:
            return None
        return (now - self._start_mj) / 3.6e6
