"""Typed configuration: YAML files plus ``--set KEY=VALUE`` overrides, unknown keys rejected.

A run is described by a :class:`RunConfig` with four parts:

* ``data``  (:class:`DataConfig`): format, modalities, preprocessing and the split rule;
* ``train`` (:class:`TrainConfig`): optimiser, batches, early stopping, evaluation;
* the model's own section, named after the model (``lightgcn: {n_layers: 3}``), validated by the
  model's ``Config`` class;
* ``model``, ``seed`` and ``data_source`` (what ``--data`` named).

A YAML file may hold any of these sections (and sections for other models, which are ignored, so one
file can configure a whole ``compare``). Overrides are ``section.key=value`` or a bare ``key=value``
that names exactly one field in the model, train or data sections. Values are parsed as YAML
(``--set topk=[10,20]``). Every unknown key is an error with the closest valid name suggested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .registry import suggest


class StrictConfig(BaseModel):
    """Base for every config section: unknown keys and wrong types are rejected with clear errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @classmethod
    def build(cls, values: dict[str, Any] | None, where: str) -> "StrictConfig":
        """Validate ``values`` (from YAML or overrides); ``where`` names the section for messages."""
        values = dict(values or {})
        known = set(cls.model_fields)
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"Unknown key '{key}' in {where}.{suggest(key, known)} "
                    f"Valid keys: {', '.join(sorted(known))}."
                )
        try:
            return cls(**values)
        except ValidationError as exc:
            parts = []
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                parts.append(f"{where}.{loc}: {err['msg']} (got {err.get('input')!r})")
            raise ConfigError("Invalid configuration: " + "; ".join(parts) + ".") from None


SplitRule = Literal["given", "mmrec", "user_temporal", "global_temporal", "loo", "cold_items"]


class DataConfig(StrictConfig):
    """How a dataset is read, cleaned and split."""

    format: str | None = Field(None, description="reader name; None detects it from the folder")
    modalities: list[str] | None = Field(None, description="modalities to load; None loads all found")
    dedup: Literal["pair", "row", "none"] = Field(
        "pair", description="'pair' keeps the first (user, item) occurrence, 'row' drops identical rows only"
    )
    kcore: int = Field(0, ge=0, description="iterative k-core on users and items (0 = off)")
    user_core: int | None = Field(None, ge=0, description="k-core for users (overrides kcore)")
    item_core: int | None = Field(None, ge=0, description="k-core for items (overrides kcore)")
    split: SplitRule | None = Field(
        None, description="split rule; None uses the split given in the data, else 'mmrec'"
    )
    default_split: SplitRule = Field(
        "mmrec", description="rule used when data.split is unset and the data has no split of its own"
    )
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = Field(2024, description="seed of random split rules (kept fixed across model seeds)")
    cold_item_ratio: float = Field(0.2, gt=0, lt=1, description="share of items held out by 'cold_items'")
    filter_cold_users: bool = Field(True, description="drop valid/test users with no training interaction")
    columns: dict[str, str] = Field(default_factory=dict, description="tabular column mapping")
    min_rating: float | None = Field(None, description="keep interactions with rating >= this")
    extra_features: dict[str, str] = Field(
        default_factory=dict,
        description="extra modalities: name -> .npz file (raw 'ids' + 'values' [+ 'available']) or .npy "
                    "(row r = item r of the dataset as read)",
    )
    feature_noise: float = Field(
        0.0, ge=0, le=1,
        description="robustness tests: in every modality, this share of the items with a feature get a random "
                    "vector instead (Gaussian with the modality's per-dimension mean and std); 0 = off",
    )
    feature_noise_seed: int = Field(0, description="seed of data.feature_noise (which items, which vectors)")


