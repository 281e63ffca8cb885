"""Typed errors raised by library code.

Only the CLI (densekit.cli) and the HTTP layer (service/) turn these into messages,
exit codes and status codes; library code never prints or exits.
"""

from __future__ import annotations

from pathlib import Path


class DensekitError(Exception):
    """Base of every error densekit raises on purpose."""


class DataFormatError(DensekitError):
    """A data file is malformed; names the file and (1-based) line."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class DatasetNotFoundError(DensekitError):
    """A dataset folder, file or split does not exist."""


class ConfigError(DensekitError):
    """A configuration value is invalid; names the field."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"config field '{field}': {message}")


class ModelLoadError(DensekitError):
    """A model could not be found or loaded."""


class IndexError_(DensekitError):
    """Base of index problems (named with a trailing underscore to not shadow the builtin)."""


class IndexCorruptError(IndexError_):
    """An index folder is incomplete, truncated or fails its checksums."""


class IndexMismatchError(IndexError_):
    """An index does not fit what it is used with (format version, dimension, encoder)."""


class InvalidInputError(DensekitError):
    """A request or argument is invalid (empty text, out-of-range value)."""


class DocumentNotFoundError(DensekitError):
    """A document id is not in the store."""


class ServerStartError(DensekitError):
    """A server started for a benchmark exited, or never became ready."""


class BenchmarkStepError(DensekitError):
    """A step of a benchmark failed; `exit_code` is what the command exits with."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class BackendUnavailableError(ModelLoadError):
    """An inference backend's package is not installed; names the extra that installs it."""


class ExportQualityError(DensekitError):
    """An exported model loses more retrieval quality than allowed; names the drop."""

    def __init__(self, message: str, ndcg_drop: float):
        super().__init__(message)
        self.ndcg_drop = ndcg_drop
