"""Benchmarks of module_system: run by hand, never collected by ``pytest`` (see bench/README.md)."""
