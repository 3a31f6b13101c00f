"""Typed configuration: YAML files, ``--set KEY=VALUE`` overrides and Python mappings; unknown keys rejected.

A run is described by a :class:`RunConfig` with four parts:

* ``data``  (:class:`DataConfig`): format, modalities, preprocessing and the split rule;
* ``train`` (:class:`TrainConfig`): optimiser, batches, early stopping, evaluation;
* ``params``: the model's own settings, an instance of the model's ``Config`` class (in a YAML file the
  section is named after the model: ``lightgcn: {n_layers: 3}``);
* ``model``, ``seed`` and ``data_source`` (what ``--data`` named).

A YAML file may hold any of these sections (and sections for other models, which are ignored, so one
file can configure a whole ``compare``). Every unknown key is an error with the closest valid name
suggested.

Overrides. Settings are text only on the command line and in YAML files: :func:`parse_overrides` is the
one parser of ``KEY=VALUE`` strings (values parsed as YAML: ``--set topk=[10,20]``), used by ``--set``,
compare entries (``lightgcn[n_layers=2;train.epochs=3]``), tune grids (:func:`parse_grid`) and the data
options of the feature tools. What it returns, and what the Python API takes, is a typed mapping::

    {"train.learning_rate": 1e-3, "n_layers": 2, "data.columns.user": "uid", "train": {"epochs": 3}}

A key is ``section.key`` (the sections are ``data``, ``train`` and the model's, also called ``model``
or by any of the model's aliases), ``section.key.entry`` (one entry of a mapping such as
``data.columns``), a bare ``key`` that names exactly one field in the model, train or data sections, a
top-level key (``seed``), or a section name whose value is a mapping of its keys or a typed config
object (``{"train": TrainConfig(epochs=3)}``: the fields that object sets). Another model's settings
are skipped, so one override list serves a whole ``compare``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator,
                      model_validator)

from .errors import ConfigError
from .registry import suggest

#: overrides as they travel inside prismrec: key (``section.key``, ``key``, ...) -> typed value
Overrides = dict[str, Any]
#: what the entry points accept: a mapping, ``KEY=VALUE`` strings (parsed once), or a typed config object
OverridesLike = Union[Mapping[str, Any], Iterable[str], str, "StrictConfig", None]


class StrictConfig(BaseModel):
    """Base for every config section: unknown keys and wrong types are rejected with clear errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @classmethod
    def build(cls, values: Mapping[str, Any] | BaseModel | None, where: str) -> "StrictConfig":
        """Validate ``values`` (a mapping from YAML or overrides, or another config object); ``where``
        names the section for messages. An instance of exactly this class is already valid and returned."""
        if type(values) is cls:
            return values  # type: ignore[return-value]
        if isinstance(values, BaseModel):
            values = {k: getattr(values, k) for k in type(values).model_fields}
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"Section '{where}' must be a mapping of keys to values, not {values!r}.")
        values = dict(values or {})
        known = set(cls.model_fields)
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"Unknown key '{key}' in {where}.{suggest(str(key), known)} "
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


