"""What every metrics module shares: the Inception feature dimensions and the error type.

At the bottom of bench.metrics, so statistics files, streaming accumulators and the image-set metrics all import
it and none of them imports another to get these.
"""

from __future__ import annotations

from titok.errors import InputError

FEATURE_DIM = 2048
LOGITS_DIM = 1008  # torch-fidelity's "logits_unbiased": the 1008 outputs of the TF Inception graph


class MetricError(InputError, ValueError):
    """Inputs a metric can't be computed from (non-finite features, wrong statistics shape, too few samples)."""
