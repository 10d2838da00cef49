"""Benchmarks of the CA-ToMe pack (run with `scripts/dev.sh bench`)."""
