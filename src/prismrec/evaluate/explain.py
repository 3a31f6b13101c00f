"""Why a sequential model recommends what it does: contributions of history items and modalities.

For each of a user's top-``k`` recommendations ``j`` we take Demure's gradient contribution
(:func:`~prismrec.models.sequential.attribution.contributions`, gradient x input of the score of
``j``) of every history position ``i`` and every input part ``m`` (``"id"`` and each modality):
``c_{i,m,j}``. Reported per recommendation:

* item contribution ``c_{i,j} = sum_m c_{i,m,j}`` (signed: negative items pushed ``j`` down);
* modality share ``|c_{.,m,j}| / sum_m |c_{.,m,j}|`` with ``|c_{.,m,j}| = sum_i |c_{i,m,j}|``.

Works for any model with ``input_parts`` / ``encode_parts`` (every sequential model here). Models
whose encoder is not differentiable in its inputs are refused with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import PrismrecError


@dataclass
class Explanation:
    user: str
    history: list[str]           # raw item ids, oldest first (the part the model sees)
    history_titles: list[str]
    recommended: list[str]       # raw item ids, best first
    titles: list[str]
    scores: np.ndarray           # (k,)
    parts: list[str]             # "id" and modality names
    by_item: np.ndarray          # (k, L) signed contribution of each history item to each recommendation
    by_part: np.ndarray          # (k, L, P)

    def modality_share(self) -> np.ndarray:
        """(k, P): share of the absolute contribution that each part carries, per recommendation."""
        a = np.abs(self.by_part).sum(1)
        return a / np.maximum(a.sum(1, keepdims=True), 1e-12)

    def as_dict(self) -> dict[str, Any]:
        share = self.modality_share()
        return {
            "user": self.user, "history": self.history, "parts": self.parts,
            "recommendations": [
                {"rank": r + 1, "item": self.recommended[r], "title": self.titles[r], "score": float(self.scores[r]),
                 "item_contributions": {h: float(c) for h, c in zip(self.history, self.by_item[r])},
                 "modality_share": {p: float(s) for p, s in zip(self.parts, share[r])}}
                for r in range(len(self.recommended))
            ],
        }

    def text(self, top_items: int = 3) -> str:
        """A readable report: per recommendation, its modality shares and the most helpful history items."""
        lines = [f"user {self.user}: {len(self.history)} history items seen by the model (oldest first)"]
        for i, (h, t) in enumerate(zip(self.history, self.history_titles)):
            lines.append(f"  h{i + 1:<3} {h}" + (f"  {t[:70]}" if t else ""))
        share = self.modality_share()
        for r, item in enumerate(self.recommended):
            mods = ", ".join(f"{p} {100 * s:.0f}%" for p, s in zip(self.parts, share[r]))
            lines.append(f"{r + 1:>3}. {item}" + (f"  {self.titles[r][:70]}" if self.titles[r] else "")
                         + f"  (score {self.scores[r]:.3f})")
            lines.append(f"     modalities: {mods}")
            order = np.argsort(-self.by_item[r])[:top_items]
            best = ", ".join(f"h{i + 1} {self.history[i]} {self.by_item[r, i]:+.3f}" for i in order)
            lines.append(f"     most helpful history items: {best}")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Save a two-panel figure (item contributions heat map, modality shares) atomically as PNG."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise PrismrecError("plotting needs matplotlib. Fix: pip install 'prismrec[plot]'.") from e
        from ..utils.io import write_bytes
        import io

        k, L = self.by_item.shape
        fig, (a, b) = plt.subplots(1, 2, figsize=(4 + 0.5 * L + 3, 1.5 + 0.4 * k),
                                   gridspec_kw={"width_ratios": [max(L, 2), 3]})
        lim = float(np.abs(self.by_item).max()) or 1.0
        im = a.imshow(self.by_item, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        a.set_xticks(range(L), [f"h{i + 1}" for i in range(L)], fontsize=7)
        a.set_yticks(range(k), [f"{r + 1}. {x}" for r, x in enumerate(self.recommended)], fontsize=7)
        a.set_xlabel("history item (oldest -> newest)")
        a.set_title(f"user {self.user}: contribution to each recommendation", fontsize=9)
        fig.colorbar(im, ax=a, fraction=0.03)
        share = self.modality_share()
        left = np.zeros(k)
        for p, name in enumerate(self.parts):
            b.barh(range(k), share[:, p], left=left, label=name)
            left += share[:, p]
        b.set_yticks(range(k), [""] * k)
        b.invert_yaxis()
        b.set_xlim(0, 1)
        b.set_title("modality share", fontsize=9)
        b.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        return write_bytes(path, buf.getvalue())


def explain_user(run, user: Any, k: int = 5) -> Explanation:
    """Top-``k`` recommendations of a saved sequential run for raw ``user`` with their contributions.

    The history is everything the split knows of the user (train, valid and test), as when serving.
    """
    from ..models.sequential.attribution import contributions
    from ..models.sequential.base import SequentialRecommender

    model = run.model
    if not isinstance(model, SequentialRecommender):
        raise PrismrecError(
            f"prismrec explain works on sequential models; this run is '{run.config.model}' "
            f"({model.family}). Fix: explain a run of sasrec, sasrecf, gru4rec, mdsrec or demure."
        )
    ds = run.dataset
    rec = run.recommend([user], k)
    internal = ds.users_to_internal([user])
    model.eval()
    seq = torch.as_tensor(model.user_sequences(internal, run.split.history("all")), device=model.device)
    targets = torch.as_tensor(ds.items_to_internal(rec["item"].tolist()), device=model.device)
    c = contributions(model, seq.expand(len(targets), -1), targets)
    valid = (seq[0] != 0).cpu().numpy()
    hist = seq[0].cpu().numpy()[valid] - 1
    return Explanation(
        user=str(user), history=[str(x) for x in ds.item_ids[hist]], history_titles=ds.item_titles(hist),
        recommended=rec["item"].astype(str).tolist(), titles=rec["title"].tolist(),
        scores=rec["score"].to_numpy(), parts=c.parts,
        by_item=c.by_item.cpu().numpy()[:, valid], by_part=c.by_part.cpu().numpy()[:, valid],
    )
