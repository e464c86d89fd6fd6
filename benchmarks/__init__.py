"""Benchmark harness: our JAX train step against the official PyTorch step, and depth scaling."""
