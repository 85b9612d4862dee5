"""`ray job submit` entrypoint for mask-schedule sweeps; same arguments as `randommask sweep`.

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/sweep.py --config jobs/configs/sweep-tiny.yaml --set storage_path=s3://bucket/sweeps
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from randommask.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
