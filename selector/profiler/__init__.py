"""Latency profiler on random-weight models (``cost``) and its `tokenrelay profile` command (``command``)."""

from .command import ProfileCommand, main, profile_config, run_profile
from .cost import (
    CostModel,
    ModelSpec,
    ProfileConfig,
    build_random_model,
    predict_large_reasoning,
    predict_relay,
    profile_model,
)

__all__ = [
    "CostModel",
    "ModelSpec",
    "ProfileCommand",
    "ProfileConfig",
    "build_random_model",
    "main",
    "predict_large_reasoning",
    "predict_relay",
    "profile_config",
    "profile_model",
    "run_profile",
]
