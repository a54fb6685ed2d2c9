"""The embedded defaults: what `gas search --budget 2.5G` does when told nothing else."""

#: The space `gas search`, `gas sample` and the proxy use when none is named.
DEFAULT_SPACE = "turbovit"

#: Trained trials of a search: two 1-thread trials at a time finish this many in about ten minutes on
#: a 2-core machine with the default proxy (experiments/results/default_search.md).
DEFAULT_TRIALS = 40
