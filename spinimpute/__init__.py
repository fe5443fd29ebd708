"""spinimpute: genotype imputation with Semi-Parametric Inducing Point Networks."""

__version__ = "0.1.0"
