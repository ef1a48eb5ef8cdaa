"""The one thread that owns the models: a bounded queue in, batched relay runs out.

Models are not thread-safe, so HTTP handlers never touch them: they put a job on the queue and
await its future. The worker drains what is waiting, groups chat requests that share the relay's
knobs into batches of ``relay.batch_size`` (one ``Relay.run`` each), and answers every future,
with a result or an exception: a request is never dropped. When the small model fails or passes
its deadline, the batch is answered by the large model directly and the fallback is reported.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

import torch

from ..agents import Agent
from ..baselines import load_selector
from ..data import Example
from ..relay import Relay, RelayConfig, RelayResult, StageStats
from ..remote import HIDDEN_SELECTOR_ERROR, RemoteAgent
from .config import ServeConfig
from .metrics import ServeMetrics

__all__ = ["ChatJob", "ChatOutcome", "CompletionJob", "ModelWorker", "QueueFull", "SmallModelFailure"]

log = logging.getLogger("tokenrelay.serve")


class QueueFull(Exception):
    """More requests are waiting than ``max_queue``."""


class SmallModelFailure(Exception):
    """The small model raised or missed its deadline; ``seconds`` is the time it was given."""

    def __init__(self, message: str, seconds: float):
        super().__init__(message)
        self.seconds = seconds


@dataclass
class ChatJob:
    """One chat request: its question and its relay (the server's config with the request's knobs)."""

    question: str
    config: RelayConfig
    small_timeout_s: float | None = None
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.perf_counter)

    @property
    def key(self) -> tuple:
        """Requests with equal keys can share one relay batch."""
        c = self.config
        return (
            c.budget_value,
            c.budget_kind,
            c.gate,
            c.tau,
            c.answer_tokens,
            c.reason_tokens,
            self.small_timeout_s,
        )


@dataclass
class ChatOutcome:
    """What the worker hands back for a chat request."""

    result: RelayResult
    fallback: str | None
    """Why the small model's part was dropped (None: it was not)."""
    queue_s: float
    """Seconds the request waited before its batch started."""
    batch_size: int
    wall_s: float
    """Wall seconds of the batch that answered it (a fallback's retry included)."""


@dataclass
class CompletionJob:
    """A raw /v1/completions request to one in-process model (the server acting as an engine)."""

    which: str
    """'small' or 'large'."""
    prompts: list[list[int] | str]
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    logprobs: bool = False
    tokens_as_ids: bool = False
    prompt_logprobs: bool = False
    future: Future = field(default_factory=Future)


class _GuardedSmall:
    """The small agent as one relay batch sees it: any of its methods that raises, or that ends past
    the batch's small-model deadline (counted from the first call), raises SmallModelFailure."""

    def __init__(self, agent, timeout_s: float | None):
        self.agent, self.timeout_s = agent, timeout_s
        self.started: float | None = None

    def __getattr__(self, name):
        attr = getattr(self.agent, name)
        if not inspect.ismethod(attr):
            return attr

        def guarded(*args, **kwargs):
            if self.started is None:
                self.started = time.perf_counter()
            if name == "generate" and isinstance(self.agent, RemoteAgent) and self.timeout_s is not None:
                kwargs["timeout"] = max(1e-3, self.timeout_s - (time.perf_counter() - self.started))
            try:
                out = attr(*args, **kwargs)
            except Exception as err:  # any failure of the small side falls back to the direct answer
                raise SmallModelFailure(f"small model failed: {err}", self.elapsed) from err
            if self.timeout_s is not None and self.elapsed > self.timeout_s:
                raise SmallModelFailure(
                    f"small model timed out: {self.elapsed:.3f}s > deadline {self.timeout_s:g}s", self.elapsed
                )
            return out

        return guarded

    @property
    def elapsed(self) -> float:
        return 0.0 if self.started is None else time.perf_counter() - self.started


