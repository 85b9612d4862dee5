"""The pretraining model card: what a final checkpoint is (architecture, k-mers, masking and its
schedule, data with checksums, steps and tokens), where its losses stand against the floors and
references, how to load it, its limits and its lineage. Written as ``final/README.md``."""

from __future__ import annotations

import math
from typing import Any

import yaml

from randommask import __version__
from randommask.common.modelcard import nats, render, table
from randommask.data.floors import best_counting
from randommask.data.window import WINDOW_BP, WINDOW_TOKENS
from randommask.training.config import PretrainConfig
from randommask.training.metrics import is_eval_line

EVAL_SETS = (("span_k", "span-k", "spans of k tokens: one hidden base each on average"),
             ("span_2k", "span-2k", "spans of 2k tokens: several hidden bases each"))


def phases(cfg: PretrainConfig) -> list[tuple[int, int, tuple[int, int]]]:
    """(first step, last step, span bounds) of each masking phase up to ``max_steps``."""
    masker = cfg.masker()
    out, start = [], 0
    for end in [*(cfg.masking.phase_ends or []), cfg.optim.max_steps]:
        end = min(end, cfg.optim.max_steps)
        if end > start:
            out.append((start + 1, end, masker.span_bounds(start)))
            start = end
        if start >= cfg.optim.max_steps:
            break
    merged: list[tuple[int, int, tuple[int, int]]] = []
    for a, b, bounds in out:  # strategies without phases report one bound throughout
        if merged and merged[-1][2] == bounds:
            merged[-1] = (merged[-1][0], b, bounds)
        else:
            merged.append((a, b, bounds))
    return merged


def pretraining_card(cfg: PretrainConfig, history: list[dict], floors: dict | None, manifest: dict | None,
                     model_config: dict[str, Any], n_params: int, parent: dict[str, Any] | None = None) -> str:
    """The card's text for the final checkpoint of the run that ``history`` (its metrics lines) logged."""
    floors = floors or {}
    last = history[-1] if history else {}
    evals = [x for x in history if is_eval_line(x)]
    ev = evals[-1] if evals else {}
    d, m = cfg.data, cfg.masking
    totals = (manifest or {}).get("totals", {})
    metadata: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "fill-mask",
        "license": cfg.run.card_license,
        "tags": list(dict.fromkeys(["dna", "genomics", "bert", "masked-language-model", f"{d.k}-mer", "randommask",
                                    m.strategy])),
        "randommask": {"version": __version__, "run": cfg.run.name, "masking": m.strategy, "k": d.k,
                       "stride": d.stride, "window_bp": model_config.get(WINDOW_BP),
                       "window_tokens": model_config.get(WINDOW_TOKENS), "steps": last.get("step", 0), "tokens": last.get("tokens", 0),
                       "init_from": cfg.model.init_from, "lineage": parent,
                       "data_sha256": [s["sha256"] for s in (manifest or {}).get("sources", [])]},
    }
    what = (f"A {cfg.model.preset} BERT masked-language model over {'overlapping' if d.stride == 1 else 'non-overlapping'} "
            f"{d.k}-mers of DNA (stride {d.stride}), pretrained with randommask {__version__} using "
            f"**{m.strategy}** masking for {last.get('step', 0):,} steps ({last.get('tokens', 0):,} tokens) on "
            f"{totals.get('files', '?')} FASTA file(s), {totals.get('bases', 0):,} bases.")
    if cfg.model.init_from:
        what += f" It continued from `{cfg.model.init_from}` (its weights were the starting point"
        if parent:
            what += f"; weights SHA-256 {parent['weights_sha256']}"
            up = parent.get("parent")
            if up:
                what += (f"; itself run `{up.get('run')}` of randommask {up.get('version')}, {up.get('masking')} "
                         f"masking, {up.get('steps', 0):,} steps, {up.get('tokens', 0):,} tokens")
        what += ")."
    sections = [
        ("Model", what),
        ("How to load", _how_to_load(d.k, d.stride, model_config)),
        ("Architecture", table(["", ""], [
            ("preset", cfg.model.preset), ("layers", model_config.get("num_hidden_layers")),
            ("hidden size", model_config.get("hidden_size")),
            ("attention heads", model_config.get("num_attention_heads")),
            ("intermediate size", model_config.get("intermediate_size")),
            ("parameters", f"{n_params:,}"), ("vocabulary", f"{model_config.get('vocab_size')} tokens"),
            ("positions", model_config.get("max_position_embeddings")),
            ("trained window", _window(model_config))])),
        ("Masking", _masking(cfg)),
        ("Data", _data(cfg, manifest)),
        ("Training", table(["", ""], [
            ("steps", f"{last.get('step', 0):,} of {cfg.optim.max_steps:,}"), ("tokens seen", f"{last.get('tokens', 0):,}"),
            ("batch", f"{cfg.optim.batch_size} windows × {cfg.scaling.num_workers} worker(s) × "
                      f"{cfg.optim.grad_accum} accumulation step(s) of {d.window_bp} bp"),
            ("optimizer", f"AdamW, lr {cfg.optim.lr:g}, warmup {cfg.optim.warmup_steps}, {cfg.optim.decay} decay, "
                          f"weight decay {cfg.optim.weight_decay:g}"),
            ("seed", cfg.run.seed), ("devices", "GPU" if cfg.scaling.use_gpu else "CPU"),
            ("final training loss", f"{nats(last.get('mask_loss'))} on [MASK] inputs, "
                                    f"{nats(last.get('loss'))} on all labelled positions")])),
        ("Results against references", _results(ev, floors)),
        ("Limits", _limits(cfg, floors, ev, model_config)),
        ("Produced by", "randommask " + __version__ + ", with this configuration:\n\n```yaml\n"
         + yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False).strip() + "\n```"),
    ]
    return render(metadata, f"{cfg.run.name}: a DNA k-mer BERT pretrained with {m.strategy} masking", sections)


