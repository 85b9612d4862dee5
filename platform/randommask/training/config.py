"""The pretraining config: one YAML file, validated before Ray starts, overridable with ``--set``.

Each component has its own section (data, masking, model, optim, scaling, run, observability).
Unknown keys are errors, so a typo cannot silently fall back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from randommask.common.rundir import RunDir
from randommask.data.config import DataSection, Section
from randommask.data.tokenizer import KmerTokenizer
from randommask.errors import UserError
from randommask.training.masking import PAPER_PHASE_ENDS, STRATEGIES, all_params, make_masker
from randommask.training.model import MAX_POSITIONS, PRESETS, build_config


def one_of(choices, what: str):
    """A field validator: the value must be one of ``choices`` (a registry's names)."""

    def check(cls, v: str) -> str:
        if v not in choices:
            raise ValueError(f"unknown {what} {v!r}; choose one of {', '.join(choices)}")
        return v

    return classmethod(check)


class MaskingSectionBase(Section):
    strategy: str = "randommask"

    _known = field_validator("strategy")(one_of(STRATEGIES, "strategy"))

    def params(self) -> dict[str, Any]:
        """The masker parameters that are set (the rest take make_masker's defaults)."""
        return {k: v for k, v in self.model_dump(exclude={"strategy"}).items() if v is not None}


# The masking section's keys come from the strategy registry: ``strategy`` and every parameter some
# strategy takes, unset by default (the strategy's own default applies). The values are checked by
# building the masker (PretrainConfig's validator), so the rules live in training.masking alone.
MaskingSection = create_model("MaskingSection", __base__=MaskingSectionBase, __module__=__name__,
                              **{name: (Optional[Any], None) for name in all_params()})


class ModelSection(Section):
    preset: str = "small"
    overrides: dict[str, Any] = Field(default_factory=dict, description="BertConfig fields")
    init_from: Optional[str] = Field(None, description="continue from a k-mer BERT checkpoint: a Hugging Face "
                                     "directory (e.g. DNABERT's), a run's final/ or step_* checkpoint, local or s3://")

    _known = field_validator("preset")(one_of(PRESETS, "preset"))


class OptimSection(Section):
    lr: float = Field(4e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    decay: Literal["linear", "cosine", "constant"] = "linear"
    decay_start: Optional[int] = Field(None, ge=0, description="hold the peak lr until this step, then decay to "
                                       "max_steps (warmup-stable-decay); default: decay right after warmup")
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(1e-6, gt=0)
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    batch_size: int = Field(32, ge=1, description="windows per worker per micro-step")
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(1000, ge=1)


class ScalingSection(Section):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, gt=0)
    compile: bool = Field(False, description="torch.compile the model (CUDA)")
    torch_threads: Optional[int] = Field(None, ge=1, description="torch threads per worker; default: Ray's, one per "
                                         "CPU the worker reserves. More than that shares cores with the data tasks "
                                         "(the CPU demo gives its one worker both cores)")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="extra Ray resources each worker requests besides its CPUs and GPUs, "
        "e.g. {trainer: 1}: give the nodes that may train a custom resource (ray start --resources) and workers "
        "go only there, never to the head or CPU-only nodes")

    @field_validator("resources_per_worker")
    @classmethod
    def _resource_names(cls, v: dict[str, float]) -> dict[str, float]:
        import math
        import re

        for name, amount in v.items():
            if name in ("CPU", "GPU"):
                raise ValueError(f"{name} is set by scaling.{name.lower()}s_per_worker; list only other resources")
            if not re.fullmatch(r"[A-Za-z0-9_.:/-]+", name):
                raise ValueError(f"resource name {name!r}: use letters, digits and _ . : / - (as in ray start "
                                 "--resources)")
            if not math.isfinite(amount) or amount < 0:
                raise ValueError(f"resource {name}: amount {amount} must be a finite number >= 0")
        return v


