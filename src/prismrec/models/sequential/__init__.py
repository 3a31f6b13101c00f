"""Sequential recommenders (next item from an ordered history). Importing registers them."""

from . import gru4rec, mdsrec, sasrec  # noqa: F401
from . import demure  # noqa: F401
