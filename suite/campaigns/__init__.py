"""Many runs: campaign files and presets, expanding them into runs, and executing them.

``definition`` (campaign TOML -> runs), ``presets`` (the named campaigns), ``executors`` (local
processes, dask), ``schedule`` (run a campaign into a store, seeds grouped into vectorised jobs),
``progress`` (the progress line).
"""
