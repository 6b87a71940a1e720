"""Image-set metrics: Inception features, running statistics, statistics files, numbers.

`from bench.metrics import compute_image_metrics` is the documented Python API (docs/api.md), older than this
package: the function, its result and its error type are re-exported here so that import path keeps working. The
code is in bench.metrics.image_sets; the harness itself imports it from there.
"""

from bench.metrics.base import MetricError
from bench.metrics.image_sets import MetricsResult, compute_image_metrics

__all__ = ["MetricError", "MetricsResult", "compute_image_metrics"]
