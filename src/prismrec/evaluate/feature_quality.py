"""Judge item features before any recommender is trained (AlignRec's intermediate evaluation).

Liu et al. (CIKM'24) evaluate multimodal features with three classes of training-free protocols, so a
feature can be compared with another without training a recommender on each. Here, on the dataset's
own split and with the standard full-ranking evaluator (train items masked, MMRec metrics):

(a) **zero-shot**: a user's vector is the mean of the L2-normalised features of their training items;
    ``score(u, i) = cos(user_u, x_i)``; items without a feature rank last;
(b) **item-kNN CF**: ``score(u, i) = sum_{j in train(u)} K[j, i]`` with ``K[j, i] = cos(x_j, x_i)`` for
    the ``k`` nearest neighbours ``i`` of ``j`` (item-based top-N of Deshpande & Karypis), computed as
    the sparse product ``R[users] @ K`` (``prismrec.graphs.knn``; never a dense items x items matrix);
(c) **masked modality**: a seeded random share of the items (50 %) loses one modality (its row zeroed
    and flagged unavailable, as the official code's ``--mask_image/--mask_text``); every feature set
    that uses that modality is recomputed (the concatenation, and the stage-1 feature re-encoded by the
    *trained* alignment encoder) and (a) and (b) are run again; the report gives the relative drop.

Feature sets: every modality on its own, the concatenation of all of them (each L2-normalised), and
the stage-1 aligned feature when asked for (trained on the fly).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from ..config import DataConfig, OverridesLike, read_yaml, resolve_data_config
from ..data.dataset import Dataset, Modality
from ..data.split import Split
from ..errors import DataError
from ..graphs.knn import knn_graph, l2_normalize
from .ranking import RankingEvaluator

log = logging.getLogger("prismrec")

COLUMNS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
PROTOCOLS = ("zero-shot", "item-knn")


@dataclass
class FeatureSet:
    """One item-feature matrix under test: ``values`` (items x dim) and ``available`` (items,)."""

    name: str
    values: np.ndarray
    available: np.ndarray
    uses: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------ scorers
def zero_shot_scorer(train: sp.csr_matrix, fs: FeatureSet) -> Callable[[torch.Tensor], torch.Tensor]:
    """Protocol (a): cosine between the mean of a user's training-item features and every item."""
    x = np.where(fs.available[:, None], l2_normalize(fs.values), 0.0).astype(np.float32)
    users = l2_normalize(np.asarray(train @ x, dtype=np.float32))  # the mean's direction; its scale drops out
    items_t = torch.from_numpy(x.T.copy())
    users_t = torch.from_numpy(users)
    missing = torch.from_numpy(~fs.available)

    def score(u: torch.Tensor) -> torch.Tensor:
        s = users_t[u.cpu()] @ items_t
        s[:, missing] = -2.0  # below every cosine: an item without a feature gets no evidence
        return s.to(u.device)

    return score


def knn_cf_matrix(fs: FeatureSet, k: int) -> sp.csr_matrix:
    """``K[j, i] = cos(x_j, x_i)`` for the ``k`` nearest neighbours ``i != j`` of every item ``j`` with a
    feature (items without one have no row and are nobody's neighbour)."""
    return knn_graph(fs.values, k, weighted=True, norm="none", available=fs.available, exclude_self=True)


def item_knn_scorer(train: sp.csr_matrix, fs: FeatureSet, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Protocol (b): ``score(u, :) = R[u] @ K``, one sparse product per chunk of users."""
    r = sp.csr_matrix(train, dtype=np.float32)
    kmat = knn_cf_matrix(fs, k)

    def score(u: torch.Tensor) -> torch.Tensor:
        rows = u.cpu().numpy()
        return torch.from_numpy((r[rows] @ kmat).toarray()).to(u.device)

    return score


# ---------------------------------------------------------------------------------------- feature sets
def mask_modality(modality: Modality, ratio: float, seed: int) -> Modality:
    """The modality with the first ``ratio`` share of a seeded permutation of the items zeroed and flagged
    unavailable (the same items for every modality under one seed)."""
    n = len(modality)
    masked = np.random.default_rng(seed).permutation(n)[: int(ratio * n)]
    available = modality.available.copy()
    available[masked] = False
    return Modality(modality.name, modality.values.copy(), available,
                    {**modality.provenance, "masked_share": ratio, "mask_seed": seed})


def feature_sets(modalities: dict[str, Modality], aligner: Any = None) -> list[FeatureSet]:
    """Each modality alone, their concatenation (two or more) and, with ``aligner`` (a trained
    ``AlignmentEncoder``), the stage-1 unified feature of the same modalities."""
    from ..models.general.alignrec_stage1 import concat_modalities

    names = sorted(modalities)
    out = [FeatureSet(n, modalities[n].values, modalities[n].available, (n,)) for n in names]
    if len(names) > 1:
        values, available = concat_modalities(modalities)
        out.append(FeatureSet("concat(" + "+".join(names) + ")", values, available, tuple(names)))
    if aligner is not None:
        values, available = aligner.encode({n: modalities[n] for n in aligner.names})
        out.append(FeatureSet("aligned(" + "+".join(aligner.names) + ")", values, available, tuple(aligner.names)))
    return out


# ------------------------------------------------------------------------------------------ protocol
@dataclass
class FeatureQualityReport:
    """Rows (feature set x protocol x mask) with metrics, and the settings that produced them."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        from ..report.tables import feature_quality_table

        return feature_quality_table(self.rows, COLUMNS).markdown()

    def as_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "rows": self.rows}


