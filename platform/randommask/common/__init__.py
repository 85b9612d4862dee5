"""The bottom layer: storage (local and S3), the run directory's layout, the Ray runtime, progress
output, hardware figures and checkpoint resolution. Imports nothing else of randommask but errors."""
