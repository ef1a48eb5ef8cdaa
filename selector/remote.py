"""A model behind an OpenAI-compatible engine (vLLM, SGLang, `tokenrelay serve`): the Agent interface over HTTP.

``RemoteAgent`` generates and scores like ``selector.agents.Agent`` but sends token ids to the
engine's ``/v1/completions`` through the official ``openai`` client. Prompts are rendered and
tokenized here, with the model's own tokenizer read from a local folder (tokenizer files only, no
weights), so the engine sees exactly the tokens an in-process model would, and the relay can cut
units and count tokens as usual.

- Generation asks for per-token log-probs and the generated token ids (vLLM's
  ``return_tokens_as_token_ids``; an engine without it falls back to re-tokenizing the text, which
  must give as many tokens as it returned log-probs). Self-information and the confidence gate
  need those log-probs.
- Scoring (gold-answer log-probs for ``label`` / ``eval``) uses prompt log-probs: vLLM's
  ``prompt_logprobs`` extra parameter. An engine that does not return them gets a clear error.
- Hidden states never leave an engine: the ``hidden`` selector cannot read a remote small model.
  ``none``, ``full``, ``random``, ``first``, ``last``, ``selfinfo`` and ``encoder`` selectors can.
- An engine does not split prefill from decode: a generation's whole request time is reported as
  ``prefill_s`` (``decode_s`` is 0).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .agent_types import Generation, ScoreResult, _score_requests

__all__ = ["HIDDEN_SELECTOR_ERROR", "RemoteAgent", "RemoteConfig", "RemoteModelError"]

HIDDEN_SELECTOR_ERROR = (
    "the 'hidden' selector reads the small model's hidden states, which an OpenAI-compatible endpoint "
    "does not return: with a remote small model use an encoder selector or a baseline "
    "(none, full, random, first, last, selfinfo)"
)


class RemoteModelError(RuntimeError):
    """The endpoint failed, timed out, or lacks a feature the call needs (the message says which)."""


@dataclass
class RemoteConfig:
    """One model served by an OpenAI-compatible engine."""

    base_url: str
    """The engine's API root, e.g. http://127.0.0.1:8000/v1."""
    model: str
    """The model name the engine serves (its /v1/models id)."""
    tokenizer: str | None = None
    """Local folder with the served model's tokenizer (and chat template); None: the relay's model path."""
    api_key: str | None = None
    """API key; None reads OPENAI_API_KEY, or sends 'EMPTY' (what local engines expect)."""
    timeout_s: float = 120.0
    """Seconds before one request is abandoned."""
    max_retries: int = 0
    """Retries of a failed request by the openai client (0: fail fast and let the caller fall back)."""
    system_prompt: str | None = None
    """Optional system message put before every prompt."""
    chat_template: bool | None = None
    """Use the tokenizer's chat template: None = when it has one."""

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model.strip():
            raise ValueError("the endpoint's model name is empty")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")


