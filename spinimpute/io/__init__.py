"""Files in and out: VCF/BCF reading and allele matching, the imputed VCF (BGZF, tabix), model
files, genetic maps."""