def _window(model_config: dict[str, Any]) -> str:
    bp, tokens = model_config.get(WINDOW_BP), model_config.get(WINDOW_TOKENS)
    return f"{bp} bp ({tokens} positions, [CLS] and [SEP] included)" if bp else "not recorded"


def _how_to_load(k: int, stride: int, model_config: dict[str, Any]) -> str:
    tokens = model_config.get(WINDOW_TOKENS) or model_config.get("max_position_embeddings")
    return f"""```python
from transformers import AutoModelForMaskedLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("PATH")       # this directory (or its Hub repository)
model = AutoModelForMaskedLM.from_pretrained("PATH")
seq = "ACGTACGTTAGC..."
kmers = " ".join(seq[i:i + {k}] for i in range(0, len(seq) - {k} + 1, {stride}))  # DNABERT's input form
out = model(**tok(kmers, return_tensors="pt"))
```

Inputs are upper-case k-mers separated by spaces, [CLS] and [SEP] added by the tokenizer, at
most {tokens} tokens: the positions pretraining trained (`{WINDOW_BP}` and `{WINDOW_TOKENS}` in
config.json). `randommask embed`, `score-variants`, `zeroshot`, `probe` and `finetune` read that window
from config.json and refuse longer inputs unless given `--allow-untrained-positions`."""


def _masking(cfg: PretrainConfig) -> str:
    m = cfg.masking
    params = ", ".join(f"{k} {v}" for k, v in m.params().items())
    rows = [(f"{a:,}–{b:,}", f"{lo}–{hi} tokens" if lo != hi else f"{lo} tokens") for a, b, (lo, hi) in phases(cfg)]
    return (f"Strategy `{m.strategy}`{' (' + params + ')' if params else ''}. Masked span lengths by step:\n\n"
            + table(["steps", "span length"], rows))


def _data(cfg: PretrainConfig, manifest: dict | None) -> str:
    if not manifest:
        return f"Prepared data `{cfg.data.prepared}` (its manifest was not readable when this card was written)."
    t = manifest.get("totals", {})
    rows = [(s["uri"], f"{s['bytes']:,}", s["sha256"], s.get("records")) for s in manifest.get("sources", [])]
    return (table(["source", "bytes", "sha256", "records"], rows) + "\n\n"
            + f"{t.get('bases', 0):,} bases in {t.get('records', 0):,} records; training {t.get('train_bases', 0):,} "
            f"bases, validation {t.get('validation_bases', 0):,} ({t.get('validation_fraction', 0):.2%}, held out "
            f"by interval). Windows of {cfg.data.window_bp} bp, reverse-complemented with probability "
            f"{cfg.data.rc_prob}, windows with more than {cfg.data.max_n_fraction:.0%} non-ACGT bases dropped. "
            f"Prepared as `{cfg.data.prepared}` (prepare run {manifest.get('run')}).")


def _results(ev: dict, floors: dict) -> str:
    if not ev:
        return "No evaluation was logged (`run.eval_every` beyond the last step)."
    chance = math.log(4)
    rows = []
    for key, name, what in EVAL_SETS:
        if f"eval_{key}_mask_loss" not in ev:
            continue
        best = best_counting(floors, key)
        rows.append((f"{name} ({what})", nats(ev.get(f"eval_{key}_mask_loss")),
                     nats(floors.get(f"overlap_only_{key}")), nats(floors.get(f"eval_{key}_overlap")),
                     nats(floors.get("context_free")), nats(ev.get(f"eval_{key}_base_loss")), nats(chance),
                     nats(best[1] if best else None)))
    return (f"On held-out validation windows with fixed masks, at step {ev.get('step', 0):,}, nats "
            "(losses on [MASK] inputs only; per-base: what the model predicts about each hidden base):\n\n"
            + table(["evaluation", "[MASK] loss", "overlap-only reader", "overlap reference", "context-free floor",
                     "per-base loss", "chance per base", "best counting per base (this geometry)"], rows)
            + "\n\nThe overlap-only reader reads every visible base perfectly and knows no DNA; the best "
            "counting line predicts each hidden base of that evaluation from the visible bases beside it, as "
            "the model sees them (back-off count tables of the training split, both strands). A [MASK] loss "
            "below the overlap-only line is more than reading the overlap; a per-base loss below the counting "
            "line is knowledge of DNA beyond counting.")


def _limits(cfg: PretrainConfig, floors: dict, ev: dict, model_config: dict[str, Any]) -> str:
    lines = [
        "- Trained and evaluated on the data above only; held-out windows come from the same genome(s).",
        f"- Inputs must be {cfg.data.k}-mers with stride {cfg.data.stride}; another k needs another model.",
        "- Not validated on downstream tasks unless fine-tuning results are listed in a fine-tuned model's "
        "card (`randommask finetune`).",
    ]
    if model_config.get(WINDOW_BP):
        lines.append(f"- Trained on windows of {_window(model_config)} of its {model_config.get('max_position_embeddings')} "
                     "positions: positions past those never received a gradient, so longer inputs read untrained "
                     "position embeddings.")
    if cfg.run.card_license == "other":
        lines.append("- License: not stated (`run.card_license` sets the Hugging Face license id of this card).")
    best = best_counting(floors, "span_k")
    base = ev.get("eval_span_k_base_loss")
    if base is not None and best is not None and base >= best[1]:
        lines.append(f"- Its span-k per-base loss ({base:.3f}) is not below the best counting line in that "
                     f"geometry ({best[1]:.3f}): it predicts hidden bases no better than counting the bases it sees.")
    return "\n".join(lines)
