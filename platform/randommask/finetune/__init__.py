"""Fine-tuning on GUE: one Ray Tune trial per (dataset, seed) under a named protocol (the published
one by default), results with seed variance, and the published baselines beside ours where the
protocol makes them comparable.

    protocol     published / fast / custom: hyperparameters, evaluation steps, model selection
    trial        one (dataset, seed): train, select, score on test
    search       --lr lists: one trial per rate, each dataset's rate chosen on dev
    driver       validation first, the trials through Ray Tune, resume
    results      mean ± std over seeds, results.{csv,json,md}
    card         a saved model's card: dataset, lineage, protocol, test scores beside the majority class
    progress     one line per finished trial, as Ray Tune reports it

OUT/
    trials/<group>_<dataset>__seed<k>.json   one finished trial (a rerun skips it); __lr<rate>__seed<k> in a search
    results.csv  results.json  results.md    per dataset mean ± std over seeds, task and overall means
    models/<group>_<dataset>__seed<k>/       --save-models: the selected model, tokenizer and README.md card
    tune/                                    Ray Tune's experiment state
"""

from randommask.finetune.driver import TRIAL_RETRIES, finetune
from randommask.finetune.results import aggregate, load_baselines
from randommask.finetune.trial import run_trial

__all__ = ["TRIAL_RETRIES", "aggregate", "finetune", "load_baselines", "run_trial"]
