"""Developer tools: benchmarks against baselines, the GPU check, and a local S3 server (rclone)."""
