"""Benchmarks behind `hearth bench`: each compares two things in one run and prints a ratio."""
