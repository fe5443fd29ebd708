"""Tools around imputation: evaluation against the truth, chunking and ligation, simulated data sets."""