class ModelWorker:
    """Loads the models once, then answers queued jobs on its own thread."""

    def __init__(self, config: ServeConfig, metrics: ServeMetrics | None = None):
        self.config = config
        self.metrics = metrics or ServeMetrics()
        self.queue: queue.Queue = queue.Queue(maxsize=config.max_queue)
        self.small: Agent | RemoteAgent | None = None
        self.large: Agent | RemoteAgent | None = None
        self.selector = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ setup
    def load(self) -> None:
        """Load the selector and both models (local folders or endpoints); check they fit together."""
        cfg, relay = self.config, self.config.relay
        self.selector = load_selector(relay.selector, **relay.selector_kwargs())
        backbone = getattr(getattr(self.selector, "config", None), "backbone", None)
        if cfg.small_endpoint is not None and backbone == "hidden":
            raise ValueError(HIDDEN_SELECTOR_ERROR)
        local = [r for r, e in (("large", cfg.large_endpoint), ("small", cfg.small_endpoint)) if e is None]
        relay = relay.resolve_dtypes(roles=local)  # `fastest`: measured once per machine, then cached
        self.config = cfg = replace(cfg, relay=relay)
        self.large = self._agent(cfg.large_endpoint, relay.large, relay.load_kwargs("large"))
        if cfg.small_endpoint is not None or relay.small is not None:
            self.small = self._agent(cfg.small_endpoint, relay.small, relay.load_kwargs("small"))
        Relay(
            self.small, self.large, self.selector, relay
        )  # raises when the selector cannot read the small model

    @staticmethod
    def _agent(endpoint, path: str | None, load: dict):
        if endpoint is not None:
            return RemoteAgent(replace(endpoint, tokenizer=endpoint.tokenizer or path))
        return Agent.from_pretrained(path, **load)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tokenrelay-models", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then end the thread."""
        if self._thread is not None:
            self.queue.put(None)
            self._thread.join(timeout)

    def submit(self, job: ChatJob | CompletionJob) -> Future:
        try:
            self.queue.put_nowait(job)
        except queue.Full as err:
            raise QueueFull(f"{self.config.max_queue} requests are already waiting; retry later") from err
        self.metrics.queue_depth.set(self.queue.qsize())
        return job.future

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        running = True
        while running:
            jobs = [self.queue.get()]
            while len(jobs) < 4 * self.config.relay.batch_size:
                try:
                    jobs.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if None in jobs:
                running = False
                jobs = [j for j in jobs if j is not None]
            self.metrics.queue_depth.set(self.queue.qsize())
            groups: dict[tuple, list[ChatJob]] = {}
            for job in jobs:
                if isinstance(job, CompletionJob):
                    self._guard([job], self._run_completion)
                else:
                    groups.setdefault(job.key, []).append(job)
            size = self.config.relay.batch_size
            for members in groups.values():
                for start in range(0, len(members), size):
                    self._guard(members[start : start + size], self._run_chat)

    def _guard(self, jobs: list, run) -> None:
        """Run ``jobs``; whatever happens, every future ends with a result or the error."""
        try:
            run(jobs)
        except Exception as err:
            log.exception("request failed")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(err)

    def _run_chat(self, jobs: list[ChatJob]) -> None:
        t0 = time.perf_counter()
        cfg, timeout = jobs[0].config, jobs[0].small_timeout_s
        examples = [Example(id=str(i), question=j.question, answer="") for i, j in enumerate(jobs)]
        small = _GuardedSmall(self.small, timeout) if cfg.gate != "never" else None
        fallback, lost = None, 0.0
        try:
            results = Relay(small, self.large, self.selector, cfg).run(examples, progress=False)
        except SmallModelFailure as err:
            fallback, lost = str(err), err.seconds
            direct = replace(cfg, gate="never")
            results = Relay(None, self.large, self.selector, direct).run(examples, progress=False)
            for r in results:
                r.stages["small_reasoning"] = StageStats(lost, 0, 0)
                r.latency_s += lost
        wall = time.perf_counter() - t0
        self.metrics.batch_size.observe(len(jobs))
        for job, result in zip(jobs, results):
            self.metrics.record_result(result, fallback is not None)
            outcome = ChatOutcome(result, fallback, t0 - job.arrived, len(jobs), wall)
            job.future.set_result(outcome)

    def _run_completion(self, jobs: list[CompletionJob]) -> None:
        job = jobs[0]
        agent = self.small if job.which == "small" else self.large
        ids = [
            torch.as_tensor(p if isinstance(p, list) else agent.encode_text(p).tolist()) for p in job.prompts
        ]
        if any(len(x) == 0 for x in ids):
            raise ValueError("a prompt is empty")
        choices = []
        size = self.config.relay.batch_size
        sampling = {
            "do_sample": job.temperature > 0,
            "temperature": job.temperature or 1.0,
            "top_p": job.top_p,
        }
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            gens, _ = agent._generate_encoded(
                [{"input_ids": x} for x in chunk], job.max_tokens, seed=job.seed, **sampling
            )
            for k, (x, gen) in enumerate(zip(chunk, gens)):
                choice = {
                    "index": start + k,
                    "text": gen.text,
                    "finish_reason": gen.finish_reason,
                    "logprobs": None,
                }
                if job.logprobs:
                    tok = agent.tokenizer
                    names = [f"token_id:{t}" if job.tokens_as_ids else tok.decode([t]) for t in gen.token_ids]
                    choice["logprobs"] = {
                        "tokens": names,
                        "token_logprobs": gen.logprobs,
                        "top_logprobs": None,
                    }
                if job.prompt_logprobs:
                    choice["prompt_logprobs"] = _prompt_logprobs(agent, x)
                choices.append((choice, len(x), gen.new_tokens))
        job.future.set_result(choices)


@torch.inference_mode()
def _prompt_logprobs(agent: Agent, ids: torch.Tensor) -> list[dict | None]:
    """vLLM's prompt_logprobs=0 shape: None for the first token, then {token_id: {logprob, rank, decoded_token}}."""
    logits = agent.model(input_ids=ids[None].to(agent.device)).logits[0, :-1].float().log_softmax(-1)
    target = ids[1:].to(logits.device)
    chosen = logits.gather(-1, target[:, None])[:, 0]
    ranks = (logits > chosen[:, None]).sum(-1) + 1
    table: list[dict | None] = [None]
    for t, lp, rank in zip(target.tolist(), chosen.tolist(), ranks.tolist()):
        table.append({str(t): {"logprob": lp, "rank": rank, "decoded_token": agent.tokenizer.decode([t])}})
    return table
