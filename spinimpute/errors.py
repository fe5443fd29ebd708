"""User-facing errors. The CLI maps each to a one-line message and an exit code."""

import os
from pathlib import Path


class SpinImputeError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""

    exit_code = 1


class FileProblem(SpinImputeError):
    """A problem with one file; the message names the file first."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class InputFileError(FileProblem):
    """An input file is missing, unreadable, malformed or inconsistent."""


class ModelFileError(InputFileError):
    """A model file is corrupt, truncated, foreign or of an incompatible format version."""


class OutputFileError(FileProblem):
    """An output path cannot be written."""


class DeviceError(SpinImputeError):
    """A compute device that was asked for by name is not available."""


def check_output_path(path) -> Path:
    """`path` as a Path, after checking that a file can be written there; raises OutputFileError.

    Jobs check their outputs before the work starts, so that a mistyped path fails at once
    rather than after training or imputing.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise OutputFileError(path, f"directory '{directory}' does not exist")
    if not os.access(directory, os.W_OK):
        raise OutputFileError(path, f"directory '{directory}' is not writable")
    if path.is_dir():
        raise OutputFileError(path, "is a directory")
    return path
