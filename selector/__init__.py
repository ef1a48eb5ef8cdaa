"""TokenRelay inference library: a large model answers from a small model's key reasoning tokens.

The names below are imported lazily (``selector.Relay`` loads only the relay's modules), so
``import selector`` stays cheap and never imports Lightning or the training code.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    # models
    "Agent": "agents",
    "AgentConfig": "agents",
    "fastest_dtype": "dtype_choice",
    "Generation": "agents",
    "ScoreResult": "agents",
    # data and text
    "ColumnMap": "data",
    "Example": "data",
    "load_examples": "data",
    "Unit": "units",
    "split_units": "units",
    "join_units": "units",
    "extract_answer": "answers",
    "answers_match": "answers",
    "contains_answer": "answers",
    # prompts and traces
    "PromptTemplate": "prompts",
    "reasoning_prompt": "prompts",
    "transfer_prompt": "prompts",
    "answer_target": "prompts",
    "ReasonConfig": "traces",
    "run_reason": "traces",
    "load_traces": "traces",
    "ReasoningView": "reasoning",
    # selection
    "Budget": "selection",
    "select_units": "selection",
    "build_transfer": "selection",
    "load_selector": "baselines",
    "TokenSelector": "scorer",
    "ScorerConfig": "scorer",
    # the relay
    "Gate": "gating",
    "Relay": "relay",
    "RelayConfig": "relay",
    "RelayResult": "relay",
    "StopHead": "stop_head",
    # evaluation
    "EvalConfig": "evaluation",
    "run_eval": "evaluation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'selector' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return __all__