class RunSection(Section):
    name: str = Field("pretrain", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    storage_path: str = "outputs/runs"
    checkpoint_every: int = Field(200, ge=1)
    checkpoint_minutes: Optional[float] = Field(
        30.0, gt=0, description="also checkpoint when this much wall-clock time passed since the last one "
        "(decided at log steps); null: by step only")
    eval_every: int = Field(200, ge=1)
    eval_windows: int = Field(256, ge=1, description="fixed validation windows per evaluation")
    log_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(0, ge=-1, description="worker failures survived (-1: unlimited)")
    restart_backoff_s: float = Field(10.0, ge=0, description="wait before the Nth restart in one job: "
                                     "this x 2^(N-1), jittered, at most 5 minutes")
    seed: int = 0
    stop_after: Optional[int] = Field(None, ge=1, description="checkpoint and stop at this step; resume later")
    card_license: str = Field("other", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$",
                              description="the license in the final model card's front matter, a Hugging Face "
                              "license id (apache-2.0, cc-by-4.0, ...); other: say it in the card")
    resume_from: Optional[str] = Field(
        None, description="a step_* checkpoint (local or s3://) to continue from while this run has none of its "
        "own: a run moved to new storage or a new machine; its training settings must match this config")


class ObservabilitySection(Section):
    ray_metrics: bool = Field(True, description="export randommask_* through Ray's metrics endpoint")
    prometheus_port: Optional[int] = Field(None, ge=0, le=65535,
                                           description="also serve /metrics with prometheus_client (rank 0)")
    prometheus_host: str = "127.0.0.1"
    progress: bool = True


class TrackingSection(Section):
    mlflow_uri: Optional[str] = Field(None, description="an MLflow tracking server (http(s)://host:port); none: "
                                      "off, even where MLFLOW_TRACKING_URI is set; default: "
                                      "MLFLOW_TRACKING_URI, else no tracking")
    experiment: str = Field("randommask", min_length=1, description="the MLflow experiment")
    parent_run_id: Optional[str] = Field(None, description="nest this run under an MLflow run (a sweep sets it)")

    @field_validator("mlflow_uri")
    @classmethod
    def _no_credentials(cls, v: Optional[str]) -> Optional[str]:
        from urllib.parse import urlsplit

        if v and "@" in urlsplit(v).netloc:
            raise ValueError("credentials never go in a config; set MLFLOW_TRACKING_USERNAME and "
                             "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")
        return v


class PretrainConfig(Section):
    data: DataSection
    masking: MaskingSection = Field(default_factory=MaskingSection)
    model: ModelSection = Field(default_factory=ModelSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    run: RunSection = Field(default_factory=RunSection)
    observability: ObservabilitySection = Field(default_factory=ObservabilitySection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)

    @model_validator(mode="after")
    def _consistent(self) -> "PretrainConfig":
        try:
            make_masker(self.masking.strategy, self.data.k, **self.masking.params())
        except UserError as e:
            raise ValueError(f"masking: {e}") from None
        if self.model.init_from is None:
            try:
                build_config(self.model.preset, self.data.k, **self.model.overrides)
            except UserError as e:
                raise ValueError(f"model: {e}") from None
        tokens = KmerTokenizer(self.data.k, self.data.stride).num_tokens(self.data.window_bp)
        positions = int(self.model.overrides.get("max_position_embeddings", MAX_POSITIONS))
        if tokens > positions:
            raise ValueError(f"data: a {self.data.window_bp}-bp window gives {tokens} tokens, more than the model's "
                             f"{positions} positions; lower data.window_bp")
        for key in ("key", "secret", "token"):
            if key in self.data.storage_options:
                raise ValueError(f"data.storage_options.{key}: credentials never go in a config; "
                                 "use AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        return self

    def masker(self):
        return make_masker(self.masking.strategy, self.data.k, **self.masking.params())

    def run_dir(self) -> RunDir:
        """This run's directory (storage credentials and endpoint from the environment)."""
        return RunDir.of(self.run.storage_path, self.run.name)


def _set_path(tree: dict, dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        if not isinstance(node.setdefault(key, {}), dict):
            raise UserError(f"{source}: --set {dotted}: {key} is not a section")
        node = node[key]
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """``a.b=c`` overrides; values are YAML (``masking.phase_ends=[10,20,30]``, ``run.seed=3``)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set optim.lr=3e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise UserError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
        _set_path(tree, key.strip(), value, "--set")
    return tree


def format_validation_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if x != "__root__")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against docs/pretraining.md)"
        elif e["type"] == "missing":
            msg = "required"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"invalid config {source}: " + "; ".join(parts)


def validate_config(tree: dict, source: str) -> PretrainConfig:
    try:
        return PretrainConfig.model_validate(tree)
    except ValidationError as e:
        raise UserError(format_validation_error(e, source)) from None


def read_yaml_mapping(path: str | os.PathLike, what: str = "config") -> dict:
    """A YAML file that must hold a mapping; one-line errors for a missing file or bad YAML."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p} not found; the shipped ones are in jobs/configs/")
    try:
        tree = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{what} {p}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(tree, dict):
        raise UserError(f"{what} {p}: expected a mapping of sections")
    return tree


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> PretrainConfig:
    tree = read_yaml_mapping(path)
    return validate_config(apply_overrides(tree, overrides or []), str(path))


def dump_config(cfg: PretrainConfig) -> str:
    """YAML of the full config (defaults included); it holds no credentials by construction."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


__all__ = ["PretrainConfig", "load_config", "validate_config", "apply_overrides", "dump_config", "PAPER_PHASE_ENDS"]


# Settings a run may change when it continues from a checkpoint: where and how it runs, how often it
# reports, not what it trains. Anything else differing would mix two settings in one run.
RESUME_MAY_DIFFER = ("run.", "observability.", "tracking.", "scaling.", "data.prepared", "data.storage_options")


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and key != "storage_options":
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_conflicts(saved: dict, current: dict) -> list[str]:
    """The training settings in which a checkpoint's config (``saved``) and this one differ, as
    ``key: saved -> current``. ``optim.max_steps`` may grow or shrink under a constant learning rate,
    where the schedule does not depend on it. Keys on one side only (a run started by another
    version of randommask, which had fewer or other settings) are not compared."""
    a, b = flatten(saved), flatten(current)
    if a.get("optim.decay") == b.get("optim.decay") == "constant":
        a.pop("optim.max_steps", None), b.pop("optim.max_steps", None)
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in sorted(set(a) & set(b))
            if not k.startswith(RESUME_MAY_DIFFER) and a[k] != b[k]]
