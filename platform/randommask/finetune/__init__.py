"""Fine-tuning on GUE: one Ray Tune trial per (dataset, seed) under a named protocol (the published
one by default), results with seed variance, and the published baselines beside ours where the
protocol makes them comparable.

    checkpoints  what to fine-tune from (local, s3://, DNABERT directories)
    protocol     published / fast / custom: hyperparameters, evaluation steps, model selection
    trial        one (dataset, seed): train, select, score on test
    driver       validation first, the trials through Ray Tune, resume
    results      mean ± std over seeds, results.{csv,json,md}
    probe        a linear probe on frozen embeddings (the sweeps' quick objective)

OUT/
    trials/<group>_<dataset>__seed<k>.json   one finished trial (a rerun skips it)
    results.csv  results.json  results.md    per dataset mean ± std over seeds, task and overall means
    tune/                                    Ray Tune's experiment state
"""

from randommask.finetune.checkpoints import node_checkpoint, resolve_checkpoint
from randommask.finetune.driver import TRIAL_RETRIES, finetune
from randommask.finetune.probe import embed, linear_probe
from randommask.finetune.results import aggregate, load_baselines
from randommask.finetune.trial import run_trial

__all__ = ["TRIAL_RETRIES", "aggregate", "embed", "finetune", "linear_probe", "load_baselines", "node_checkpoint",
           "resolve_checkpoint", "run_trial"]
