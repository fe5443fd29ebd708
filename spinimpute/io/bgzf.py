"""BGZF: blocked gzip as htslib reads it, written on several threads (ISA-L releases the GIL), and read back."""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from isal import isal_zlib

# BGZF as in the SAM specification: gzip members of at most 64 KiB, each with its compressed
# size in a 'BC' extra field, so that tabix can seek; an empty member marks the end.
BGZF_BLOCK_INPUT = 0xFF00
# The empty block that ends every complete BGZF file (SAM/BAM specification, 4.1.2).
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
# ISA-L level (0-3): level 1 is many times faster than zlib on genotype text for a third more
# bytes (BENCHMARKS.md, constants).
BGZF_LEVEL = 1


def truncated_bgzf(path: str) -> bool:
    """True for a BGZF (or BCF) file cut short: gzip magic at the start, no EOF block at the end."""
    with open(path, "rb") as handle:
        if handle.read(4) != BGZF_EOF[:4]:
            return False  # plain text, or plain gzip (which htslib rejects with its own message)
        handle.seek(0, os.SEEK_END)
        if handle.tell() < len(BGZF_EOF):
            return True
        handle.seek(-len(BGZF_EOF), os.SEEK_END)
        return handle.read() != BGZF_EOF


class BgzfFormatError(ValueError):
    """A BGZF file whose blocks are cut short or corrupt."""


def is_bgzf(path) -> bool:
    """Whether the file starts with a BGZF block header (gzip with a 'BC' extra field)."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    return len(head) == 16 and head[:4] == BGZF_EOF[:4] and head[12:14] == b"BC"


def read_bgzf(path, *, piece_bytes: int = 2**20) -> Iterator[list[bytes]]:
    """The decompressed contents of a BGZF file, block by block, in lists of the blocks in about
    `piece_bytes` of compressed data (inflated with ISA-L, as it is written); each block's
    CRC and length are checked. Raises BgzfFormatError for a block cut short or corrupt."""
    with open(path, "rb") as handle:
        data = b""
        while True:
            more = handle.read(piece_bytes)
            data = data + more if data else more
            offset, out = 0, []
            while offset + 18 <= len(data):
                if data[offset : offset + 4] != BGZF_EOF[:4]:
                    raise BgzfFormatError(f"no BGZF block at compressed offset {handle.tell() - len(data) + offset}")
                extra = struct.unpack_from("<H", data, offset + 10)[0]
                size = struct.unpack_from("<H", data, offset + 16)[0] + 1 if data[offset + 12 : offset + 14] == b"BC" else 0
                if size < 26:
                    raise BgzfFormatError(f"not a BGZF block at compressed offset {handle.tell() - len(data) + offset}")
                if offset + size > len(data):
                    break
                try:
                    text = isal_zlib.decompress(data[offset + 12 + extra : offset + size - 8], -15)
                except isal_zlib.error as exc:  # type: ignore[misc]  # the stubs lack it
                    raise BgzfFormatError(f"corrupt BGZF block ({exc})") from None
                crc, length = struct.unpack_from("<II", data, offset + size - 8)
                if length != len(text) or crc != isal_zlib.crc32(text):
                    raise BgzfFormatError("BGZF block fails its CRC or length check")
                out.append(text)
                offset += size
            data = data[offset:]
            if out:
                yield out
            if not more:
                if data:
                    raise BgzfFormatError("the file ends inside a BGZF block")
                return


def _bgzf_block(data: bytes | memoryview, level: int) -> bytes:
    payload = isal_zlib.compress(data, level, -15)
    header = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff\x06\x00BC\x02\x00"
    size = len(header) + 2 + len(payload) + 8 - 1
    return header + struct.pack("<H", size) + payload + struct.pack("<II", isal_zlib.crc32(data), len(data))


class BgzfTextWriter:
    """Writes text as BGZF, compressing blocks on `threads` threads (ISA-L releases the GIL).

    Blocks are written in order as they complete, with a bounded number in flight, so
    memory stays small and compression overlaps whatever the caller computes next.
    """

    def __init__(self, path, *, threads: int = 1, level: int = BGZF_LEVEL):
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close() / __exit__
        self._level = level
        self._buffer = bytearray()
        self._pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
        self._pending: deque = deque()
        self._max_pending = 64 * threads
        self._block_offsets: list[int] = []

    def write(self, text) -> None:
        """Append text: a str, or bytes-like (bytes, a uint8 array), whose whole blocks are compressed
        from where they lie (the writer holds a view of them until they are written: do not change them)."""
        data = memoryview(text.encode() if isinstance(text, str) else text).cast("B")
        if self._buffer:
            take = min(len(data), BGZF_BLOCK_INPUT - len(self._buffer))
            self._buffer += data[:take]
            data = data[take:]
            if len(self._buffer) < BGZF_BLOCK_INPUT:
                return
            self._submit(bytes(self._buffer))
            self._buffer.clear()
        whole = len(data) - len(data) % BGZF_BLOCK_INPUT
        for i in range(0, whole, BGZF_BLOCK_INPUT):
            self._submit(data[i : i + BGZF_BLOCK_INPUT])
        self._buffer += data[whole:]

    def _submit(self, chunk: bytes | memoryview) -> None:
        if self._pool is None:
            self._write_block(_bgzf_block(chunk, self._level))
            return
        self._pending.append(self._pool.submit(_bgzf_block, chunk, self._level))
        while len(self._pending) > self._max_pending or (self._pending and self._pending[0].done()):
            self._write_block(self._pending.popleft().result())

    def _write_block(self, block: bytes) -> None:
        self._block_offsets.append(self._file.tell())
        self._file.write(block)

    @property
    def block_offsets(self) -> list[int]:
        """After close: the compressed offset of each block (block k holds text
        [k * 0xFF00, (k + 1) * 0xFF00)), then that of the end-of-file marker."""
        return self._block_offsets

    def close(self) -> None:
        if self._file.closed:
            return
        try:
            if self._buffer:
                self._submit(bytes(self._buffer))
                self._buffer.clear()
            while self._pending:
                self._write_block(self._pending.popleft().result())
            self._block_offsets.append(self._file.tell())
            self._file.write(BGZF_EOF)
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_bgzf(path, data: bytes) -> None:
    """Write `data` as a BGZF file."""
    with BgzfTextWriter(path) as out:
        out.write(data)

