"""The GUE benchmark (Genome Understanding Evaluation, DNABERT-2): its 28 datasets, how each is scored,
the published fine-tuning protocol of each (DNABERT-2's scripts for k-mer models), and validated CSV
loading.

Datasets are named by their path in GUE's layout, ``GUE/<group>/<dataset>/{train,dev,test}.csv``
with a ``sequence,label`` header.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Callable

import numpy as np

from randommask.common import storage
from randommask.errors import UserError

SPLITS = ("train", "dev", "test")


# Where the published protocol comes from. DNABERT-2's GUE table (the baselines we print) was made
# with these scripts; every per-dataset value below is typed in from the k-mer one and tested
# against a table kept in tests/unit/test_finetune.py.
PUBLISHED_SOURCE = ("MAGICS-LAB/DNABERT_2 finetune/scripts/run_dnabert1.sh (commit b946321) and finetune/train.py; "
                    "effective batch from its README: 8 per device x 4 GPUs (DataParallel) = 32, x 4 gradient "
                    "accumulation for covid")
PUBLISHED_PRECISION = "fp16"  # the scripts' --fp16
PUBLISHED_WEIGHT_DECAY = 0.01  # train.py's default; Trainer exempts biases and LayerNorm weights


@dataclass(frozen=True)
class GueDataset:
    """One GUE dataset and the published fine-tuning protocol for it (names as the scripts name them)."""

    name: str  # e.g. "prom/prom_core_all"
    task: str  # one of GUE's 7 tasks
    classes: int
    length_bp: int  # typical sequence length
    metric: str  # headline metric: "mcc" or "f1_macro"
    epochs: int  # --num_train_epochs
    eval_steps: int  # --eval_steps (= --save_steps): how often the dev loss is checked
    max_length: int  # --model_max_length, in tokens
    warmup_steps: int = 50  # --warmup_steps
    max_steps: int | None = None  # --max_steps: when set, it wins over epochs (Trainer's rule)
    lr: float = 3e-5  # --learning_rate
    batch_size: int = 32  # effective: per-device 8 x 4 GPUs x --gradient_accumulation_steps

    @property
    def max_tokens(self) -> int:
        """6-mer tokens for the full sequence plus [CLS]/[SEP], capped by max_length and a BERT's positions."""
        from randommask.data.tokenizer import KmerTokenizer
        from randommask.training.model import MAX_POSITIONS

        return min(KmerTokenizer(6).num_tokens(self.length_bp), self.max_length, MAX_POSITIONS)

    def published(self) -> dict:
        """The published protocol's values, under the scripts' names."""
        return {"epochs": self.epochs, "max_steps": self.max_steps, "warmup_steps": self.warmup_steps,
                "eval_steps": self.eval_steps, "lr": self.lr, "batch_size": self.batch_size,
                "max_length": self.max_length, "weight_decay": PUBLISHED_WEIGHT_DECAY,
                "precision": PUBLISHED_PRECISION}


def _make() -> dict[str, GueDataset]:
    # Values per the run_dnabert1.sh block each group sits in (see PUBLISHED_SOURCE).
    entries = []
    for mark in ("H3", "H3K14ac", "H3K36me3", "H3K4me1", "H3K4me2", "H3K4me3", "H3K79me3", "H3K9ac", "H4", "H4ac"):
        entries.append(GueDataset(f"EMP/{mark}", "Epigenetic marks prediction", 2, 500, "mcc", epochs=3,
                                  eval_steps=200, max_length=512))
    for i in range(5):
        entries.append(GueDataset(f"tf/{i}", "Transcription factor prediction (human)", 2, 101, "mcc", epochs=3,
                                  eval_steps=200, max_length=110, warmup_steps=30))
    for i in range(5):
        entries.append(GueDataset(f"mouse/{i}", "Transcription factor prediction (mouse)", 2, 101, "mcc", epochs=5,
                                  eval_steps=200, max_length=110, warmup_steps=30, max_steps=1000))
    for kind in ("all", "notata", "tata"):  # the large sets are checked every 400 steps, tata every 200 for 10 epochs
        entries.append(GueDataset(f"prom/prom_300_{kind}", "Promoter detection", 2, 300, "mcc",
                                  epochs=10 if kind == "tata" else 4, eval_steps=200 if kind == "tata" else 400,
                                  max_length=310))
    for kind in ("all", "notata", "tata"):
        entries.append(GueDataset(f"prom/prom_core_{kind}", "Core promoter detection", 2, 70, "mcc",
                                  epochs=10 if kind == "tata" else 4, eval_steps=200 if kind == "tata" else 400,
                                  max_length=80))
    entries.append(GueDataset("splice/reconstructed", "Splice site prediction", 3, 400, "mcc", epochs=5,
                              eval_steps=200, max_length=410))
    # DNABERT-2 reports macro F1 as covid's headline. The script's 1,024 tokens exceed a BERT's 512
    # positions: sequences are cut to 512 tokens here (recorded as max_tokens in every trial).
    entries.append(GueDataset("virus/covid", "Covid variant classification", 9, 1000, "f1_macro", epochs=9,
                              eval_steps=200, max_length=1024, batch_size=128))
    return {e.name: e for e in entries}


