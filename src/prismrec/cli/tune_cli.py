"""``prismrec tune``: the command-line layer (text options -> typed search spaces and settings)."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from ..errors import ConfigError

log = logging.getLogger("prismrec")


def _seeds(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def run_tune_command(a: dict[str, Any], echo: Callable[[str], None], *, progress: bool = False) -> None:
    from ..config import parse_overrides

    if a["status"] is not None:
        from pathlib import Path

        from ..study import status_text, study_status

        folder = Path(a["status"])
        entries = sorted(p.parent for p in folder.glob("*/tune/study.json")) if not (folder / "study.json").is_file() \
            else []
        if entries:  # a compare --tune folder: every entry's study
            echo("\n\n".join(f"{e.parent.name}: " + status_text(study_status(e, a["storage"])) for e in entries))
            return
        echo(status_text(study_status(folder, a["storage"])))
        return
    if a["worker"] is not None:
        from ..study import run_worker

        run_worker(a["worker"], a["worker_id"], progress=False)
        return
    missing = [f"--{k}" for k in ("model", "data", "out") if not a[k]]
    if missing:
        raise ConfigError(f"prismrec tune needs {', '.join(missing)} (or --status OUT). Example: prismrec tune -m "
                          "lightgcn -d demo -o tune_out --trials 20")
    sampler = (a["sampler"] or ("grid" if a["grid"] else "tpe")).lower()
    overrides = parse_overrides(a["set_"])
    if a["grid"]:  # the exact grid (no Optuna needed)
        if sampler != "grid":
            raise ConfigError("--grid lists an exact grid: use it with --sampler grid (or leave --sampler out).")
        from ..compare import tune as grid_tune
        from ..config import parse_grid

        select = (a["select"] or "recall@20").lower()
        res = grid_tune(a["model"], a["data"], a["out"], parse_grid(a["grid"]), seeds=_seeds(a["seeds"]),
                        final_seeds=_seeds(a["final_seeds"]), config_files=a["config"], overrides=overrides,
                        epochs=a["epochs"], select=select, progress=progress,
                        on_run=lambda label, seed, m: log.info("%s seed %d: valid %s %.4f", label, seed, select,
                                                               m["valid"].get(select, float("nan"))))
        echo(res.markdown)
        return
    from ..search_space import merge_updates, parse_space, read_space_file
    from ..study import tune_study

    space = merge_updates(read_space_file(a["space_file"]) if a["space_file"] else {}, parse_space(a["space"]))
    trials = a["trials"] if a["trials"] or a["timeout"] else 20
    res = tune_study(a["model"], a["data"], a["out"], space=space, trials=trials, timeout=a["timeout"],
                     sampler=sampler, seeds=_seeds(a["seeds"]), final_seeds=_seeds(a["final_seeds"]),
                     config_files=a["config"], overrides=overrides, epochs=a["epochs"], select=a["select"],
                     storage=a["storage"], study_name=a["study_name"], workers=a["workers"],
                     prune=not a["no_prune"], prune_warmup=a["prune_warmup"],
                     start_at_defaults=a["start_at_defaults"], progress=progress,
                     on_trial=lambda n, params, value, state: log.info("trial %d %s: %s %s", n, state,
                                                                       json.dumps(params), value))
    echo(res.markdown)
    echo(f"study saved in {a['out']} (tune.md, trials.csv); progress: prismrec tune --status {a['out']}")
