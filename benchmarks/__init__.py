"""Benchmarks: the Hopx kernel against the stock local kernel, interleaved in the same run."""
