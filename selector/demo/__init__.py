"""The offline demo: its synthetic world (``synthetic``) and `tokenrelay demo`, a preset of the
evaluation engine (``preset``)."""

from .preset import (
    BUILD_HINT,
    DEMO_SEED,
    DemoConfig,
    checkpoint_root,
    default_checkpoints,
    demo_config,
    demo_eval_config,
    main,
    markdown_table_for,
    run_demo,
    short_table,
    summary,
)

__all__ = [
    "BUILD_HINT",
    "DEMO_SEED",
    "DemoConfig",
    "checkpoint_root",
    "default_checkpoints",
    "demo_config",
    "demo_eval_config",
    "main",
    "markdown_table_for",
    "run_demo",
    "short_table",
    "summary",
]
