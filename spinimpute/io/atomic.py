"""Outputs published whole: written under a temporary name, renamed when complete."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from pathlib import Path

from spinimpute.errors import OutputFileError, check_output_path


def _process_umask() -> int:
    umask = os.umask(0)  # reading the umask means setting it; done once, at import, before any thread starts
    os.umask(umask)
    return umask


# The permissions open() gives a new file under the process's umask (0644 under 022).
_NEW_FILE_MODE = 0o666 & ~_process_umask()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt inside the block (in the main thread), so that `kill` cleans up."""

    def _terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = None
    with contextlib.suppress(ValueError):  # not in the main thread
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def scratch_directory(beside):
    """A hidden temporary directory beside the output `beside` (on its file system, which has room for
    it), removed with everything in it when the block ends, however it ends (SIGTERM included)."""
    beside = Path(beside)
    with _sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix=f".{beside.name}.", suffix=".scratch",
                                                               dir=beside.parent) as directory:
        yield Path(directory)


@contextlib.contextmanager
def atomic_output(path, *, index: bool = True):
    """Yield a temporary path to write; publish it (and its .tbi) under `path` on success.

    With `index`, the .tbi is the one the writer left at the temporary path + '.tbi', or
    else made with tabix.

    On any failure or interrupt the temporary files are removed and nothing appears
    under the final name. SIGTERM is turned into an exception so that `kill` cleans up
    too.
    """
    path = check_output_path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp_index = Path(tmp_name + ".tbi")
    with _sigterm_as_interrupt():
        try:
            yield tmp
            if index:
                if not tmp_index.exists():  # not indexed by its writer
                    import pysam

                    pysam.tabix_index(str(tmp), preset="vcf", force=True, keep_original=True)
                os.replace(tmp_index, str(path) + ".tbi")
            # mkstemp's 0600, or a writer's own (safetensors replaces the file), would make it private.
            tmp.chmod(_NEW_FILE_MODE)
            os.replace(tmp, path)
        except OSError as exc:
            raise OutputFileError(path, f"could not write: {exc.strerror or exc}") from None
        finally:
            for leftover in (tmp, tmp_index):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

