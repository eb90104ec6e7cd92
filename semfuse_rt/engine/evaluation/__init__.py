"""Evaluation: datasets, baselines, running methods over sets, scoring fused images made
elsewhere, metric suites, rankings and reports.

The names below are this package's face (semfuse_rt/lazy_exports.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from semfuse_rt.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from semfuse_rt.engine.evaluation.baselines import BASELINES
    from semfuse_rt.engine.evaluation.datasets import find_sets
    from semfuse_rt.engine.evaluation.evaluation import (
        SIDE_BY_SIDE_FOLDER, check_report_folder, evaluate, parse_methods, suite_rankings, summary_table, write_reports,
    )
    from semfuse_rt.engine.evaluation.exposure_baselines import IMAGE_BASELINES
    from semfuse_rt.engine.evaluation.metric_suites import ALL_SUITES, DEFAULT_SUITES, parse_suites, suites_help
    from semfuse_rt.engine.evaluation.retention_judges import DEFAULT_JUDGES, parse_judges
    from semfuse_rt.engine.evaluation.scoring import plan_scoring, run_scoring, write_score_reports
    from semfuse_rt.engine.evaluation.suite_reports import SCORES_CSV, ranking_tables

__all__ = [
    "BASELINES", "find_sets", "SIDE_BY_SIDE_FOLDER", "check_report_folder", "evaluate", "parse_methods",
    "suite_rankings", "summary_table", "write_reports", "IMAGE_BASELINES", "ALL_SUITES", "DEFAULT_SUITES",
    "parse_suites", "suites_help", "DEFAULT_JUDGES", "parse_judges", "plan_scoring", "run_scoring",
    "write_score_reports", "SCORES_CSV", "ranking_tables"
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "BASELINES": "baselines",
    "find_sets": "datasets",
    "SIDE_BY_SIDE_FOLDER": "evaluation",
    "check_report_folder": "evaluation",
    "evaluate": "evaluation",
    "parse_methods": "evaluation",
    "suite_rankings": "evaluation",
    "summary_table": "evaluation",
    "write_reports": "evaluation",
    "IMAGE_BASELINES": "exposure_baselines",
    "ALL_SUITES": "metric_suites",
    "DEFAULT_SUITES": "metric_suites",
    "parse_suites": "metric_suites",
    "suites_help": "metric_suites",
    "DEFAULT_JUDGES": "retention_judges",
    "parse_judges": "retention_judges",
    "plan_scoring": "scoring",
    "run_scoring": "scoring",
    "write_score_reports": "scoring",
    "SCORES_CSV": "suite_reports",
    "ranking_tables": "suite_reports",
})
