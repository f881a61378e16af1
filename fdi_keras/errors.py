"""Exceptions specific to fdi_keras; everything else raises ValueError/TypeError."""


class UnsupportedLayerError(ValueError):
    """A Keras layer has no runtime-kernel mapping (names the layer and the supported list)."""


class TreeFormatError(ValueError):
    """A timing-tree file is corrupt, of another format version, or lacks a field."""


class MissingKindError(KeyError):
    """A timing tree has no model for a kernel kind that a prediction needs."""

    def __str__(self):
        # KeyError quotes its message; show it as written.
        return str(self.args[0]) if self.args else ""


class TransportError(RuntimeError):
    """A runner could not reach its device (adb device offline, ssh timeout, a killed agent).

    Not the configuration's fault: the profiler retries it and never stores it as a row. Any
    other exception a runner raises is the model's own failure and becomes an error row.
    """


class DeviceUnavailableError(RuntimeError):
    """A device stayed unreachable through every retry; the run stopped in a resumable state."""


class ProfileLockedError(RuntimeError):
    """Another run holds the lock of a profile directory (names the lock file and its pid)."""


class MixedProfileError(ValueError):
    """Profile rows of different devices, runtimes, dtypes or thread counts were combined."""