class RemoteAgent:
    """``Agent``'s generate / score / answer_and_score, served by an OpenAI-compatible endpoint."""

    supports_images = False

    def __init__(self, config: RemoteConfig, tokenizer=None):
        from openai import OpenAI

        self.config = config
        if tokenizer is None:
            if config.tokenizer is None:
                raise ValueError(f"{self.name}: give the served model's tokenizer folder (tokenizer=...)")
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
        self.tokenizer = tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if config.chat_template and not has_template:
            raise ValueError(f"{self.name}: chat_template=True but the tokenizer has no chat template")
        self.uses_chat_template = has_template if config.chat_template is None else config.chat_template
        self.eos_ids = {tokenizer.eos_token_id} - {None}
        if config.tokenizer is not None and (Path(config.tokenizer) / "generation_config.json").exists():
            from transformers import GenerationConfig

            eos = GenerationConfig.from_pretrained(config.tokenizer).eos_token_id
            self.eos_ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        key = config.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.client = OpenAI(
            base_url=config.base_url, api_key=key, timeout=config.timeout_s, max_retries=config.max_retries
        )

    @property
    def name(self) -> str:
        return f"{self.config.model}@{self.config.base_url}"

    @property
    def model(self):
        raise RemoteModelError(
            f"{self.name} is served by an endpoint: its weights and hidden states are not here"
        )

    def format_chat(self, user: str, *, n_images: int = 0, system: str | None = None) -> str:
        """Render one user turn (and the assistant's turn start) as prompt text, as ``Agent`` does."""
        if n_images:
            raise ValueError(f"{self.name}: a remote model takes text prompts only here")
        system = system if system is not None else self.config.system_prompt
        if self.uses_chat_template:
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": user})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        head = f"{system}\n\n" if system else ""
        return f"{self.tokenizer.bos_token or ''}{head}{user}\n\n"

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a piece of text without special tokens (how ``Agent`` tokenizes every piece)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _check_images(self, images) -> None:
        if images is not None and any(len(list(im)) for im in images):
            raise ValueError(f"{self.name}: a remote model takes text prompts only here")

    def _complete(self, prompt_ids: list[list[int]], timeout: float | None = None, **kwargs):
        from openai import APIConnectionError, APIStatusError, APITimeoutError

        try:
            return self.client.completions.create(
                model=self.config.model,
                prompt=prompt_ids,
                timeout=timeout if timeout is not None else self.config.timeout_s,
                **kwargs,
            )
        except APITimeoutError as err:
            raise RemoteModelError(f"{self.name}: request timed out") from err
        except APIConnectionError as err:
            raise RemoteModelError(f"{self.name}: cannot connect ({err})") from err
        except APIStatusError as err:
            raise RemoteModelError(f"{self.name}: HTTP {err.status_code}: {err.message}") from err

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prompts: Sequence[str],
        *,
        images: Sequence[Sequence] | None = None,
        max_new_tokens: int = 256,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        hidden_layer: int | None = None,
        timeout: float | None = None,
    ) -> list[Generation]:
        """Generate for formatted prompts (one request), greedy unless ``do_sample``; ``timeout`` in seconds."""
        if hidden_layer is not None:
            raise ValueError(HIDDEN_SELECTOR_ERROR)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not prompts:
            return []
        self._check_images(images)
        ids = [self.encode_text(p) for p in prompts]
        sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {"temperature": 0.0}
        if seed is not None:
            sampling["seed"] = seed
        t0 = time.perf_counter()
        resp = self._complete(
            ids,
            timeout,
            max_tokens=max_new_tokens,
            logprobs=0,
            extra_body={"return_tokens_as_token_ids": True},
            **sampling,
        )
        wall = time.perf_counter() - t0
        choices = sorted(resp.choices, key=lambda c: c.index)
        if len(choices) != len(ids):
            raise RemoteModelError(f"{self.name}: sent {len(ids)} prompts, got {len(choices)} completions")
        return [self._generation(c, len(p), wall) for c, p in zip(choices, ids)]

    def _generation(self, choice, prompt_len: int, wall: float) -> Generation:
        lp = choice.logprobs
        if lp is None or lp.token_logprobs is None:
            raise RemoteModelError(f"{self.name}: the endpoint returned no token log-probs (logprobs=0)")
        logprobs = [float(x) if x is not None else 0.0 for x in lp.token_logprobs]
        tokens = list(lp.tokens or [])
        text = choice.text
        if tokens and all(t.startswith("token_id:") for t in tokens):
            token_ids = [int(t.split(":", 1)[1]) for t in tokens]
            stop = next((k for k, t in enumerate(token_ids) if t in self.eos_ids), None)
            if stop is not None:  # an engine may return the end-of-sequence token: Agent never does
                token_ids, logprobs = token_ids[:stop], logprobs[:stop]
            # An engine's streaming detokenizer may hold back a split multi-byte character: decode here.
            text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        else:  # the engine returned token strings: re-tokenize and require the same count
            token_ids = self.encode_text(choice.text)
            if len(token_ids) != len(logprobs):
                raise RemoteModelError(
                    f"{self.name}: the endpoint returned no token ids (vLLM's return_tokens_as_token_ids) "
                    f"and its text re-tokenizes to {len(token_ids)} tokens, not {len(logprobs)}"
                )
        finish = "length" if choice.finish_reason == "length" else "stop"
        return Generation(
            text=text,
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=finish,
            prompt_tokens=prompt_len,
            new_tokens=len(token_ids),
            prefill_s=wall,
            decode_s=0.0,
        )

    # ------------------------------------------------------------------ scoring
    def score(
        self,
        prompts: Sequence[str | tuple[str, str]],
        targets: Sequence[str] | str,
        *,
        images: Sequence[Sequence] | None = None,
        batch_size: int = 8,
        reuse_prefix: bool = True,
    ) -> list[ScoreResult]:
        """log p(target | prompt) from the engine's prompt log-probs (``reuse_prefix`` is the engine's
        business: vLLM's prefix caching does it)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        targets, images = _score_requests(prompts, targets, images)
        self._check_images(images)
        rows = []
        for p, t in zip(prompts, targets):
            prefix, rest = (p, "") if isinstance(p, str) else p
            context = self.encode_text(prefix) + (self.encode_text(rest) if rest else [])
            if not context:
                raise ValueError("cannot score a target after an empty prompt")
            rows.append((context, self.encode_text(t)))
        results: list[ScoreResult] = []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            resp = self._complete(
                [c + t for c, t in chunk], max_tokens=1, temperature=0.0, extra_body={"prompt_logprobs": 0}
            )
            choices = sorted(resp.choices, key=lambda c: c.index)
            for choice, (context, target) in zip(choices, chunk):
                results.append(self._target_score(choice, context, target))
        return results

    def _target_score(self, choice, context: list[int], target: list[int]) -> ScoreResult:
        extra = getattr(choice, "model_extra", None) or {}
        table = extra.get("prompt_logprobs")
        if table is None:
            raise RemoteModelError(
                f"{self.name}: the endpoint returned no prompt log-probs; gold-answer scoring needs an engine "
                "that offers them (vLLM's prompt_logprobs)"
            )
        ids = context + target
        if len(table) != len(ids):
            raise RemoteModelError(
                f"{self.name}: {len(table)} prompt log-probs for a {len(ids)}-token prompt"
            )
        values = []
        for pos in range(len(context), len(ids)):
            entry = table[pos] or {}
            hit = entry.get(str(ids[pos]))
            if hit is None:
                raise RemoteModelError(
                    f"{self.name}: prompt log-probs lack token {ids[pos]} at position {pos}"
                )
            values.append(float(hit["logprob"] if isinstance(hit, dict) else hit))
        return ScoreResult(logprob=math.fsum(values), token_logprobs=values)

    def answer_and_score(
        self,
        prompts: Sequence[tuple[str, str]],
        targets: Sequence[str],
        *,
        images: Sequence[Sequence] | None = None,
        max_new_tokens: int = 16,
    ) -> tuple[list[Generation], list[ScoreResult]]:
        """Greedy answers and log p(target | prompt): two requests (the engine caches the shared prefix)."""
        gens = self.generate([p + r for p, r in prompts], images=images, max_new_tokens=max_new_tokens)
        return gens, self.score(list(prompts), list(targets), images=images)

    def hidden_states_of(self, *args, **kwargs):
        raise ValueError(HIDDEN_SELECTOR_ERROR)
