"""Zero-shot evaluation: the paper's metrics (as `evaluate.Metric`s), vocabulary ranking and the harness."""

from .harness import evaluate_zero_shot, results_table, write_results
from .metrics import load_metric, metric_path
from .ranking import RankingResult, rank_candidates

__all__ = [
    "RankingResult",
    "evaluate_zero_shot",
    "load_metric",
    "metric_path",
    "rank_candidates",
    "results_table",
    "write_results",
]
