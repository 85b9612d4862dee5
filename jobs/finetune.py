"""`ray job submit` entrypoint for GUE fine-tuning; takes the same arguments as `randommask finetune`.

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/finetune.py --checkpoint s3://bucket/runs/my-run/final --gue-dir s3://bucket/GUE \
        --tasks all --seeds 3 --out /shared/finetune/my-run --gpus-per-trial 0.25
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from randommask.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
