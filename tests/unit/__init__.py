"""Fast tests: no Ray, no server (rclone/S3), no Ray cluster in a subprocess; minutes on 2 cores."""
