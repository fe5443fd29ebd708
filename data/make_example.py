"""Regenerate the example data in this folder: a seeded msprime simulation (1 Mb, CEU,
Out-of-Africa model), 500 reference samples, 100 target samples typed at 4 % of sites.

    python data/make_example.py
"""

from pathlib import Path

from spinimpute.tools.simulate import make_benchmark

if __name__ == "__main__":
    summary = make_benchmark(
        Path(__file__).parent / "example", n_ref=500, n_target=100, length=1_000_000, typed_fraction=0.04, seed=20
    )
    print(summary)
