"""Many runs: campaign files and presets, expanding them into runs, and executing them.

``definition`` (campaign TOML -> runs), ``presets`` (the named campaigns), ``executors`` (local
processes, dask), ``schedule`` (run a campaign into a store, its seeds grouped into vectorised jobs,
with a progress bar over runs).
"""
