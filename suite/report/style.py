"""The look every gradpath figure shares (report and diagnostics): font sizes and resolution."""

STYLE = {"axes.titlesize": 9, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 8, "legend.title_fontsize": 8}  # seaborn's "paper" context, these sizes
DPI = 150
