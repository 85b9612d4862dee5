"""Model cards: ``README.md`` in a model directory, in the Hugging Face format (YAML front matter
that ``huggingface_hub.ModelCard`` parses, then Markdown), so the directory can be pushed to the
Hub as it is. The pretraining and fine-tuning cards (``training.card``, ``finetune.card``) build
their sections; this module only writes the format."""

from __future__ import annotations

from typing import Any, Iterable

import yaml

CARD_FILE = "README.md"


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
