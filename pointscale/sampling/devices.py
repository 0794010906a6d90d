"""Where the batched solvers compute: the CPU (numpy) or a GPU (torch or CuPy).

``SamplingConfig(device=...)`` / ``--device``:

* ``cpu`` (default): numpy, one BLAS thread per worker.
* ``cuda``: the batched MLP (:mod:`.solvers.mlp`) and the binary logistic
  solver (:mod:`.solvers.device_logistic`) run on the first CUDA device through torch, or
  CuPy when torch is absent. Without a GPU this fails at once with one line
  (:class:`DeviceError`, exit status 2 in the CLI) -- nothing runs on a
  device the user did not get.
* ``auto``: ``cuda`` when a GPU is there, else ``cpu`` with a
  :class:`DeviceWarning`.

torch and CuPy are optional (the ``gpu`` extra); the core imports neither
until a GPU is asked for. Models without a batched solver fit on the CPU
whatever the device. The device is an execution setting: a GPU computes the
same Δ up to floating-point rounding (``python -m benchmarks.gpu`` measures
the agreement), so it is not part of a sample's identity.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

DEVICES = ("cpu", "cuda", "auto")


class DeviceError(ConfigError):
    """The requested device is not available on this machine."""


class DeviceWarning(UserWarning):
    """``device="auto"`` found no GPU and computes on the CPU."""


@dataclass(frozen=True)
class Device:
    """A resolved device: the array library and the device name within it.

    Parameters
    ----------
    backend : {"numpy", "torch", "cupy"}
    name : str
        ``cpu`` or a CUDA device string (``cuda``, ``cuda:1``).
    """

    backend: str = "numpy"
    name: str = "cpu"

    @property
    def is_gpu(self) -> bool:
        return self.name != "cpu"

    def asarray(self, a: Any, dtype: str = "float64"):
        """``a`` (numpy) as an array of this device's library, of floating ``dtype``."""
        a = np.asarray(a, dtype=dtype)
        if self.backend == "numpy":
            return a
        if self.backend == "torch":
            import torch

            return torch.as_tensor(a, device=self.name)
        import cupy

        return cupy.asarray(a)

    def to_numpy(self, a: Any) -> np.ndarray:
        if self.backend == "numpy":
            return np.asarray(a)
        if self.backend == "torch":
            return a.detach().cpu().numpy()
        return a.get()

    def synchronize(self) -> None:
        """Wait for queued GPU work (for timing)."""
        if self.backend == "torch" and self.is_gpu:
            import torch

            torch.cuda.synchronize()
        elif self.backend == "cupy":
            import cupy

            cupy.cuda.Device().synchronize()


CPU = Device()


def _gpu() -> Device | None:
    """The first CUDA device through torch, else CuPy; None when there is none."""
    try:
        import torch

        if torch.cuda.is_available():
            return Device("torch", "cuda")
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return Device("cupy", "cuda")
    except Exception:  # noqa: BLE001 -- no CuPy, no driver, no device: all mean "no GPU"
        pass
    return None


def check_device_name(name: Any) -> str:
    if name not in DEVICES:
        raise ConfigError(f"device={name!r} must be one of {', '.join(DEVICES)}")
    return name


def resolve_device(name: str) -> Device:
    """The :class:`Device` for ``cpu``, ``cuda`` or ``auto``.

    Raises
    ------
    DeviceError
        ``cuda`` on a machine without a usable GPU (or without torch and CuPy).
    """
    check_device_name(name)
    if name == "cpu":
        return CPU
    gpu = _gpu()
    if gpu is not None:
        return gpu
    if name == "auto":
        warnings.warn("device='auto': no CUDA GPU found (through torch or CuPy); computing on the CPU",
                      DeviceWarning, stacklevel=2)
        return CPU
    raise DeviceError("device='cuda' needs a CUDA GPU and torch or CuPy (pip install 'pointscale[gpu]'); "
                      "none found here: use --device cpu (or auto to fall back)")
