"""`ray job submit` entrypoint for `randommask score-variants`; takes the same arguments (docs/inference.md).

    ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- \
        python jobs/score_variants.py s3://bucket/runs/my-run/final --fasta s3://bucket/genomes/hg38.fa.gz ...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from randommask.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["score-variants", *sys.argv[1:]]))
