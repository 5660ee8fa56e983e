"""Planning code of the Snakemake workflow (imported by the Snakefile, free of torch)."""
