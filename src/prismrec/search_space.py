"""Search spaces of hyper-parameters: small typed distributions that models declare next to their Config.

A model class declares ``search_space: ClassVar[dict[str, Dist]]``: keys are the model's own settings
(``n_layers``) or ``train.KEY`` (``train.learning_rate``), values one of

* :class:`FloatRange` ``(low, high, log)``: a float between ``low`` and ``high``, on a log scale when ``log``;
* :class:`IntRange` ``(low, high, step, log)``: an integer;
* :class:`Choice` ``(values)``: one of a few values (numbers, strings, booleans).

A user narrows or widens a space with text (``--space``) or a YAML file (``--space-file``), parsed here
(:func:`parse_space`, :func:`read_space_file`)::

    learning_rate=loguniform(1e-4,1e-2)   uniform(0,1)   int(1,4)   intlog(8,512)   [1,2,3]   none (drop the key)

This module imports nothing heavy: the models import it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high or (self.log and self.low <= 0):
            raise ConfigError(f"invalid float range ({self.low}, {self.high}, log={self.log}): "
                              "low <= high, and low > 0 on a log scale.")

    def describe(self) -> str:
        return f"{'loguniform' if self.log else 'uniform'}({_num(self.low)}, {_num(self.high)})"

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and self.low <= value <= self.high


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high or self.step < 1 or (self.log and (self.low < 1 or self.step != 1)):
            raise ConfigError(f"invalid integer range ({self.low}, {self.high}, step={self.step}, log={self.log}).")

    def describe(self) -> str:
        if self.log:
            return f"intlog({self.low}, {self.high})"
        return f"int({self.low}, {self.high}{f', {self.step}' if self.step != 1 else ''})"

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high


@dataclass(frozen=True)
class Choice:
    values: tuple

    def __post_init__(self) -> None:
        if not self.values:
            raise ConfigError("a choice needs at least one value.")
        object.__setattr__(self, "values", tuple(self.values))

    def describe(self) -> str:
        return "[" + ", ".join(_num(v) if isinstance(v, float) else str(_label(v)) for v in self.values) + "]"

    def contains(self, value: Any) -> bool:
        return _plain_value(value) in [_plain_value(v) for v in self.values]

    # Optuna's categorical values are None, bool, int, float or str; a choice of lists (``train.lr_scheduler``:
    # ``[[1.0, 50], [0.99, 1]]``) is searched under each value's JSON text and read back with decode().
    def labels(self) -> list[Any]:
        return [_label(v) for v in self.values]

    def decode(self, label: Any) -> Any:
        labels = self.labels()
        return self.values[labels.index(label)] if label in labels else label

    def encode(self, value: Any) -> Any:
        """The label of the equal choice ((1.0, 50) is the choice [1, 50])."""
        plain = _plain_value(value)
        return next((_label(v) for v in self.values if _plain_value(v) == plain), _label(value))


Dist = Union[FloatRange, IntRange, Choice]
Space = dict[str, Dist]

#: the learning-rate range every model searches unless its official configuration says otherwise
LEARNING_RATE = FloatRange(1e-4, 1e-2, log=True)


def _num(v: float) -> str:
    return f"{v:g}"


def _plain_value(v: Any) -> Any:
    return [_plain_value(x) for x in v] if isinstance(v, (list, tuple)) else v


def _label(v: Any) -> Any:
    """``v`` itself when Optuna can store it as a choice, else its JSON text (``[0.99, 1]``)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return json.dumps(_plain_value(v))


# ------------------------------------------------------------------------------------------ parsing
_CALL = re.compile(r"^\s*(?P<fn>[a-z_]+)\s*\((?P<args>.*)\)\s*$", re.I)


