"""Reports: tables (Markdown/CSV), plots and the paired-test rule over seeds.

Used by the runs layer (``compare``, ``tune``, the CLI, the transfer report) and by the benchmark
scripts, so every table the toolkit prints is built and tested in one place. ``tables`` imports
nothing from the package; ``paired`` builds on ``evaluate.significance``; ``plots`` imports
matplotlib only when a plot is drawn.
"""

from .paired import paired_over_seeds, seed_mean_per_user
from .tables import Table, mean_std, metrics_table, protocol_caption, pvalue

__all__ = ["Table", "mean_std", "metrics_table", "paired_over_seeds", "protocol_caption", "pvalue",
           "seed_mean_per_user"]
