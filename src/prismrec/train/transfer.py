"""Transfer learning with ANT: multi-domain pre-training, adaptation to a target, negative-transfer report.

* :func:`pretrain`: several source datasets at once. Their items are concatenated into one catalogue
  (ids offset per domain, as ANT's ``PretrainDataset``), every training sequence is cut into windows
  (:class:`~prismrec.models.sequential.base.WindowSampler`), and batches are shuffled across domains.
  Loss: next-item InfoNCE with cosine / tau logits against the batch's distinct target items of all
  domains (``pretrain_loss: inbatch``, ANT's choice) or against every item of the sample's own domain
  (``full``), plus ``it_weight`` x the image -> text InfoNCE on the batch's target items that have
  both. Writes ``DIR/model.pt`` (state dict, weights of the epoch with the lowest training loss, as
  ANT's checkpoint monitor) and ``DIR/pretrain.json`` (settings, each modality's provenance,
  sources, per-epoch history and seconds). After every epoch ``DIR/pretrain_checkpoint.pt`` (weights,
  optimiser, scheduler, best weights, history) and ``DIR/pretrain_request.json`` (the invocation) are
  written atomically, so a killed pre-training resumes with ``resume=True`` (``--resume``) and, since
  every epoch is seeded from (seed, epoch), ends with the same weights as an uninterrupted one.
* :func:`adapt`: a normal ``prismrec train`` run of ``ant`` with ``pretrained`` and ``strategy`` set
  and the architecture taken from the checkpoint, so the run directory and ``metrics.json`` are the
  same as every other run's (plus ``strategy`` and ``pretrained``).
* :func:`transfer_report`: for each target, each strategy against ``scratch``: mean and spread of
  the metrics over seeds, the difference and a paired test on per-user results.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import PrismrecError
from ..utils.io import load_torch, read_json, save_torch, write_json, write_text
from ..utils.runtime import epoch_seed, peak_rss_mb, resolve_device, seed_everything, set_threads

log = logging.getLogger("prismrec")


class _Net(nn.Module):
    """The pre-trained part of ANT (same parameter names as :class:`~prismrec.models.transfer.ant.ANT`)."""

    def __init__(self, item_encoder: nn.Module, encoder: nn.Module):
        super().__init__()
        self.item_encoder = item_encoder
        self.encoder = encoder


PRETRAIN_CHECKPOINT = "pretrain_checkpoint.pt"
PRETRAIN_REQUEST = "pretrain_request.json"


def pretrain(sources: Sequence[str], out: str | Path, *, config_files: Sequence[str | Path] = (),
             overrides: Sequence[str] = (), seed: int | None = None, epochs: int | None = None,
             device: str | None = None, progress: bool = False, resume: bool = False) -> dict[str, Any]:
    """Pre-train ANT on ``sources`` (several datasets) into ``out``; returns the written metadata.

    ``resume``: continue the pre-training in ``out`` from its last epoch checkpoint (the sources,
    config files, overrides and seed must be those of the first call; ``epochs`` may grow)."""
    from ..data import load_dataset
    from ..data.dataset import Modality
    from ..data.split import make_split
    from ..models.sequential.base import WindowSampler
    from ..models.transfer.ant import (PRETRAIN_META, PRETRAIN_WEIGHTS, ANTConfig, build_networks,
                                       check_same_spaces, cosine_logits, feature_space, image_text_loss,
                                       select_modalities)
    from ..runs import build_config

    if not sources:
        raise PrismrecError("prismrec pretrain needs at least one --data source.")
    out = Path(out)
    request = {"sources": [str(x) for x in sources], "config_files": [str(x) for x in config_files],
               "overrides": list(overrides), "seed": seed}
    ck_path = out / PRETRAIN_CHECKPOINT
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
    params = ANTConfig.build(cfg.params, where="ant")
    if params.pretrained:
        raise PrismrecError("ant.pretrained is for adaptation; prismrec pretrain starts from scratch. Fix: drop it.")
    set_threads(cfg.train.threads)
    seed_everything(cfg.seed)

    # data: every source with its split; only training interactions are used ---------------------
    loaded = []
    for src, c in zip(sources, cfgs):
        ds = load_dataset(c.data_source, c.data)
        split = make_split(ds, c.data)
        loaded.append((ds, split))
    names = [ds.name for ds, _ in loaded]
    if len(set(names)) < len(names):
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    pools = [select_modalities(ds.modalities, ds.items, params, None) for ds, _ in loaded]
    if params.modalities is None:
        wanted = sorted(set.intersection(*[set(p) for p in pools]))
        if not wanted:
            raise PrismrecError(
                "the source datasets share no feature modality: "
                + "; ".join(f"{n}: {', '.join(sorted(p)) or 'none'}" for n, p in zip(names, pools))
                + ". Fix: pick sources with a common modality, or list modalities with ant.modalities "
                "(a domain without one gets the learned 'missing' vector)."
            )
    else:
        wanted = list(params.modalities)
        absent = [m for m in wanted if not any(m in p for p in pools)]
        if absent:
            raise PrismrecError(f"no source dataset has modality {', '.join(absent)} (they have: "
                                + "; ".join(f"{n}: {', '.join(sorted(p))}" for n, p in zip(names, pools))
                                + "). Fix: change ant.modalities.")
    spaces = {n: {m: feature_space(p[m], params.feature_encoders) for m in wanted if m in p}
              for n, p in zip(names, pools)}
    common = check_same_spaces(spaces, what="prismrec pretrain")

    sizes = [ds.n_items for ds, _ in loaded]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    domain_of_item = np.repeat(np.arange(len(sizes)), sizes)
    feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for m in wanted:
        dim = common[m]["dim"]
        vals, avail = [], []
        for (ds, _), p in zip(loaded, pools):
            mod: Modality | None = p.get(m)
            vals.append(mod.values if mod is not None else np.zeros((ds.n_items, dim), np.float32))
            avail.append(mod.available if mod is not None else np.zeros(ds.n_items, bool))
        feats[m] = (torch.from_numpy(np.concatenate(vals)), torch.from_numpy(np.concatenate(avail)))
    indptrs, items, n_inter = [0], [], 0
    for (ds, split), off in zip(loaded, offsets[:-1]):
        ip, it = split.sequences(("train",))
        items.append(it + off)
        indptrs.append(ip[1:] + n_inter)
        n_inter += len(it)
    indptr = np.concatenate([np.asarray(x, dtype=np.int64).ravel() for x in indptrs])
    all_items = np.concatenate(items).astype(np.int64)
    sampler = WindowSampler(indptr, all_items, params.max_len)

    dev = resolve_device(device or cfg.train.device)
    item_encoder, encoder = build_networks(params, {m: common[m]["dim"] for m in wanted})
    net = _Net(item_encoder, encoder).to(dev)
    feats = {m: (v.to(dev), a.to(dev)) for m, (v, a) in feats.items()}
    dom = torch.as_tensor(domain_of_item, device=dev)
    tau = params.temperature
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    factor, step = cfg.train.lr_scheduler
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: factor ** (e / step))
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / PRETRAIN_REQUEST, request)
    history: list[dict[str, Any]] = []
    best_loss, best_state, best_epoch = float("inf"), None, 0
    n_epochs = cfg.train.epochs
    elapsed = 0.0
    if resume and ck_path.is_file():
        ck = load_torch(ck_path, map_location=dev)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        best_state = ck["best"]
        st = json.loads(ck["state"])
        history, best_loss, best_epoch, elapsed = st["history"], st["best_loss"], st["best_epoch"], st["elapsed"]
        log.info("resuming pre-training after epoch %d of %d", len(history), n_epochs)
    log.info("pre-training ANT on %s: %d items, %d training interactions, %d windows, modalities %s",
             ", ".join(names), int(offsets[-1]), len(all_items), len(sampler), ", ".join(wanted))
    t_all = time.perf_counter() - elapsed
    for epoch in range(len(history) + 1, n_epochs + 1):
        es = epoch_seed(cfg.seed, epoch)
        torch.manual_seed(es)
        rng = np.random.default_rng(es)
        net.train()
        t0 = time.perf_counter()
        tot = {"loss": 0.0, "seq_item": 0.0, "image_text": 0.0}
        nb = 0
        for batch in sampler.epoch(rng, cfg.train.batch_size, dev):
            seqs, targets = batch["seqs"], batch["targets"]
            keep = targets >= 0
            tgt = targets[keep]
            uniq, inverse = torch.unique(tgt, return_inverse=True)
            if params.pretrain_loss == "inbatch":
                # only the batch's target items are needed: encode those and the inputs
                rows = torch.unique(torch.cat([uniq, seqs[seqs > 0] - 1]))
                fused_r, parts_r = item_encoder(feats, rows)
                local = torch.full((int(offsets[-1]) + 1,), -1, dtype=torch.long, device=dev)
                local[rows] = torch.arange(len(rows), device=dev)
                tokens = nn.functional.pad(fused_r, (0, 0, 1, 0))
                x = tokens[torch.where(seqs > 0, local[(seqs - 1).clamp(min=0)] + 1, 0)]
                u = encoder(x, seqs, all_positions=True)[keep]
                cand = local[uniq]
                si = nn.functional.cross_entropy(cosine_logits(u, fused_r[cand], tau), inverse)
                parts_u = {m: v[cand] for m, v in parts_r.items()}
                it_tables = {m: (v[uniq], a[uniq]) for m, (v, a) in feats.items()}
                it = image_text_loss(parts_u, it_tables, torch.arange(len(uniq), device=dev),
                                     item_encoder.pair, tau)
            else:
                fused, parts = item_encoder(feats)
                tokens = nn.functional.pad(fused, (0, 0, 1, 0))
                u = encoder(tokens[seqs], seqs, all_positions=True)[keep]
                d_t = dom[tgt]
                si = u.new_zeros(())
                for d in torch.unique(d_t).tolist():
                    sel = d_t == d
                    lo, hi = int(offsets[d]), int(offsets[d + 1])
                    logits = cosine_logits(u[sel], fused[lo:hi], tau)
                    si = si + nn.functional.cross_entropy(logits, tgt[sel] - lo, reduction="sum")
                si = si / len(tgt)
                it = image_text_loss(parts, feats, uniq, item_encoder.pair, tau)
            loss = si + (params.it_weight * it if it is not None else 0.0)
            if not torch.isfinite(loss):
                raise PrismrecError(f"the pre-training loss became {loss.item()} at epoch {epoch}. "
                                    "Fix: lower train.learning_rate.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.train.grad_clip)
            opt.step()
            tot["loss"] += float(loss.detach())
            tot["seq_item"] += float(si.detach())
            tot["image_text"] += float(it.detach()) if it is not None else 0.0
            nb += 1
        sched.step()
        row = {"epoch": epoch, **{k: v / max(nb, 1) for k, v in tot.items()}, "train_s": time.perf_counter() - t0}
        history.append(row)
        log.info("pretrain epoch %3d | loss %.4f (seq-item %.4f, image-text %.4f) | %.2fs", epoch, row["loss"],
                 row["seq_item"], row["image_text"], row["train_s"])
        if row["loss"] < best_loss:
            best_loss, best_epoch = row["loss"], epoch
            best_state = copy.deepcopy(net.state_dict())
        state = {"history": history, "best_loss": best_loss, "best_epoch": best_epoch,
                 "elapsed": time.perf_counter() - t_all}
        save_torch(ck_path, {"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                             "best": best_state, "state": json.dumps(state)})
    if best_state is None:
        best_state = net.state_dict()
    save_torch(out / PRETRAIN_WEIGHTS, {k: v.cpu() for k, v in best_state.items()})
    epoch_s = [h["train_s"] for h in history]
    meta = {
        "model": "ant",
        "params": params.model_dump(mode="json"),
        "train": cfg.train.model_dump(mode="json"),
        "modalities": common,
        "modalities_by_source": spaces,
        "sources": [{"name": n, "data_source": c.data_source, "users": ds.n_users, "items": ds.n_items,
                     "train_interactions": int((sp.labels == 0).sum())}
                    for n, c, (ds, sp) in zip(names, cfgs, loaded)],
        "seed": cfg.seed,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "best_loss": best_loss,
        "train_seconds": round(time.perf_counter() - t_all, 3),
        "epoch_seconds": round(float(np.mean(epoch_s)), 4) if epoch_s else 0.0,
        "n_params": int(sum(p.numel() for p in net.parameters())),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "device": str(dev),
        "history": history,
    }
    write_json(out / PRETRAIN_META, meta)
    return meta


def adapt(pretrained: str | Path, data: str, strategy: str, out: str | Path | None, *,
          config_files: Sequence[str | Path] = (), overrides: Sequence[str] = (), seed: int | None = None,
          epochs: int | None = None, resume: bool = False, progress: bool = False, device: str | None = None):
    """Adapt a pre-trained ANT to ``data`` with ``strategy``: a ``prismrec train`` run of ``ant`` whose
    architecture comes from the checkpoint; ``metrics.json`` gains ``strategy`` and ``pretrained``."""
    from ..models.transfer.ant import ARCH_KEYS, STRATEGIES, read_pretrained
    from ..runs import METRICS_FILE, train_run

    if strategy not in STRATEGIES:
        raise PrismrecError(f"unknown --strategy {strategy!r}. Fix: use one of {', '.join(STRATEGIES)}.")
    pre = Path(pretrained).resolve()
    meta, _ = read_pretrained(pre)
    arch = [f"ant.{k}={json.dumps(meta['params'][k])}" for k in ARCH_KEYS if k in meta["params"]]
    sets = [*arch, f"ant.pretrained={json.dumps(str(pre))}", f"ant.strategy={strategy}", *overrides]
    run = train_run("ant", data, out, config_files=config_files, overrides=sets, seed=seed, epochs=epochs,
                    resume=resume, progress=progress, device=device)
    run.metrics = {**run.metrics, "strategy": strategy, "pretrained": str(pre),
                   "pretrain_sources": [s["name"] for s in meta.get("sources", [])]}
    if out is not None:
        write_json(Path(out) / METRICS_FILE, run.metrics)
    return run


# ---------------------------------------------------------------------------------------- report
DEFAULT_METRICS = ("recall@10", "recall@50", "ndcg@10", "ndcg@50")


def _collect(run_dirs: Sequence[str | Path]) -> dict[str, dict[str, dict[int, Path]]]:
    """``{setting: {strategy: {seed: run_dir}}}`` of finished ANT runs; a setting is source(s) -> target
    [modalities], so runs with different modalities are never compared with each other.

    A from-scratch run does not depend on the source (it loads no pre-trained weights), so one set of
    scratch runs serves every setting with the same target and modalities."""
    out: dict[str, dict[str, dict[int, Path]]] = {}
    scratch: dict[str, dict[int, Path]] = {}
    for rd in run_dirs:
        rd = Path(rd)
        if not (rd / "metrics.json").is_file():
            raise PrismrecError(f"{rd} is not a finished run (no metrics.json). Fix: pass finished `prismrec adapt` runs.")
        m = read_json(rd / "metrics.json")
        strategy = m.get("strategy") or (m.get("model_info") or {}).get("strategy") or m.get("model")
        if strategy and strategy.startswith("scratch"):
            strategy = "scratch"
        target = m.get("dataset", "?")
        src = "+".join(m.get("pretrain_sources", [])) or "-"
        mods = "+".join(sorted((m.get("model_info") or {}).get("modalities", {})))
        tail = f" [{mods}]" if mods else ""
        seed = int(m.get("seed", 0))
        if strategy == "scratch":
            scratch.setdefault(target + tail, {}).setdefault(seed, rd)
            continue
        key = (f"{src} -> {target}" if src != "-" else target) + tail
        out.setdefault(key, {}).setdefault(strategy, {})[seed] = rd
    for key, by_strat in out.items():
        base = scratch.get(key.split(" -> ")[-1])
        if base:
            by_strat["scratch"] = base
    for key, base in scratch.items():  # scratch runs with no transfer run to compare with
        if not any(k.split(" -> ")[-1] == key for k in out):
            out[key] = {"scratch": base}
    return out


def transfer_report(run_dirs: Sequence[str | Path], *, metrics: Sequence[str] = DEFAULT_METRICS,
                    plot: str | Path | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Markdown table (and optional PNG) of every strategy against ``scratch`` per target.

    For each metric: mean +- std over seeds of scratch and of the strategy, the difference, and a
    paired test on the per-user test results pooled over the seeds both have (users x seeds pairs);
    a row is flagged **negative transfer** when the difference is below 0 with paired-t p < 0.05.
    """
    from ..evaluate.significance import paired_test
    from ..runs import load_per_user

    groups = _collect(run_dirs)
    rows: list[dict[str, Any]] = []
    lines = ["| setting | strategy | metric | scratch | strategy | diff | 95% CI | t p | Wilcoxon p | seeds | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for setting, by_strat in sorted(groups.items()):
        base = by_strat.get("scratch")
        if not base:
            lines.append(f"| {setting} | (no scratch run) | | | | | | | | | |")
            continue
        for strat in [s for s in ("finetune", "adaptor", "relearn") if s in by_strat] + \
                     sorted(s for s in by_strat if s not in ("scratch", "finetune", "adaptor", "relearn")):
            runs = by_strat[strat]
            seeds = sorted(set(base) & set(runs))
            if not seeds:
                continue
            pa = [load_per_user(base[s]) for s in seeds]
            pb = [load_per_user(runs[s]) for s in seeds]
            ma = [read_json(base[s] / "metrics.json")["test"] for s in seeds]
            mb = [read_json(runs[s] / "metrics.json")["test"] for s in seeds]
            for metric in metrics:
                if metric not in pa[0]:
                    continue
                # users of different seeds are distinct pairs: key them as (seed, user)
                ua = np.concatenate([i * 10**9 + z["users"] for i, z in enumerate(pa)])
                ub = np.concatenate([i * 10**9 + z["users"] for i, z in enumerate(pb)])
                t = paired_test(ua, np.concatenate([z[metric] for z in pa]), ub,
                                np.concatenate([z[metric] for z in pb]), metric)
                va, vb = np.array([m[metric] for m in ma]), np.array([m[metric] for m in mb])
                neg = t.diff < 0 and t.t_pvalue < 0.05
                pos = t.diff > 0 and t.t_pvalue < 0.05
                verdict = "**negative transfer**" if neg else ("positive transfer" if pos else "no significant difference")
                row = {"setting": setting, "strategy": strat, "metric": metric, "seeds": seeds,
                       "scratch_mean": float(va.mean()), "scratch_std": float(va.std(ddof=1)) if len(va) > 1 else 0.0,
                       "mean": float(vb.mean()), "std": float(vb.std(ddof=1)) if len(vb) > 1 else 0.0,
                       "diff": t.diff, "ci": [t.ci_low, t.ci_high], "t_pvalue": t.t_pvalue,
                       "wilcoxon_pvalue": t.wilcoxon_pvalue, "verdict": verdict.strip("*")}
                rows.append(row)
                pm = (lambda m, sd: f"{m:.4f} ± {sd:.4f}") if len(seeds) > 1 else (lambda m, sd: f"{m:.4f}")
                lines.append(f"| {setting} | {strat} | {metric} | {pm(row['scratch_mean'], row['scratch_std'])} | "
                             f"{pm(row['mean'], row['std'])} | {t.diff:+.4f} | [{t.ci_low:+.4f}, {t.ci_high:+.4f}] | "
                             f"{t.t_pvalue:.3g} | {t.wilcoxon_pvalue:.3g} | {len(seeds)} | {verdict} |")
    md = "\n".join(lines)
    if plot is not None and rows:
        _plot(rows, Path(plot))
    return md, rows


def _plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Bar chart: relative difference to scratch (%) per setting x strategy, one panel per metric."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # optional dependency
        log.warning("matplotlib is not installed; no plot written (pip install matplotlib)")
        return None
    metrics = sorted({r["metric"] for r in rows})
    labels = sorted({(r["setting"], r["strategy"]) for r in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 1.2 + 0.45 * len(labels)), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        vals, errs, colors = [], [], []
        for lab in labels:
            r = next((r for r in rows if (r["setting"], r["strategy"]) == lab and r["metric"] == metric), None)
            base = r["scratch_mean"] if r else 0.0
            v = 100 * r["diff"] / base if r and base else 0.0
            lo, hi = (100 * np.asarray(r["ci"]) / base) if r and base else (0.0, 0.0)
            vals.append(v)
            errs.append([v - lo, hi - v])
            colors.append("tab:red" if r and r["diff"] < 0 and r["t_pvalue"] < 0.05 else
                          "tab:green" if r and r["diff"] > 0 and r["t_pvalue"] < 0.05 else "tab:gray")
        y = np.arange(len(labels))
        ax.barh(y, vals, xerr=np.asarray(errs).T, color=colors)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{s} | {st}" for s, st in labels] if ax is axes[0][0] else [""] * len(labels), fontsize=8)
        ax.set_title(f"{metric}: vs scratch (%)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, *, metrics: Sequence[str] = DEFAULT_METRICS,
                 plot: bool = True) -> tuple[str, Path | None]:
    """Write ``transfer.md``, ``transfer.json`` and (with matplotlib) ``transfer.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "transfer.png" if plot else None
    md, rows = transfer_report(run_dirs, metrics=metrics, plot=png)
    write_text(out_dir / "transfer.md", md + "\n")
    write_json(out_dir / "transfer.json", rows)
    return md, (png if png is not None and png.is_file() else None)