class TrainConfig(StrictConfig):
    """Optimisation, early stopping and evaluation settings shared by every model."""

    epochs: int = Field(1000, ge=0)
    batch_size: int = Field(2048, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: tuple[float, int] = Field(
        (1.0, 50), description="MMRec LambdaLR: lr * factor ** (epoch / step); (1.0, x) is constant"
    )
    patience: int = Field(20, ge=1, description="stop after this many evaluations without improvement")
    valid_metric: str = "recall@20"
    eval_every: int = Field(1, ge=1)
    topk: list[int] = Field(default_factory=lambda: [10, 20, 50])
    eval_batch_users: int = Field(0, ge=0, description="users per scoring chunk; 0 sizes it automatically")
    mask_valid_in_test: bool = Field(
        False, description="also mask validation items when scoring test (MMRec leaves them as candidates)"
    )
    mask_history: bool = Field(True, description="mask the user's known items (train, + valid at test if set)")
    num_negatives: int = Field(1, ge=1)
    grad_clip: float = Field(0.0, ge=0, description="clip the gradient norm (0 = off)")
    device: str = "auto"
    threads: int = Field(0, ge=0, description="torch threads (0 = torch's default)")
    log_grad_ratio: bool = Field(
        True, description="log the ID-embedding vs feature-projection gradient-norm ratio when a model has both"
    )

    @field_validator("topk")
    @classmethod
    def _topk_positive(cls, value: list[int]) -> list[int]:
        if not value or any(k <= 0 for k in value):
            raise ValueError("topk must be a non-empty list of positive integers")
        return sorted(set(value))

    @field_validator("valid_metric")
    @classmethod
    def _metric_form(cls, value: str) -> str:
        from .evaluate.metrics import METRICS

        value = value.lower().strip()
        name, _, k = value.partition("@")
        if name not in METRICS or not k.isdigit() or int(k) < 1:
            raise ValueError(f"valid_metric looks like 'recall@20': one of {', '.join(METRICS)}, '@', a cut-off >= 1")
        return f"{name}@{int(k)}"

    @property
    def valid_k(self) -> int:
        return int(self.valid_metric.split("@")[1])

    @property
    def eval_ks(self) -> list[int]:
        """The cut-offs every evaluation computes: ``topk`` plus the selection metric's."""
        return sorted(set(self.topk) | {self.valid_k})


class RunConfig(StrictConfig):
    """Everything needed to reproduce one training run."""

    model: str
    seed: int = 0
    data_source: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    params: dict[str, Any] = Field(default_factory=dict, description="the model's own validated config")

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resolved config in the same layout a user writes (model section named after the model)."""
        return {
            "model": self.model,
            "seed": self.seed,
            "data_source": self.data_source,
            "data": self.data.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
            self.model: dict(self.params),
        }


TOP_LEVEL = {"model", "seed", "data_source"}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"Config file {p} does not exist. Fix: pass the path of a YAML file to --config.")
    try:
        content = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {p} is not valid YAML: {exc}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"Config file {p} must hold a mapping of sections (data:, train:, <model>:).")
    return content


def parse_value(text: str) -> Any:
    """Parse an override value as YAML (numbers, booleans, lists); plain text stays a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def resolve_config(
    model: str,
    model_config_cls: type[StrictConfig],
    files: list[dict[str, Any]] | None = None,
    overrides: list[str] | None = None,
    *,
    seed: int | None = None,
    data_source: str | None = None,
    epochs: int | None = None,
    model_names: list[str] | None = None,
    model_aliases: tuple[str, ...] = (),
    defaults: dict[str, dict[str, Any]] | None = None,
) -> RunConfig:
    """Merge defaults, config files (in order) and ``KEY=VALUE`` overrides into a :class:`RunConfig`.

    ``model_names`` lists every registered model, so a file may carry other models' sections;
    ``model_aliases`` are other names of this model, accepted as its section name; ``defaults``
    (``{"train": {...}, "data": {...}}``) are the model family's own defaults, applied before the files
    (e.g. sequential models evaluate on leave-one-out with NDCG@10).
    """
    model = model.lower()
    own_names = {model, *(a.lower() for a in model_aliases)}
    sections: dict[str, dict[str, Any]] = {"data": dict((defaults or {}).get("data", {})),
                                           "train": dict((defaults or {}).get("train", {})), model: {}}
    top: dict[str, Any] = {}
    other_models = set(model_names or []) - {model}
    for content in files or []:
        for key, value in content.items():
            key_l = str(key).lower()
            key_l = model if key_l in own_names else key_l
            if key_l in ("data", "train", model):
                if not isinstance(value, dict):
                    raise ConfigError(f"Section '{key}' in the config file must be a mapping.")
                sections[key_l].update(value)
            elif key_l in TOP_LEVEL:
                top[key_l] = value
            elif key_l in other_models:
                continue
            else:
                allowed = {"data", "train", model, *TOP_LEVEL, *other_models}
                raise ConfigError(f"Unknown section '{key}' in the config file.{suggest(key_l, allowed)}")

    field_owner = {
        model: set(model_config_cls.model_fields),
        "train": set(TrainConfig.model_fields),
        "data": set(DataConfig.model_fields),
    }
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"Override '{item}' is not KEY=VALUE. Example: --set train.learning_rate=0.001")
        key, raw = item.split("=", 1)
        key = key.strip().lower()
        value = parse_value(raw.strip())
        if "." in key:
            section, field = key.split(".", 1)
            subkey = None
            if "." in field:  # a dict entry: data.columns.user=uid, data.extra_features.NAME=PATH
                field, _ = field.split(".", 1)
                subkey = item.split("=", 1)[0].strip().split(".", 2)[2]
            if section == "model" or section in own_names:
                section = model
            if section in other_models:  # another model's setting (one --set list serves a compare)
                continue
            if section not in field_owner:
                raise ConfigError(
                    f"Unknown section '{section}' in override '{item}'.{suggest(section, field_owner)} "
                    f"Sections: {', '.join(field_owner)}."
                )
            if field not in field_owner[section]:
                raise ConfigError(
                    f"Unknown key '{field}' in section '{section}' (override '{item}')."
                    f"{suggest(field, field_owner[section])}"
                )
            if subkey is not None:
                current = sections[section].get(field)
                if current is None:
                    default = (model_config_cls if section == model else
                               TrainConfig if section == "train" else DataConfig).model_fields[field].get_default(
                                   call_default_factory=True)
                    current = dict(default) if isinstance(default, dict) else None
                if not isinstance(current, dict):
                    raise ConfigError(f"'{section}.{field}' is not a mapping, so '{item}' cannot set an entry of it.")
                sections[section][field] = {**current, subkey: value}
            else:
                sections[section][field] = value
        elif key in TOP_LEVEL:
            top[key] = value
        else:
            owners = [s for s, fields in field_owner.items() if key in fields]
            if not owners:
                everything = {f for fields in field_owner.values() for f in fields} | TOP_LEVEL
                raise ConfigError(f"Unknown key '{key}' in override '{item}'.{suggest(key, everything)}")
            if len(owners) > 1:
                raise ConfigError(
                    f"Key '{key}' exists in several sections ({', '.join(owners)}); "
                    f"write it as {owners[0]}.{key}={raw}."
                )
            sections[owners[0]][key] = value

    if epochs is not None:
        sections["train"]["epochs"] = epochs
    if seed is not None:
        top["seed"] = seed
    if data_source is not None:
        top["data_source"] = data_source
    params = model_config_cls.build(sections[model], where=model).model_dump(mode="json")
    return RunConfig.build({
        "model": model,
        "seed": top.get("seed", 0),
        "data_source": str(top.get("data_source", "")),
        "data": DataConfig.build(sections["data"], where="data"),
        "train": TrainConfig.build(sections["train"], where="train"),
        "params": params,
    }, where="config")
