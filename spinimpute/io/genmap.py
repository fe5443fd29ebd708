"""Genetic maps: PLINK (`chrom id cM bp`) or SHAPEIT/GLIMPSE (`pos chr cM`, with header)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import numpy as np

from spinimpute.errors import InputFileError
from spinimpute.io.matching import match_contig

DEFAULT_CM_PER_MB = 1.0


@dataclass
class GeneticMap:
    """Piecewise-linear map from base-pair position to cM, per contig."""

    positions: dict[str, np.ndarray]
    cm: dict[str, np.ndarray]

    def interpolate(self, contig: str, positions: np.ndarray) -> np.ndarray:
        """cM positions; outside the map the mean rate of the map extends it linearly.

        A contig the map lacks gets the default 1 cM/Mb.
        """
        name = match_contig(contig, list(self.positions))
        if name is None:
            return constant_rate_cm(positions)
        bp, cm = self.positions[name], self.cm[name]
        positions = np.asarray(positions, dtype=np.float64)
        if len(bp) == 1:
            return cm[0] + (positions - bp[0]) * DEFAULT_CM_PER_MB / 1e6
        rate = (cm[-1] - cm[0]) / max(bp[-1] - bp[0], 1)
        out = np.interp(positions, bp, cm)
        left, right = positions < bp[0], positions > bp[-1]
        out[left] = cm[0] - (bp[0] - positions[left]) * rate
        out[right] = cm[-1] + (positions[right] - bp[-1]) * rate
        return out


def constant_rate_cm(positions: np.ndarray) -> np.ndarray:
    return np.asarray(positions, dtype=np.float64) * DEFAULT_CM_PER_MB / 1e6


def read_genetic_map(path) -> GeneticMap:
    """Read a PLINK map (4 columns) or a `pos chr cM` map (3 columns, header allowed)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    rows: dict[str, list[tuple[float, float]]] = {}
    try:
        with opener(path, "rt") as handle:
            for line_number, line in enumerate(handle, start=1):
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                try:
                    if len(fields) == 4:
                        chrom, cm, bp = fields[0], float(fields[2]), float(fields[3])
                    elif len(fields) == 3:
                        bp, chrom, cm = float(fields[0]), fields[1], float(fields[2])
                    else:
                        raise ValueError
                except ValueError:
                    if line_number == 1:
                        continue  # header
                    raise InputFileError(path, f"line {line_number} is not a genetic map row") from None
                rows.setdefault(chrom, []).append((bp, cm))
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"cannot read genetic map ({exc})") from None
    if not rows:
        raise InputFileError(path, "the genetic map has no rows")
    positions, cms = {}, {}
    for chrom, pairs in rows.items():
        arr = np.asarray(sorted(pairs), dtype=np.float64)
        if np.any(np.diff(arr[:, 1]) < 0):
            raise InputFileError(path, f"cM positions decrease along contig '{chrom}'")
        positions[chrom], cms[chrom] = arr[:, 0], arr[:, 1]
    return GeneticMap(positions, cms)
