"""One fine-tuning trial: a (dataset, seed) pair, trained and selected by its protocol, scored on
test, and written to ``OUT/trials/<dataset>__seed<k>.json`` (``<dataset>__lr<rate>__seed<k>.json``
in an ``--lr`` search, one trial per rate)."""

from __future__ import annotations

import copy
import json
import time
from typing import Any, Callable

import numpy as np
import torch

from randommask.common import storage
from randommask.common.checkpoints import node_checkpoint
from randommask.data.tokenizer import KmerTokenizer
from randommask.evaluation import gue
from randommask.finetune import protocol
from randommask.finetune.window import row_tokens
from randommask.training.model import autocast
from randommask.training.step import lr_factor, param_groups

# Rows per forward pass: a batch larger than this (covid's 128) is accumulated from micro-batches,
# as the scripts do with gradient_accumulation_steps, with the same result as one big batch.
MICRO_BATCH = 32


def trial_file(out: str, name: str, seed: int, lr: float | None = None) -> str:
    """Where a finished (dataset, seed) trial's result lives: local or on S3, beside results.*. ``lr``
    names the rate of an ``--lr`` search (None otherwise: the names of runs without one are unchanged)."""
    return storage.join(out, "trials", f"{_trial_name(name, seed, lr)}.json")


def model_dir(out: str, name: str, seed: int, lr: float | None = None) -> str:
    """Where ``--save-models`` puts a trial's selected model, with its card: a Hugging Face directory."""
    return storage.join(out, "models", _trial_name(name, seed, lr))


def _trial_name(name: str, seed: int, lr: float | None) -> str:
    rate = "" if lr is None else f"__lr{float(lr)!r}"  # repr: two distinct rates never share a name
    return f"{name.replace('/', '_')}{rate}__seed{seed}"


@torch.no_grad()
def evaluate(model, ids: torch.Tensor, attn: torch.Tensor, labels: torch.Tensor, device: torch.device,
             batch: int = 128) -> dict[str, float]:
    """Loss (mean over rows, as Trainer's eval_loss) and the classification metrics of one split."""
    model.eval()
    logits = []
    for i in range(0, len(ids), batch):
        with autocast(device):
            out = model(input_ids=ids[i : i + batch].to(device), attention_mask=attn[i : i + batch].to(device))
        logits.append(out.logits.float().cpu())
    logits = torch.cat(logits)
    loss = float(torch.nn.functional.cross_entropy(logits, labels))
    return {"loss": loss, **gue.scores(labels.numpy(), logits.argmax(-1).numpy())}


