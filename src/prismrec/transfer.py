"""Transfer with ANT at the runs layer: multi-domain pre-training into a directory, adaptation runs.

* :func:`pretrain` (``prismrec pretrain``): resolves each source's configuration as a run's, loads the
  sources and their splits, checks the output directory (``--resume`` must repeat the first call) and
  fits with :func:`prismrec.train.pretrain.pretrain_ant` (what the directory holds is described there).
* :func:`adapt` (``prismrec adapt``): a normal ``prismrec train`` run of ``ant`` with ``pretrained`` and
  ``strategy`` set and the architecture taken from the checkpoint, so the run directory and
  ``metrics.json`` are the same as every other run's (plus ``strategy`` and ``pretrained``).

The negative-transfer report over adaptation runs is :mod:`prismrec.report.transfer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from .utils.io import clean_temp_files
from .config import OverridesLike, merge_overrides
from .data import load_dataset
from .data.split import make_split
from .errors import PrismrecError
from .models.transfer.ant import ANT, ARCH_KEYS, STRATEGIES, read_pretrained
from .runs import METRICS_FILE, Run, build_config, train_run
from .train.pretrain import PRETRAIN_REQUEST, pretrain_ant
from .utils.io import read_json, write_json
from .utils.runtime import seed_everything, set_threads


def _request(sources: Sequence[str], config_files: Sequence[str | Path], overrides: OverridesLike,
             seed: int | None) -> dict[str, Any]:
    """The invocation as recorded in ``pretrain_request.json`` (``--resume`` must repeat it)."""
    if isinstance(overrides, Mapping):
        sets: Any = {str(k): v if isinstance(v, (str, int, float, bool, type(None), list, dict)) else repr(v)
                     for k, v in overrides.items()}
    else:
        sets = [overrides] if isinstance(overrides, str) else [str(x) for x in overrides or ()]
    return {"sources": [str(x) for x in sources], "config_files": [str(x) for x in config_files],
            "overrides": sets, "seed": seed}


def pretrain(sources: Sequence[str], out: str | Path, *, config_files: Sequence[str | Path] = (),
             overrides: OverridesLike = (), seed: int | None = None, epochs: int | None = None,
             device: str | None = None, progress: bool = False, resume: bool = False) -> dict[str, Any]:
    """Pre-train ANT on ``sources`` (several datasets) into ``out``; returns the written metadata.

    ``resume``: continue the pre-training in ``out`` from its last epoch checkpoint (the sources,
    config files, overrides and seed must be those of the first call; ``epochs`` may grow)."""
    if not sources:
        raise PrismrecError("prismrec pretrain needs at least one --data source.")
    out = Path(out)
    clean_temp_files(out)  # what a killed pre-training left
    request = _request(sources, config_files, overrides, seed)
    if resume:
        if not (out / PRETRAIN_REQUEST).is_file():
            raise PrismrecError(f"{out} holds no pre-training to resume ({PRETRAIN_REQUEST} is missing). "
                                "Fix: drop --resume to start one.")
        before = read_json(out / PRETRAIN_REQUEST)
        if before != request:
            diff = ", ".join(f"{k}: {before.get(k)!r} then, {v!r} now" for k, v in request.items() if before.get(k) != v)
            raise PrismrecError(f"--resume must repeat the first call's arguments ({diff}). "
                                "Fix: use the same --data, --config, --set and --seed (only --epochs may change).")
    elif out.is_dir() and any(out.iterdir()):
        raise PrismrecError(f"{out} already holds files; nothing is overwritten. Fix: choose a new --out "
                            "directory, or add --resume to continue the pre-training there.")
    cfgs = [build_config("ant", s, config_files=config_files, overrides=overrides, seed=seed, epochs=epochs)
            for s in sources]
    cfg = cfgs[0]
    params = ANT.Config.build(cfg.params, where="ant")
    if params.pretrained:
        raise PrismrecError("ant.pretrained is for adaptation; prismrec pretrain starts from scratch. Fix: drop it.")
    set_threads(cfg.train.threads)
    seed_everything(cfg.seed)
    domains = []
    for c in cfgs:  # every source with its split; only training interactions are used
        ds = load_dataset(c.data_source, c.data)
        domains.append((c.data_source, ds, make_split(ds, c.data)))
    return pretrain_ant(domains, params, cfg.train, cfg.seed, out, request=request, resume=resume, device=device,
                        progress=progress)


def adapt(pretrained: str | Path, data: str, strategy: str, out: str | Path | None, *,
          config_files: Sequence[str | Path] = (), overrides: OverridesLike = (), seed: int | None = None,
          epochs: int | None = None, resume: bool = False, progress: bool = False, device: str | None = None) -> Run:
    """Adapt a pre-trained ANT to ``data`` with ``strategy``: a ``prismrec train`` run of ``ant`` whose
    architecture comes from the checkpoint; ``metrics.json`` gains ``strategy`` and ``pretrained``."""
    if strategy not in STRATEGIES:
        raise PrismrecError(f"unknown --strategy {strategy!r}. Fix: use one of {', '.join(STRATEGIES)}.")
    pre = Path(pretrained).resolve()
    meta, _ = read_pretrained(pre)
    arch = {f"ant.{k}": meta["params"][k] for k in ARCH_KEYS if k in meta["params"]}
    sets = merge_overrides(arch, {"ant.pretrained": str(pre), "ant.strategy": strategy}, overrides)
    run = train_run("ant", data, out, config_files=config_files, overrides=sets, seed=seed, epochs=epochs,
                    resume=resume, progress=progress, device=device)
    run.metrics = {**run.metrics, "strategy": strategy, "pretrained": str(pre),
                   "pretrain_sources": [s["name"] for s in meta.get("sources", [])]}
    if out is not None:
        write_json(Path(out) / METRICS_FILE, run.metrics)
    return run
