"""User-facing errors. The CLI maps each to a one-line message and an exit code."""


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