REGISTRY: dict[str, GueDataset] = _make()


def resolve_names(tasks: str) -> tuple[list[str], bool]:
    """``"all"`` or comma-separated names/groups (``prom/prom_core_all,tf``) -> (names, all_mode)."""
    if tasks.strip() == "all":
        return list(REGISTRY), True
    names = []
    for item in (t.strip().strip("/") for t in tasks.split(",") if t.strip()):
        if item in REGISTRY:
            names.append(item)
        elif any(n.startswith(item + "/") for n in REGISTRY):
            names += [n for n in REGISTRY if n.startswith(item + "/")]
        else:
            raise UserError(f"unknown GUE dataset {item!r}; names look like prom/prom_core_all, tf/0, EMP/H3 "
                            "(or a group: EMP, tf, mouse, prom, splice, virus)")
    if not names:
        raise UserError("no GUE dataset named; pass --tasks all or a comma-separated list")
    return list(dict.fromkeys(names)), False


def available(gue_dir: str, names: list[str], storage_options: dict | None = None) -> tuple[list[str], list[str]]:
    """(present, missing): a dataset is present when its three split files exist."""
    present, missing = [], []
    for name in names:
        ok = all(storage.exists(storage.join(gue_dir, name, f"{s}.csv"), storage_options) for s in SPLITS)
        (present if ok else missing).append(name)
    return present, missing


def select(gue_dir: str, tasks: str, storage_options: dict | None = None,
           log: Callable[[str], None] = print) -> tuple[list[str], list[str]]:
    """(present, missing) for ``--tasks``: a dataset asked for by name must be in ``gue_dir``; with
    ``all``, the ones not there are skipped and named in ``log`` (the caller records them too)."""
    names, all_mode = resolve_names(tasks)
    present, missing = available(gue_dir, names, storage_options)
    if missing and not all_mode:
        raise UserError(f"{gue_dir}: missing GUE dataset(s) {', '.join(missing)} (each needs train.csv, dev.csv, "
                        "test.csv)")
    if not present:
        raise UserError(f"{gue_dir}: none of the GUE datasets asked for is there")
    if missing:
        log(f"skipping {len(missing)} dataset(s) not in {gue_dir}: {', '.join(missing)}")
    return present, missing


_DNA = set("ACGTNacgtnRYKMSWBDHVrykmswbdhv")


def read_split(gue_dir: str, name: str, split: str, storage_options: dict | None = None) -> tuple[list[str], np.ndarray]:
    """Sequences and labels of one split, validated: header, labels in range, DNA sequences."""
    ds = REGISTRY[name]
    uri = storage.join(gue_dir, name, f"{split}.csv")
    text = storage.read_bytes(uri, storage_options).decode("utf-8", errors="replace")
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None:
        raise UserError(f"{uri}: empty file; expected a 'sequence,label' header")
    if [h.strip().lower() for h in header[:2]] != ["sequence", "label"]:
        raise UserError(f"{uri}: line 1: expected the header 'sequence,label', got {','.join(header)[:60]!r}")
    seqs, labels = [], []
    for line_no, row in enumerate(rows, start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) < 2:
            raise UserError(f"{uri}: line {line_no}: missing label")
        seq, label = row[0].strip(), row[1].strip()
        if not seq:
            raise UserError(f"{uri}: line {line_no}: empty sequence")
        bad = set(seq) - _DNA
        if bad:
            raise UserError(f"{uri}: line {line_no}: non-DNA character {sorted(bad)[0]!r} in the sequence")
        try:
            value = int(label)
        except ValueError:
            raise UserError(f"{uri}: line {line_no}: label {label!r} is not an integer") from None
        if not 0 <= value < ds.classes:
            raise UserError(f"{uri}: line {line_no}: label {value} outside 0..{ds.classes - 1} for {name}")
        seqs.append(seq)
        labels.append(value)
    if not seqs:
        raise UserError(f"{uri}: no rows after the header")
    return seqs, np.array(labels, dtype=np.int64)


def subsample(seqs: list[str], labels: np.ndarray, n: int | None, seed: int) -> tuple[list[str], np.ndarray]:
    """At most ``n`` rows, drawn without replacement by ``seed`` (the same rows for every model)."""
    if n is None or n >= len(seqs):
        return seqs, labels
    idx = np.sort(np.random.default_rng([seed, 0x6E5]).choice(len(seqs), size=n, replace=False))
    return [seqs[i] for i in idx], labels[idx]


def scores(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    return {"mcc": float(matthews_corrcoef(labels, preds)), "f1_macro": float(f1_score(labels, preds, average="macro")),
            "accuracy": float(accuracy_score(labels, preds))}
