"""One run: its specification, its record on disk, the store of many records, and running one job.

``spec`` (what a run is), ``record`` (the files of a run directory), ``recording`` (writing them as
a run trains), ``manifest`` (where and with what it ran), ``resources`` (will it fit), ``store``
(many records, their tables), ``restore`` (records back from published tables), ``job`` (train a
group of runs into the store, in this process or a worker's), ``progress`` (a run's progress bar).
"""
