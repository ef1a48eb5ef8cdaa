"""The evaluation engine behind `tokenrelay eval` (and its presets: the demo, the gate sweep, the
benchmarks): the grid (``grid``) and its run (``engine``), the persistent output cache (``cache``), metrics,
tables and plots (``report``), paired statistics (``paired``) and the gate calibration
(``calibrate``). Application code over the core library; the core never imports it."""

from .cache import CachedAgent, OutputCache
from .engine import run_eval, selector_fingerprint
from .grid import CONDITIONS, FIXED_SELECTORS, RELAY_GATES, Condition, EvalConfig, build_grid, selector_labels
from .report import condition_metrics, markdown_table, pareto_front, write_outputs

__all__ = [
    "CONDITIONS",
    "FIXED_SELECTORS",
    "RELAY_GATES",
    "CachedAgent",
    "Condition",
    "EvalConfig",
    "OutputCache",
    "build_grid",
    "condition_metrics",
    "markdown_table",
    "pareto_front",
    "run_eval",
    "selector_fingerprint",
    "selector_labels",
    "write_outputs",
]
