"""`ray job submit` entrypoint for pretraining; takes the same arguments as `randommask pretrain`.

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/pretrain.py --config jobs/configs/collapse-cpu.yaml --set run.name=my-run
"""

import sys
from pathlib import Path

# With only the working directory uploaded (no installed package), import it from platform/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from randommask.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
