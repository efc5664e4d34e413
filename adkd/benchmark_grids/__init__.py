"""Benchmark grids shipped with adkd (package data): the seed papers' tables, read by `adkd benchmark NAME`."""
