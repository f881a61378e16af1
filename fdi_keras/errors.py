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
