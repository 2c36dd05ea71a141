"""ember's metrics: evaluate with an ember ``Engine`` without pytorch-ignite.

``from ember.metrics import Accuracy, Loss, ...``; the API follows ``ignite.metrics`` (attach,
usages, arithmetic on metrics). This package imports torch; ``ember.engine`` does not.
"""

from __future__ import annotations

from ember.metrics._base import (
    BatchFiltered,
    BatchWise,
    EpochWise,
    Metric,
    MetricsLambda,
    MetricUsage,
    NotComputableError,
    RunningBatchWise,
    RunningEpochWise,
    SingleEpochRunningBatchWise,
)
from ember.metrics.aggregate import Average, Loss, RunningAverage
from ember.metrics.classification import (
    Accuracy,
    ConfusionMatrix,
    Fbeta,
    Precision,
    Recall,
    TopKCategoricalAccuracy,
)
from ember.metrics.regression import MeanAbsoluteError, MeanSquaredError, RootMeanSquaredError

__all__ = [
    "Accuracy",
    "Average",
    "BatchFiltered",
    "BatchWise",
    "ConfusionMatrix",
    "EpochWise",
    "Fbeta",
    "Loss",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Metric",
    "MetricUsage",
    "MetricsLambda",
    "NotComputableError",
    "Precision",
    "Recall",
    "RootMeanSquaredError",
    "RunningAverage",
    "RunningBatchWise",
    "RunningEpochWise",
    "SingleEpochRunningBatchWise",
    "TopKCategoricalAccuracy",
]