def canonical_split_rule(value: str) -> str:
    """The registered name of a split rule or alias (``random`` -> ``mmrec``); unknown names are a
    ``ValueError`` that lists every valid name and suggests the closest."""
    from .data.split import SPLIT_RULES  # lazy: data.split imports this module

    name = str(value).strip().lower()
    if name in SPLIT_RULES:
        return SPLIT_RULES.canonical(name)
    valid = []
    for rule in SPLIT_RULES.names():
        aliases = SPLIT_RULES.aliases_of(rule)
        valid.append(f"{rule} (or {', '.join(aliases)})" if aliases else rule)
    every = [*SPLIT_RULES.names(), *(a for r in SPLIT_RULES.names() for a in SPLIT_RULES.aliases_of(r))]
    raise ValueError(f"unknown split rule {value!r}.{suggest(name, every)} Valid rules: {'; '.join(valid)}")


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
    split: str | None = Field(
        None, description="split rule (a name or alias in prismrec.data.split.SPLIT_RULES); None uses the "
                          "split given in the data, else data.default_split"
    )
    default_split: str = Field(
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

    @field_validator("split", "default_split")
    @classmethod
    def _known_split_rule(cls, value: str | None) -> str | None:
        return None if value is None else canonical_split_rule(value)


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
    """Everything needed to reproduce one training run.

    ``params`` is the model's own validated settings (an instance of the model's ``Config``), built once
    when the configuration is resolved; given as a mapping (a run directory's ``config.yaml``) it is
    validated by the registered model's ``Config``.
    """

    model: str
    seed: int = 0
    data_source: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    params: SerializeAsAny[StrictConfig] = Field(
        default_factory=StrictConfig, description="the model's own settings: an instance of its Config class")

    @model_validator(mode="before")
    @classmethod
    def _typed_params(cls, values: Any) -> Any:
        if not isinstance(values, Mapping) or not isinstance(values.get("model"), str):
            return values
        model, params = values["model"], values.get("params")
        if not isinstance(params, StrictConfig):
            from .models import MODELS  # lazy: the models import this module

            return {**values, "params": MODELS.get(model).Config.build(params, where=model)}
        registry = getattr(sys.modules.get(f"{__package__}.models"), "MODELS", None)
        if registry is not None and model in registry:
            expected = registry.get(model).Config
            if not isinstance(params, expected):
                raise ConfigError(f"The settings of model '{model}' must be a {expected.__qualname__}, "
                                  f"not a {type(params).__qualname__}.")
        return values

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resolved config in the same layout a user writes (model section named after the model)."""
        d = self.to_run_dict()
        d[self.model] = d.pop("params")
        return d

    def to_run_dict(self) -> dict[str, Any]:
        """The layout of a run directory's ``config.yaml`` (and of a serving bundle's config): ``model``,
        ``seed``, ``data_source``, ``data``, ``train`` and the model's settings under ``params``."""
        return {
            "model": self.model,
            "seed": self.seed,
            "data_source": self.data_source,
            "data": self.data.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
            "params": self.params.model_dump(mode="json"),
        }

    @classmethod
    def from_run_dict(cls, values: Mapping[str, Any], where: str = "config.yaml") -> "RunConfig":
        """Rebuild a run's configuration from :meth:`to_run_dict`'s layout (every run directory written by
        prismrec, old ones included); the model section may also be named after the model
        (:meth:`to_yaml_dict`'s layout)."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where} must hold a mapping (model, seed, data, train, params).")
        values = dict(values)
        model = values.get("model")
        if "params" not in values and isinstance(model, str) and isinstance(values.get(model), Mapping):
            values["params"] = values.pop(model)
        return cls.build(values, where=where)  # type: ignore[return-value]


TOP_LEVEL = {"model", "seed", "data_source"}


def read_yaml(path: str | Path, *, kind: str = "Config file", option: str = "--config",
              holds: str = "sections (data:, train:, <model>:)") -> dict[str, Any]:
    """Read a YAML mapping (a config file, a search-space file, ...); errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{kind} {p} does not exist. Fix: pass the path of a YAML file to {option}.")
    try:
        content = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{kind} {p} is not valid YAML: {exc}") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{kind} {p} must hold a mapping of {holds}.")
    return content