def evaluate_feature_set(split: Split, fs: FeatureSet, protocol: str, evaluator: RankingEvaluator,
                         k: int) -> dict[str, float]:
    """The metrics of one feature set under one protocol (``zero-shot`` or ``item-knn``)."""
    if protocol == "zero-shot":
        fn = zero_shot_scorer(split.train, fs)
    elif protocol == "item-knn":
        fn = item_knn_scorer(split.train, fs, k)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    return evaluator.evaluate(fn).metrics


def feature_quality(ds: Dataset, split: Split, *, modalities: Sequence[str] | None = None, k: int = 20,
                    aligned: bool = False, align_cfg: Any = None, mask_ratio: float = 0.5, seed: int = 0,
                    stage: str = "test", filter_cold_users: bool = True) -> FeatureQualityReport:
    """Run protocols (a), (b) and (c) on every feature set of ``ds`` (or of ``modalities``)."""
    names = sorted(modalities or ds.modalities)
    unknown = [n for n in names if n not in ds.modalities]
    if unknown or not names:
        raise DataError(f"modality {unknown[0] if unknown else '(none)'!r} is not in dataset '{ds.name}'. "
                        f"Available: {', '.join(sorted(ds.modalities)) or 'none'}.",
                        fix="pass --modality with one of the available names, or attach a feature file with "
                            "--set 'data.extra_features={name: FILE.npz}'.")
    mods = {n: ds.modalities[n] for n in names}
    aligner = None
    settings: dict[str, Any] = {"dataset": ds.name, "stage": stage, "k": k, "mask_ratio": mask_ratio,
                                "seed": seed, "modalities": names, "split": split.rule}
    if aligned:
        from ..models.general.alignrec_stage1 import train_alignment

        if len(names) < 2:
            raise DataError("--aligned needs at least two modalities to align.")
        res = train_alignment(mods, align_cfg)
        aligner = res.encoder
        settings["stage1"] = {k_: res.report[k_] for k_ in ("settings", "epochs_run", "best_epoch", "retrieval_after")}
    evaluator = RankingEvaluator(split, stage, [10, 20], filter_cold_users=filter_cold_users)
    report = FeatureQualityReport(settings=settings)
    base: dict[tuple[str, str], dict[str, float]] = {}
    for fs in feature_sets(mods, aligner):
        for protocol in PROTOCOLS:
            metrics = evaluate_feature_set(split, fs, protocol, evaluator, k)
            base[(fs.name, protocol)] = metrics
            report.rows.append({"features": fs.name, "protocol": protocol, "masked": None, "metrics": metrics,
                                "drop_recall@20": None, "items_with_feature": int(fs.available.sum())})
    for masked in names:
        mods_m = {**mods, masked: mask_modality(mods[masked], mask_ratio, seed)}
        for fs in feature_sets(mods_m, aligner):
            if masked not in fs.uses:
                continue
            for protocol in PROTOCOLS:
                metrics = evaluate_feature_set(split, fs, protocol, evaluator, k)
                ref = base[(fs.name, protocol)]["recall@20"]
                report.rows.append({"features": fs.name, "protocol": protocol, "masked": masked, "metrics": metrics,
                                    "drop_recall@20": (metrics["recall@20"] - ref) / ref if ref > 0 else None,
                                    "items_with_feature": int(fs.available.sum())})
    order = {name: i for i, name in enumerate(dict.fromkeys(r["features"] for r in report.rows))}
    report.rows.sort(key=lambda r: (order[r["features"]], PROTOCOLS.index(r["protocol"]),
                                    -1 if r["masked"] is None else names.index(r["masked"])))
    return report


# ---------------------------------------------------------------------------------------------- CLI
def data_config(config_files: Sequence[str | Path] = (), overrides: OverridesLike = ()) -> DataConfig:
    """A :class:`DataConfig` from the ``data:`` sections of YAML files and ``[data.]KEY`` overrides (a typed
    mapping or ``KEY=VALUE`` strings: the data part of what ``prismrec train`` accepts)."""
    return resolve_data_config([read_yaml(p) for p in config_files], overrides)
