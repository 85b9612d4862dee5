"""A linear probe on frozen embeddings: a quick downstream objective for sweeps."""

from __future__ import annotations

import numpy as np
import torch

from randommask.common.checkpoints import node_checkpoint
from randommask.data.tokenizer import KmerTokenizer
from randommask.evaluation import gue


@torch.no_grad()
def embed(model_dir: str, seqs: list[str], batch: int = 128) -> np.ndarray:
    """Mean-pooled last hidden states of the encoder (padding excluded)."""
    import transformers
    from transformers import BertModel

    transformers.logging.set_verbosity_error()
    tok = KmerTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False, attn_implementation="sdpa").eval()
    max_len = min(tok.num_tokens(max(len(s) for s in seqs)), model.config.max_position_embeddings)
    out = []
    for i in range(0, len(seqs), batch):
        enc = tok.encode_batch(seqs[i : i + batch], max_length=max_len)
        ids, attn = torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"])
        hidden = model(input_ids=ids, attention_mask=attn).last_hidden_state
        mask = attn.unsqueeze(-1).float()
        out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def linear_probe(model_dir: str, gue_dir: str, datasets: list[str], max_train: int = 2000, max_eval: int = 1000,
                 storage_options: dict | None = None) -> dict[str, float]:
    """Logistic regression on frozen mean-pooled embeddings: test score per dataset and their mean
    (``probe_score``). Cheap enough to judge every sweep trial downstream, not by its own loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model_dir = node_checkpoint(model_dir, storage_options)  # a sweep trial's final may be on S3
    scores = {}
    for name in datasets:
        ds = gue.REGISTRY[name]
        tr = gue.subsample(*gue.read_split(gue_dir, name, "train", storage_options), max_train, seed=0)
        te = gue.subsample(*gue.read_split(gue_dir, name, "test", storage_options), max_eval, seed=0)
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(embed(model_dir, tr[0]), tr[1])
        scores[f"probe_{name}"] = round(gue.scores(te[1], clf.predict(embed(model_dir, te[0])))[ds.metric], 5)
    scores["probe_score"] = round(float(np.mean(list(scores.values()))), 5)
    return scores
