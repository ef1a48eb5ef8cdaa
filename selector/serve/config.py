"""`tokenrelay serve` configuration: the relay (one ``RelayConfig``), where each model runs, the HTTP side."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..relay import RelayConfig
from ..remote import RemoteConfig

__all__ = ["ServeConfig"]


@dataclass
class ServeConfig:
    """`tokenrelay serve`: the relay as an OpenAI-compatible HTTP service."""

    relay: RelayConfig = field(default_factory=RelayConfig)
    """The relay (as for `tokenrelay infer`); each request may override budget, budget_kind, gate, tau."""
    small_endpoint: RemoteConfig | None = None
    """Run the small model behind an OpenAI-compatible engine instead of in-process (relay.small, if
    set, is then the local folder of its tokenizer)."""
    large_endpoint: RemoteConfig | None = None
    """Run the large model behind an OpenAI-compatible engine (relay.large: its tokenizer folder)."""
    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0 for every interface)."""
    port: int = 8000
    """TCP port (0: any free port; the chosen one is printed)."""
    model_name: str = "tokenrelay"
    """The relay's model id in /v1/models; the raw models are served as NAME-small and NAME-large."""
    small_timeout_s: float | None = None
    """Default small-model deadline in seconds (a request may set its own): past it the large model's
    direct answer is returned. In-process generation cannot be preempted, so its reasoning is
    discarded afterwards (cap reason_tokens to bound the wait); an endpoint request is cut off."""
    max_queue: int = 256
    """Requests waiting for the model worker before new ones get 503 (server busy)."""
    raw_completions: bool = True
    """Serve /v1/completions for the in-process models (token-id prompts, logprobs, vLLM-style
    prompt_logprobs): the server then doubles as an engine for another relay's remote model."""
    log_level: str = "warning"
    """uvicorn log level: critical, error, warning, info, debug."""

    def __post_init__(self) -> None:
        if self.large_endpoint is None and self.relay.large is None:
            raise ValueError("the relay needs a large model: relay.large (a folder) or large_endpoint")
        needs_small = self.relay.gate != "never"
        if needs_small and self.small_endpoint is None and self.relay.small is None:
            raise ValueError(
                f"gate {self.relay.gate!r} needs a small model: relay.small (a folder) or small_endpoint "
                "(or gate 'never', which requests cannot change then)"
            )
        if self.relay.selector == "oracle":
            raise ValueError("the oracle selector needs labels, which a served request does not have")
        for name in ("small", "large"):
            endpoint = getattr(self, f"{name}_endpoint")
            if endpoint is not None and endpoint.tokenizer is None and getattr(self.relay, name) is None:
                raise ValueError(
                    f"{name}_endpoint needs the served model's tokenizer: {name}_endpoint.tokenizer or relay.{name}"
                )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.small_timeout_s is not None and self.small_timeout_s <= 0:
            raise ValueError(f"small_timeout_s must be > 0, got {self.small_timeout_s}")
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue}")
        if not self.model_name.strip():
            raise ValueError("model_name is empty")
        if self.log_level not in ("critical", "error", "warning", "info", "debug"):
            raise ValueError(f"unknown log_level {self.log_level!r}")

    @property
    def model_ids(self) -> dict[str, str]:
        """Served model id -> what it is: 'relay', 'small' or 'large'."""
        return {
            self.model_name: "relay",
            f"{self.model_name}-small": "small",
            f"{self.model_name}-large": "large",
        }