def run_trial(p: dict[str, Any], report: Callable[[dict], None] | None = None,
              on_evaluate: Callable[[int, torch.nn.Module, dict], None] | None = None) -> dict[str, Any]:
    """Fine-tune one (dataset, seed) by ``p["protocol"]`` and write its trial file (named by its rate
    when ``p["search"]``). ``report`` receives each dev evaluation; ``on_evaluate(step, model, dev)``
    sees the model at each one."""
    import transformers
    from transformers import BertForSequenceClassification

    transformers.logging.set_verbosity_error()  # the new classifier head is expected, not news
    transformers.logging.disable_progress_bar()
    started = time.time()
    ds = gue.REGISTRY[p["dataset"]]
    plan = protocol.plan(ds, p.get("protocol", "published"), p.get("epochs"), p.get("lr"), p.get("batch_size"))
    seed = int(p["seed"])
    torch.manual_seed(seed)
    if p.get("threads"):
        torch.set_num_threads(int(p["threads"]))
    device = torch.device("cuda" if torch.cuda.is_available() and p.get("gpu") else "cpu")
    ckpt = node_checkpoint(p["checkpoint"], p.get("storage_options"))
    tok = KmerTokenizer.from_pretrained(ckpt)
    t0 = time.time()
    data, rows_in_file = {}, {}
    for split in gue.SPLITS:
        seqs, labels = gue.read_split(p["gue_dir"], ds.name, split, p.get("storage_options"))
        rows_in_file[split] = len(seqs)
        limit = p.get("max_train") if split == "train" else p.get("max_eval")
        data[split] = gue.subsample(seqs, labels, limit, seed=0)  # the same rows for every seed and model
    model = BertForSequenceClassification.from_pretrained(ckpt, num_labels=ds.classes, attn_implementation="sdpa")
    longest = max(len(s) for split in gue.SPLITS for s in data[split][0])
    max_len = row_tokens(tok, longest, plan["max_length"], model.config.max_position_embeddings)
    tensors = {}
    for split in gue.SPLITS:
        enc = tok.encode_batch(data[split][0], max_length=max_len)
        tensors[split] = (torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"]),
                          torch.from_numpy(data[split][1]))
    if p.get("lora"):
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                                                 target_modules=["query", "value"]))
    model.to(device)
    ids, attn, labels = tensors["train"]
    n_train, batch = len(ids), plan["batch_size"]
    sched = protocol.schedule(plan, n_train, subsampled=n_train < rows_in_file["train"])
    opt = torch.optim.AdamW(param_groups(model, plan["weight_decay"]), lr=plan["lr"])
    lr_sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, plan["warmup_steps"], sched.total_steps, trainer_warmup=True))
    eval_at = set(sched.eval_at)
    best, best_step, best_state, history, step = None, 0, None, [], 0

    def check_dev() -> None:  # one dev evaluation at ``step``: history, the best so far, the hooks
        nonlocal best, best_step, best_state
        dev = evaluate(model, *tensors["dev"], device)
        history.append({"step": step, "epoch": round(step / sched.steps_per_epoch, 3),
                        **{f"dev_{k}": round(v, 5) for k, v in dev.items()}})
        if protocol.better(plan, dev, best, ds.metric):
            best, best_step = dev, step
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        if on_evaluate is not None:
            on_evaluate(step, model, dev)
        if report is not None:
            report(history[-1])

    for epoch in range(sched.epochs):
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(n_train))
        for i in range(0, n_train, batch):
            model.train()
            rows = order[i : i + batch]
            for chunk in rows.split(MICRO_BATCH):
                with autocast(device):
                    out = model(input_ids=ids[chunk].to(device), attention_mask=attn[chunk].to(device),
                                labels=labels[chunk].to(device))
                (out.loss * (len(chunk) / len(rows))).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # Trainer's max_grad_norm
            opt.step()
            lr_sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step in eval_at:
                check_dev()
            if step >= sched.total_steps:
                break
    if best_state is None:
        # Training shorter than one evaluation interval (a full-size run with --epochs 1, say): dev is
        # evaluated once, at the last step, and that model is the one selected.
        check_dev()
    model.load_state_dict(best_state)
    test = evaluate(model, *tensors["test"], device)
    result = {
        "dataset": ds.name, "task": ds.task, "seed": seed, "metric": ds.metric, "status": "ok",
        "protocol": plan.protocol, "selection": plan.selection, "hyperparameters": plan.hyperparameters,
        "lora": bool(p.get("lora")), "max_train": p.get("max_train"), "max_eval": p.get("max_eval"),
        "checkpoint": p["checkpoint"],
        # what this run did, beside the protocol's values (a subsampled run takes fewer steps)
        "ran": {"steps": step, "steps_per_epoch": sched.steps_per_epoch, "epochs": round(step / sched.steps_per_epoch, 3),
                "evaluations": len(history), "best_step": best_step, "max_tokens": max_len,
                "precision": "bf16" if device.type == "cuda" else "fp32", "micro_batch": min(batch, MICRO_BATCH),
                "n_train": n_train, "n_dev": len(tensors["dev"][0]), "n_test": len(tensors["test"][0])},
        "test": {k: round(v, 5) for k, v in test.items()}, "dev_best": {k: round(v, 5) for k, v in best.items()},
        "history": history, "seconds": round(time.time() - t0, 1), "started": started, "finished": time.time(),
    }
    if p.get("save_model"):  # before the trial file, whose presence means "finished"
        result["model"] = save_model(model, tok, ckpt, p, result, tensors["test"][2])
    storage.write_bytes(trial_file(p["out"], ds.name, seed, plan["lr"] if p.get("search") else None),
                        (json.dumps(result, indent=1) + "\n").encode(), p.get("storage_options"))
    return result


def save_model(model, tok: KmerTokenizer, ckpt: str, p: dict[str, Any], result: dict[str, Any],
               test_labels: torch.Tensor) -> str:
    """The selected model as a plain Hugging Face directory (LoRA adapters merged) with its card."""
    import tempfile

    from randommask.common.modelcard import CARD_FILE, lineage, read_metadata
    from randommask.finetune.card import finetune_card, majority_reference

    if p.get("lora"):
        model = model.merge_and_unload()
    base = lineage(p["checkpoint"], ckpt)
    card = finetune_card(result, base, majority_reference(test_labels.numpy()), k=tok.k,
                         license_id=str(read_metadata(ckpt).get("license") or "other"))
    rate = result["hyperparameters"]["lr"] if p.get("search") else None
    uri = model_dir(p["out"], result["dataset"], int(p["seed"]), rate)
    with tempfile.TemporaryDirectory() as d:
        model.to("cpu").save_pretrained(d)
        tok.save_pretrained(d)
        with open(f"{d}/{CARD_FILE}", "w", encoding="utf-8") as f:
            f.write(card)
        storage.put_dir(d, uri, p.get("storage_options"))
    return uri


def tune_trial(config: dict) -> None:
    """The Ray Tune trainable: one trial, its evaluations reported as they come."""
    from ray import tune

    result = run_trial(config["trial"], report=lambda m: tune.report(m))
    tune.report({"step": result["ran"]["steps"], "done": True, "lr": result["hyperparameters"]["lr"],
                 **{f"dev_best_{k}": v for k, v in result["dev_best"].items()},
                 **{f"test_{k}": v for k, v in result["test"].items()}})