def parse_dist(text: Any, key: str = "?") -> Dist | None:
    """One distribution from text (``loguniform(1e-4,1e-2)``, ``uniform(0,1)``, ``int(1,4)``,
    ``int(8,64,8)``, ``intlog(8,512)``, ``[1,2,3]``, ``choice(a,b)``), a YAML list (a choice) or a mapping
    (``{low: .., high: .., log: true}``, ``{int: [1, 4]}``); ``none`` (or null) removes the key."""
    if isinstance(text, (FloatRange, IntRange, Choice)):
        return text
    if text is None or (isinstance(text, str) and text.strip().lower() in ("none", "null", "~", "-")):
        return None
    if isinstance(text, (list, tuple)):
        return Choice(tuple(text))
    if isinstance(text, Mapping):
        d = dict(text)
        if "choices" in d or "values" in d:
            return Choice(tuple(d.get("choices", d.get("values"))))
        if "low" in d and "high" in d:
            lo, hi = d["low"], d["high"]
            if d.get("type") == "int" or (isinstance(lo, int) and isinstance(hi, int) and d.get("type") != "float"):
                return IntRange(int(lo), int(hi), int(d.get("step", 1)), bool(d.get("log", False)))
            return FloatRange(float(lo), float(hi), bool(d.get("log", False)))
        raise ConfigError(f"search space of '{key}': {d!r} is not {{low, high[, log]}} or {{choices: [...]}}.")
    if not isinstance(text, str):
        return Choice((text,))
    s = text.strip()
    if s.startswith("["):
        try:
            values = yaml.safe_load(s)
        except yaml.YAMLError:
            values = None
        if not isinstance(values, list) or not values:
            raise ConfigError(f"search space of '{key}': {s!r} is not a list of values like [1,2,3].")
        return Choice(tuple(values))
    m = _CALL.match(s)
    if not m:
        raise ConfigError(f"search space of '{key}': cannot read {s!r}. Write loguniform(1e-4,1e-2), uniform(0,1), "
                          "int(1,4), intlog(8,512) or [v1,v2,...]; 'none' removes the key.")
    fn = m.group("fn").lower()
    try:
        args = [yaml.safe_load(a.strip()) for a in m.group("args").split(",") if a.strip()]
    except yaml.YAMLError:
        args = []
    if fn in ("choice", "categorical"):
        return Choice(tuple(args))
    try:
        if fn in ("loguniform", "logfloat", "log"):
            return FloatRange(float(args[0]), float(args[1]), log=True)
        if fn in ("uniform", "float"):
            return FloatRange(float(args[0]), float(args[1]))
        if fn == "int":
            return IntRange(int(args[0]), int(args[1]), int(args[2]) if len(args) > 2 else 1)
        if fn == "intlog":
            return IntRange(int(args[0]), int(args[1]), log=True)
    except (IndexError, TypeError, ValueError):
        pass
    raise ConfigError(f"search space of '{key}': cannot read {s!r} (a range takes two numbers: low, high).")


