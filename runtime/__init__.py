"""The sandbox side of Hopx: spec, bubblewrap, cgroups, seccomp, relay, supervisor.

Nothing in this package imports Jupyter.
"""
