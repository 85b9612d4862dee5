"""`ray job submit` entrypoint for genome preparation; takes the same arguments as `randommask data prepare`.

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/prepare.py s3://my-bucket/genomes/ --out s3://my-bucket/prepared/genome
"""

import sys
from pathlib import Path

# With only the working directory uploaded (no installed package), import it from platform/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from randommask.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["data", "prepare", *sys.argv[1:]]))
