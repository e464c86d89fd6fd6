"""Benchmark harness: one script per question (benchmarks/README.md), sharing ``common``."""
