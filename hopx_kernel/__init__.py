"""Hopx kernel: Jupyter kernels that run inside an isolated Linux sandbox."""

__version__ = "0.1.0"