# ---------------------------------------------------------------------------------- the one parser
def parse_value(text: str) -> Any:
    """Parse an override value as YAML (numbers, booleans, lists); plain text stays a string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def split_assignment(text: str, example: str = "--set train.learning_rate=0.001") -> tuple[str, str]:
    """``"KEY=VALUE"`` -> ``("KEY", "VALUE")`` (both stripped; the value is still text)."""
    if not isinstance(text, str) or "=" not in text or not text.split("=", 1)[0].strip():
        raise ConfigError(f"Override '{text}' is not KEY=VALUE. Example: {example}")
    key, raw = text.split("=", 1)
    return key.strip(), raw.strip()


def parse_overrides(overrides: OverridesLike = None) -> Overrides:
    """THE override parser: ``KEY=VALUE`` strings (values parsed as YAML) or a mapping -> a typed mapping.

    A mapping keeps its typed values (nothing in it is parsed); a typed config object stands for its own
    section (``TrainConfig(epochs=3)`` -> ``{"train": ...}``, a model's ``Config`` -> ``{"model": ...}``).
    A key given twice keeps its last value, applied in the later position (as with repeated ``--set``).
    """
    out: Overrides = {}
    if overrides is None:
        return out
    if isinstance(overrides, StrictConfig):
        if isinstance(overrides, (TrainConfig, DataConfig)):
            return {"train" if isinstance(overrides, TrainConfig) else "data": overrides}
        return {"model": overrides}
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            if not isinstance(key, str) or not key.strip():
                raise ConfigError(f"Override key {key!r} is not a setting name (e.g. 'train.learning_rate').")
            _put(out, key.strip(), value)
        return out
    for item in [overrides] if isinstance(overrides, str) else overrides:
        key, raw = split_assignment(item)
        _put(out, key, parse_value(raw))
    return out


def merge_overrides(*parts: OverridesLike) -> Overrides:
    """Several override sets as one; later parts win (``merge_overrides(global_sets, entry_sets)``)."""
    out: Overrides = {}
    for part in parts:
        for key, value in parse_overrides(part).items():
            _put(out, key, value)
    return out


def parse_grid(items: Iterable[str] | Mapping[str, Iterable[Any]]) -> dict[str, list[Any]]:
    """A search grid: ``KEY=V1,V2,...`` strings (commas inside brackets do not split, values parsed as
    YAML like ``--set``) or a mapping of key -> values -> ``{key: [values]}``."""
    if isinstance(items, Mapping):
        space = {str(k).strip(): list(v) for k, v in items.items()}
    else:
        space = {}
        for item in [items] if isinstance(items, str) else items:
            if not isinstance(item, str) or "=" not in item or not item.split("=", 1)[0].strip():
                raise ConfigError(f"--grid {item!r} is not KEY=V1,V2. Example: --grid reg_weight=1e-4,1e-3")
            key, raw = split_assignment(item)
            space[key] = [parse_value(v.strip()) for v in split_values(raw)]
    for key, values in space.items():
        if not values:
            raise ConfigError(f"The grid of '{key}' has no values. Example: --grid {key}=V1,V2")
    return space


def split_values(text: str) -> list[str]:
    """Split ``V1,V2`` on commas outside brackets, so list values like ``[1,2]`` stay whole."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{("
        depth -= ch in "]})"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [v for v in [*out, cur] if v.strip()]


def override_args(overrides: OverridesLike) -> list[str]:
    """Overrides as ``KEY=VALUE`` strings that :func:`parse_overrides` reads back to the same values (the
    ``--set`` arguments of a child process)."""
    return [_show(k, v) for k, v in parse_overrides(overrides).items()]


def _put(out: Overrides, key: str, value: Any) -> None:
    out.pop(key, None)
    out[key] = value


def _show(key: str, value: Any) -> str:
    """An override as the user would have typed it, for messages."""
    if not isinstance(value, str):
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json", exclude_unset=True)
        try:
            value = json.dumps(value)
        except (TypeError, ValueError):
            value = str(value)
    return f"{key}={value}"


def _expand_sections(overrides: Mapping[str, Any], sections: set[str]) -> Iterable[tuple[str, Any]]:
    """``{"train": {"epochs": 3}}`` (or a typed section object) -> ``("train.epochs", 3)``; other keys as
    they are."""
    for key, value in overrides.items():
        head = key.lower()
        if head in sections and (isinstance(value, (Mapping, BaseModel)) or head not in TOP_LEVEL):
            if isinstance(value, BaseModel):
                value = value.model_dump(exclude_unset=True)
            if not isinstance(value, Mapping):
                raise ConfigError(f"Override '{_show(key, value)}' names the section '{key}': give it a "
                                  f"mapping of its keys ({key}={{KEY: VALUE}}) or write {key}.KEY=VALUE.")
            for field, v in value.items():
                yield f"{key}.{field}", v
        else:
            yield key, value


def apply_overrides(overrides: OverridesLike, sections: dict[str, dict[str, Any]],
                    owners: Mapping[str, type[StrictConfig]], *, top: dict[str, Any] | None = None,
                    aliases: Mapping[str, str] | None = None, ignored: Iterable[str] = ()) -> None:
    """Apply overrides to the raw ``sections`` being resolved (section -> key -> value), checking every key.

    ``owners`` maps each section to its config class (bare keys must name exactly one field among them);
    ``aliases`` are other names of sections (``model`` -> the model's section); ``ignored`` sections
    (other models) are skipped; ``top`` receives top-level keys (``seed``), when they are allowed.
    """
    aliases = dict(aliases or {})
    ignored = set(ignored)
    for key, value in _expand_sections(parse_overrides(overrides), {*owners, *aliases, *ignored}):
        shown = _show(key, value)
        path = key.split(".", 2)
        head = path[0].strip().lower()
        if len(path) > 1:
            section = aliases.get(head, head)
            field = path[1].strip().lower()
            subkey = path[2].strip() if len(path) > 2 else None  # a mapping entry: data.columns.user=uid
            if section in ignored:  # another model's setting (one override list serves a compare)
                continue
            if section not in owners:
                raise ConfigError(
                    f"Unknown section '{section}' in override '{shown}'.{suggest(section, set(owners))} "
                    f"Sections: {', '.join(owners)}."
                )
            fields = owners[section].model_fields
            if field not in fields:
                raise ConfigError(
                    f"Unknown key '{field}' in section '{section}' (override '{shown}')."
                    f"{suggest(field, set(fields))}"
                )
            if subkey is None:
                sections[section][field] = value
                continue
            current = sections[section].get(field)
            if current is None:
                default = fields[field].get_default(call_default_factory=True)
                current = dict(default) if isinstance(default, dict) else None
            if not isinstance(current, Mapping):
                raise ConfigError(f"'{section}.{field}' is not a mapping, so '{shown}' cannot set an entry of it.")
            sections[section][field] = {**current, subkey: value}
        elif top is not None and head in TOP_LEVEL:
            top[head] = value
        else:
            owning = [s for s, cls in owners.items() if head in cls.model_fields]
            if not owning:
                everything = {f for cls in owners.values() for f in cls.model_fields}
                everything |= TOP_LEVEL if top is not None else set()
                everything |= {*owners, *aliases} if isinstance(value, (Mapping, BaseModel)) else set()
                raise ConfigError(f"Unknown key '{head}' in override '{shown}'.{suggest(head, everything)}")
            if len(owning) > 1:
                raise ConfigError(
                    f"Key '{head}' exists in several sections ({', '.join(owning)}); "
                    f"write it as {_show(f'{owning[0]}.{head}', value)}."
                )
            sections[owning[0]][head] = value


# ------------------------------------------------------------------------------------- resolution
def resolve_config(
    model: str,
    model_config_cls: type[StrictConfig],
    files: list[dict[str, Any]] | None = None,
    overrides: OverridesLike = None,
    *,
    seed: int | None = None,
    data_source: str | None = None,
    epochs: int | None = None,
    model_names: list[str] | None = None,
    model_aliases: tuple[str, ...] = (),
    defaults: dict[str, dict[str, Any]] | None = None,
) -> RunConfig:
    """Merge defaults, config files (in order) and overrides into a :class:`RunConfig`.

    ``overrides`` is a typed mapping or ``KEY=VALUE`` strings (see :func:`parse_overrides`);
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
    other_models = set(model_names or []) - own_names
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

    owners = {model: model_config_cls, "train": TrainConfig, "data": DataConfig}
    apply_overrides(overrides, sections, owners, top=top,
                    aliases={name: model for name in own_names | {"model"}}, ignored=other_models)

    if epochs is not None:
        sections["train"]["epochs"] = epochs
    if seed is not None:
        top["seed"] = seed
    if data_source is not None:
        top["data_source"] = data_source
    return RunConfig.build({  # type: ignore[return-value]
        "model": model,
        "seed": top.get("seed", 0),
        "data_source": str(top.get("data_source", "")),
        "data": DataConfig.build(sections["data"], where="data"),
        "train": TrainConfig.build(sections["train"], where="train"),
        "params": model_config_cls.build(sections[model], where=model),
    }, where="config")


def resolve_data_config(files: Iterable[Mapping[str, Any]] = (),
                        overrides: OverridesLike = None) -> DataConfig:
    """A :class:`DataConfig` from the ``data:`` sections of config files and ``[data.]KEY`` overrides (the
    data part of what a training run accepts; other sections of the files are ignored)."""
    sections: dict[str, dict[str, Any]] = {"data": {}}
    for content in files:
        data = content.get("data") or {}
        if not isinstance(data, Mapping):
            raise ConfigError("Section 'data' in the config file must be a mapping.")
        sections["data"].update(data)
    apply_overrides(overrides, sections, {"data": DataConfig})
    return DataConfig.build(sections["data"], where="data")  # type: ignore[return-value]
