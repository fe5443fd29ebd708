"""User-facing errors. The CLI maps each to a one-line message and an exit code."""


class SpinImputeError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""

    exit_code = 1


class InputFileError(SpinImputeError):
    """An input file is missing, unreadable, malformed or inconsistent."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ModelFileError(InputFileError):
    """A model file is corrupt, truncated, foreign or of an incompatible format version."""


class OutputFileError(SpinImputeError):
    """An output path cannot be written."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DeviceError(SpinImputeError):
    """The requested compute device is not usable."""
