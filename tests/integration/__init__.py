"""Tests on a real Ray cluster, a real S3-compatible server, real runs (slow)."""
