"""Gradient-pathology diagnostics (the paper's Figs. 3, 4, 5 and 11): experiments, probes, report, plots."""
