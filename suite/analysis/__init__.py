"""Numbers from stored runs: statistics, result tables, comparisons with the paper and between
methods, ablations, escape steps, and the store analyses behind ``gradpath analyse``."""
