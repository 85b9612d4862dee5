"""The fine-tuning model card: what a saved fine-tuned classifier is (the GUE dataset, the pretrained
checkpoint it started from and that one's own card, the protocol and the step it was selected at),
its test scores beside what a classifier that knows nothing scores, how to load it, and its limits.
Written as ``README.md`` in each ``finetune --save-models`` directory."""

from __future__ import annotations

from typing import Any

from randommask import __version__
from randommask.common.modelcard import render, table
from randommask.evaluation import gue
from randommask.finetune.results import comparability

METRIC_NAMES = {"mcc": "Matthews correlation", "f1_macro": "macro F1", "accuracy": "accuracy"}


def majority_reference(test_labels: list[int] | Any) -> dict[str, float]:
    """The test scores of always predicting the commonest test label: MCC 0, accuracy = its share."""
    import numpy as np

    labels = np.asarray(test_labels)
    majority = np.bincount(labels).argmax()
    return gue.scores(labels, np.full_like(labels, majority))


def finetune_card(result: dict[str, Any], base: dict[str, Any], reference: dict[str, float], k: int,
                  license_id: str = "other") -> str:
    """The card of the model a trial selected. ``result`` is the trial's record, ``base`` the lineage of
    the pretrained checkpoint (``common.modelcard.lineage``: its URI, weights digest, its card's block)."""
    ds = gue.REGISTRY[result["dataset"]]
    hp, ran, test, dev = result["hyperparameters"], result["ran"], result["test"], result["dev_best"]
    parent = base.get("parent") or {}
    short = result["dataset"].replace("/", "-")
    metadata: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "license": license_id,
        "tags": ["dna", "genomics", "bert", "gue", f"gue-{short}", "randommask-finetuned",
                 *(["lora-merged"] if result["lora"] else [])],
        # model-index: the Hub shows these as evaluation results (huggingface_hub parses them)
        "model-index": [{"name": f"{short}-seed{result['seed']}", "results": [{
            "task": {"type": "text-classification", "name": ds.task},
            "dataset": {"type": "GUE", "name": f"GUE {result['dataset']}", "split": "test"},
            "metrics": [{"type": m, "name": METRIC_NAMES[m], "value": round(float(test[m]), 5)}
                        for m in ("mcc", "f1_macro", "accuracy")]}]}],
        "randommask": {"version": __version__, "finetuned": True, "dataset": result["dataset"], "seed": result["seed"],
                       "protocol": result["protocol"], "selection": result["selection"],
                       "best_step": ran["best_step"], "lora": result["lora"], "max_train": result.get("max_train"),
                       "max_eval": result.get("max_eval"), "base": base},
    }
    what = (f"A DNA k-mer BERT classifier for the GUE dataset **{result['dataset']}** ({ds.task}, {ds.classes} "
            f"classes), fine-tuned with randommask {__version__} from `{base['init_from']}` (weights SHA-256 "
            f"{base['weights_sha256']}")
    if parent:
        what += (f"; pretraining run `{parent.get('run')}` of randommask {parent.get('version')}, "
                 f"{parent.get('masking')} masking, {parent.get('steps', 0):,} steps, {parent.get('tokens', 0):,} tokens")
    what += (f"), under the **{result['protocol']}** protocol with seed {result['seed']}; the weights are those "
             f"of step {ran['best_step']:,} of {ran['steps']:,}, selected on dev."
             + (" Trained with LoRA; the adapters are merged into these weights." if result["lora"] else ""))
    why_not = comparability(result["protocol"], result.get("max_train"), result.get("max_eval"))
    sections = [
        ("Model", what),
        ("How to load", _how_to_load(ds.classes, k)),
        ("Data", table(["split", "rows used"], [("train", f"{ran['n_train']:,}"), ("dev", f"{ran['n_dev']:,}"),
                                                ("test", f"{ran['n_test']:,}")])
         + f"\n\nSequences of about {ds.length_bp} bp, at most {ran['max_tokens']} tokens."
         + (f" The pretrained model's windows held {parent['window_bp']} bp ({parent['window_tokens']} positions; "
            "config.json records it as `randommask_window_bp`)." if parent.get("window_bp") else "")
         + (" Rows were subsampled (the same rows for every seed and model)."
            if result.get("max_train") or result.get("max_eval") else "")),
        ("Fine-tuning", table(["", ""], [
            *((f"{k} (the published runs)" if k == "precision" else k, v) for k, v in hp.items()),
            ("steps run", f"{ran['steps']:,} ({ran['epochs']} epochs)"),
            ("dev evaluations", ran["evaluations"]), ("selected step", ran["best_step"]),
            ("selection", result["selection"]), ("precision (this run)", ran["precision"]),
            ("LoRA", "yes (merged)" if result["lora"] else "no")])),
        ("Results", _results(test, dev, reference)),
        ("Limits", "\n".join([
            "- One seed: seed variance is in the `results.md` of the fine-tuning run that made this model "
            "(mean ± std over seeds).",
            f"- {'Comparable with the published GUE numbers.' if why_not is None else 'Not comparable with the published GUE numbers: ' + why_not + '.'}",
            "- Scores hold for this GUE dataset's test split; other species, lengths or assays need their own test.",
            *(["- License: not stated by the pretrained checkpoint's card; set one before sharing."]
              if license_id == "other" else [])])),
        ("Produced by", f"`randommask finetune` {__version__}, trial record:\n\n```json\n"
         + _trial_json(result) + "\n```"),
    ]
    return render(metadata, f"GUE {result['dataset']} classifier (seed {result['seed']})", sections)


def _how_to_load(classes: int, k: int) -> str:
    return f"""```python
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tok = AutoTokenizer.from_pretrained("PATH")       # this directory (or its Hub repository)
model = AutoModelForSequenceClassification.from_pretrained("PATH")
seq = "ACGTACGTTAGC..."
kmers = " ".join(seq[i:i + {k}] for i in range(len(seq) - {k - 1}))  # overlapping {k}-mers, DNABERT's input form
label = model(**tok(kmers, return_tensors="pt")).logits.argmax(-1)  # one of {classes} classes
```"""


def _results(test: dict, dev: dict, reference: dict) -> str:
    rows = [(METRIC_NAMES[m], test[m], dev.get(m), reference.get(m), 0.0 if m == "mcc" else None)
            for m in ("mcc", "f1_macro", "accuracy")]
    return (table(["metric", "test", "dev (selected step)", "majority class (test)", "chance"], rows)
            + "\n\nThe majority-class column is what a classifier that always answers the commonest test label "
            "scores; an MCC of 0 is chance for any classifier.")


def _trial_json(result: dict) -> str:
    import json

    keep = {k: v for k, v in result.items() if k not in ("history", "model")}
    return json.dumps(keep, indent=1, default=str)
