"""Device faults are not data: transport errors are retried with exponential backoff.

A runner raises `TransportError` when it cannot reach its device (adb device offline, ssh
timeout, the timing agent killed); that says nothing about the configuration being timed, so
the profiler retries the same call after 1, 2, 4, ... seconds (`RetryPolicy`) and, when the
device stays away, stops with `DeviceUnavailableError`. Every row measured before is already
on disk, so rerunning the same command resumes. Any other exception is the model's own failure
and becomes an error row.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from typing import TypeVar

from fdi_keras.errors import DeviceUnavailableError, TransportError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How long a transport error is retried before the run stops.

    The defaults wait 1, 2, 4, 8, 16, 30, 30, 30 s: a device away for up to about two minutes
    (a replugged phone, a rebooting board, a dropped Wi-Fi link) costs no run.

    Args:
        retries: retries after the first failure of one call (0: stop at once).
        delay: seconds before the first retry; each next wait doubles.
        max_delay: longest single wait, in seconds.

    Example:
        >>> RetryPolicy(retries=3, delay=0.5).delays()
        [0.5, 1.0, 2.0]
    """

    retries: int = 8
    delay: float = 1.0
    max_delay: float = 30.0

    def __post_init__(self):
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an integer >= 0. Received: retries={self.retries!r}")
        if self.delay < 0 or self.max_delay < self.delay:
            raise ValueError(
                "Need 0 <= delay <= max_delay. "
                f"Received: delay={self.delay!r}, max_delay={self.max_delay!r}"
            )

    def delays(self) -> list[float]:
        """The waits before each retry, in seconds."""
        return [min(self.delay * 2**i, self.max_delay) for i in range(self.retries)]


def call_with_retries(call: Callable[[], T], policy: RetryPolicy, device: str, hint: str = "") -> T:
    """`call()`, retried on `TransportError` after the policy's waits.

    Raises:
        DeviceUnavailableError: every attempt failed with a transport error; names the
            device, the attempts, the last error and `hint` (how to resume).
    """
    waits = policy.delays()
    for attempt in range(len(waits) + 1):
        try:
            return call()
        except TransportError as e:
            last = e
            if attempt == len(waits):
                break
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
            warnings.warn(
                f"Device {device!r} unreachable ({first_line}); retry {attempt + 1} of "
                f"{len(waits)} in {waits[attempt]:g} s.",
                stacklevel=2,
            )
            time.sleep(waits[attempt])
    raise DeviceUnavailableError(
        f"Device {device!r} stayed unreachable: {len(waits) + 1} attempts over "
        f"{sum(waits):g} s failed with transport errors. Last error: {last}\n{hint}".rstrip()
    ) from last
