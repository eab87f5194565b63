"""vmanager's benchmarks: each row side by side with its baseline (see README.md)."""