def parse_space(items: Iterable[str] | str | Mapping[str, Any] | None) -> dict[str, Dist | None]:
    """``KEY=DIST`` strings (``--space``) or a mapping -> ``{key: Dist or None}`` (None removes the key)."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k).strip(): parse_dist(v, str(k)) for k, v in items.items()}
    out: dict[str, Dist | None] = {}
    for item in [items] if isinstance(items, str) else items:
        if not isinstance(item, str) or "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"--space {item!r} is not KEY=DISTRIBUTION. Example: --space 'learning_rate="
                              "loguniform(1e-4,1e-2)' or --space 'n_layers=[1,2,3]'")
        key, raw = item.split("=", 1)
        out[key.strip()] = parse_dist(raw.strip(), key.strip())
    return out


def read_space_file(path: str | Path) -> dict[str, Dist | None]:
    """A YAML file ``{key: distribution}`` (text as on the command line, a list, or ``{low, high, log}``)."""
    from .config import read_yaml

    return parse_space(read_yaml(path, kind="search-space file", option="--space-file",
                                 holds="key: distribution"))


# --------------------------------------------------------------------------------- model spaces
def canonical_key(model: str, key: str) -> str:
    """``learning_rate`` -> ``train.learning_rate``; ``lightgcn.n_layers`` / ``model.n_layers`` -> ``n_layers``."""
    from .config import TrainConfig
    from .models import MODELS

    cls = MODELS.get(model)
    k = key.strip()
    head, _, rest = k.partition(".")
    if rest and head.lower() in {"model", MODELS.canonical(model), *MODELS.aliases_of(model)}:
        k = rest
    if "." in k:
        section, field = k.split(".", 1)
        if section == "train" and field not in TrainConfig.model_fields:
            raise ConfigError(f"search space key '{key}': train has no setting '{field}'.")
        if section not in ("train", "data"):
            raise ConfigError(f"search space key '{key}' names the section '{section}'; use a setting of "
                              f"'{model}' or train.KEY.")
        return k
    if k in cls.Config.model_fields:
        return k
    if k in TrainConfig.model_fields:
        return f"train.{k}"
    raise ConfigError(f"search space key '{key}' is neither a setting of '{model}' "
                      f"({', '.join(cls.Config.model_fields) or 'none'}) nor of train.")


def model_space(model: str, *updates: Mapping[str, Dist | None]) -> Space:
    """The space ``model`` declares (``search_space`` on its class), then each update (a key given replaces
    that entry, None removes it); keys canonical (model keys bare, ``train.KEY``)."""
    from .models import MODELS

    cls = MODELS.get(model)
    space: Space = {canonical_key(model, k): v for k, v in getattr(cls, "search_space", {}).items()}
    for upd in updates:
        for k, v in upd.items():
            ck = canonical_key(model, k)
            if v is None:
                space.pop(ck, None)
            else:
                space[ck] = v
    return space


def applicable_space(model: str, space: Mapping[str, Dist], params: Any) -> Space:
    """``space`` without the keys that ``params`` (the model's settings) make inert.

    A model declares them as ``search_space_when = {key: (setting, values)}``: ``key`` is searched only when
    ``setting`` has one of ``values`` (SASRec-F's ``adaptor_dropout`` only with ``feature_encoder: moe``), so
    a variant whose setting is held fixed spends no trial on a knob it never reads."""
    from .models import MODELS

    when = getattr(MODELS.get(model), "search_space_when", {})
    return {k: d for k, d in space.items()
            if k not in when or getattr(params, when[k][0], None) in tuple(when[k][1])}


def describe_space(space: Mapping[str, Dist]) -> str:
    return "; ".join(f"{k} {d.describe()}" for k, d in space.items()) or "(empty)"


def suggest(trial: Any, space: Mapping[str, Dist]) -> dict[str, Any]:
    """One value per key drawn by an Optuna trial."""
    out: dict[str, Any] = {}
    for k, d in space.items():
        if isinstance(d, FloatRange):
            out[k] = d.low if d.low == d.high else trial.suggest_float(k, d.low, d.high, log=d.log)
        elif isinstance(d, IntRange):
            out[k] = trial.suggest_int(k, d.low, d.high, step=d.step, log=d.log)
        else:
            out[k] = d.decode(trial.suggest_categorical(k, d.labels()))
    return out


def decode_params(space: Mapping[str, Dist], params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's stored parameters as settings: a choice of lists back from its JSON labels."""
    return {k: space[k].decode(v) if isinstance(space.get(k), Choice) else v for k, v in params.items()}


def encode_params(space: Mapping[str, Dist], point: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as Optuna stores them (the inverse of :func:`decode_params`), e.g. to queue a trial."""
    return {k: space[k].encode(v) if isinstance(space.get(k), Choice) else v for k, v in point.items()}


def random_numbers_per_draw(space: Mapping[str, Dist]) -> int:
    """Uniform numbers Optuna's ``RandomSampler`` takes to draw one setting of ``space``: one per range, one per
    option of a choice (it draws a one-hot vector and takes the largest), none for a key with one value (a float
    range ``low == high`` is not asked by :func:`suggest`; a one-value range or choice is fixed by Optuna).
    ``tests/test_tune_optuna.py`` checks the count against Optuna's own draws."""
    def numbers(d: Dist) -> int:
        if isinstance(d, FloatRange):
            return int(d.low < d.high)
        if isinstance(d, IntRange):
            return int(d.low < d.high if d.log else len(d.values()) > 1)
        return len(d.labels()) if len(d.labels()) > 1 else 0
    return sum(numbers(d) for d in space.values())


def grid_values(space: Mapping[str, Dist]) -> dict[str, list[Any]]:
    """The finite values of every key (choices, integer ranges) for a grid; float ranges cannot be gridded."""
    out = {}
    for k, d in space.items():
        if isinstance(d, Choice):
            out[k] = d.labels()
        elif isinstance(d, IntRange) and not d.log:
            out[k] = d.values()
        elif isinstance(d, FloatRange) and d.low == d.high:
            out[k] = [d.low]
        else:
            raise ConfigError(f"--sampler grid needs finite values, and '{k}' is {d.describe()}. Fix: give it a list, "
                              f"e.g. --space '{k}=[...]'.")
    return out


def to_yaml(space: Mapping[str, Dist]) -> dict[str, str]:
    return {k: d.describe() for k, d in space.items()}


def log10_distance(a: float, b: float) -> float:
    return abs(math.log10(a) - math.log10(b))


def merge_updates(*parts: Mapping[str, Dist | None]) -> dict[str, Dist | None]:
    """Several user updates as one; later parts win (``--space-file`` then ``--space``)."""
    out: dict[str, Dist | None] = {}
    for part in parts:
        out.update(part)
    return out
