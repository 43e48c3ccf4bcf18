"""Benchmarks of keras_gmm against its peers (run as ``python -m benchmarks.<name>``)."""
