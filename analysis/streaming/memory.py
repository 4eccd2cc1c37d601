"""Whether a model's weights fit in memory: the decision behind an `auto` streaming mode."""

from __future__ import annotations

import torch

# Room left for activations, the calibration set, the allocator and everything else.
DEFAULT_HEADROOM = 0.2
DEFAULT_RESERVE_BYTES = 1 << 30


def free_bytes(device: torch.device | str) -> int:
    """Memory available for new allocations on `device` now (bytes).

    CPU and Apple MPS (unified memory): the system's available memory; CUDA: the device's
    free memory as the driver reports it.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def should_stream(weight_bytes: int, device: torch.device | str, *,
                  free: int | None = None, headroom: float = DEFAULT_HEADROOM,
                  reserve_bytes: int = DEFAULT_RESERVE_BYTES) -> bool:
    """True when the weights, plus `headroom` of them and `reserve_bytes`, do not fit in
    the free memory of `device` (`free` overrides the measurement, for tests and callers
    that know better). Pair with `weight_bytes_of(spec, dtype)` for the analysis dtype.
    """
    if free is None:
        free = free_bytes(device)
    return weight_bytes * (1.0 + headroom) + reserve_bytes > free
