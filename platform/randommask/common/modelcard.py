"""Model cards: ``README.md`` in a model directory, in the Hugging Face format (YAML front matter
that ``huggingface_hub.ModelCard`` parses, then Markdown), so the directory can be pushed to the
Hub as it is. The pretraining and fine-tuning cards (``training.card``, ``finetune.card``) build
their sections; this module writes the format, reads a card's front matter and records lineage."""

from __future__ import annotations

import os
from typing import Any, Iterable

import yaml

CARD_FILE = "README.md"


def read_metadata(model_dir: str) -> dict[str, Any]:
    """The front matter of a local model directory's card; empty when it has none or it does not parse."""
    card = os.path.join(model_dir, CARD_FILE)
    if not os.path.isfile(card):
        return {}
    text = open(card, encoding="utf-8").read()
    if not (text.startswith("---\n") and "\n---" in text[4:]):
        return {}
    try:
        meta = yaml.safe_load(text[4 : text.index("\n---", 4)])
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def lineage(init_from: str, local_dir: str) -> dict[str, Any]:
    """What a continued pretraining or a fine-tuning started from: its URI, the digest of its weights,
    and the ``randommask`` block of its own card when it has one (so a chain can be read)."""
    from randommask.common.checkpoints import weights_digest

    out: dict[str, Any] = {"init_from": init_from, "weights_sha256": weights_digest(local_dir)}
    block = read_metadata(local_dir).get("randommask")
    if isinstance(block, dict):
        out["parent"] = block
    return out


def render(metadata: dict[str, Any], title: str, sections: Iterable[tuple[str, str]]) -> str:
    """The card's text: front matter, a title, then each (heading, Markdown body) that has a body."""
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True).strip()
    parts = [f"---\n{front}\n---\n", f"# {title}\n"]
    parts += [f"## {heading}\n\n{body.strip()}\n" for heading, body in sections if body and body.strip()]
    return "\n".join(parts)


def table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """A Markdown table; ``None`` cells read as an em dash."""
    def cell(v: Any) -> str:
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def nats(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"
