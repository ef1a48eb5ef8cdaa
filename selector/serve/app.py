"""The HTTP side of `tokenrelay serve`: OpenAI-compatible routes over the model worker.

- ``POST /v1/chat/completions``: the relay answers the last user message (streamed or not). Extra
  body fields ``budget``, ``budget_kind``, ``gate``, ``tau``, ``small_tau`` and ``small_timeout_s`` override the
  server's relay for that request. The message carries the answer in ``content`` and the small
  model's reasoning in ``reasoning_content``; a ``tokenrelay`` object says what the relay did.
- ``POST /v1/completions``: raw generation by an in-process model (``NAME-small`` / ``NAME-large``),
  with token-id prompts, ``logprobs=0``, ``return_tokens_as_token_ids`` and ``prompt_logprobs=0``
  as vLLM has them, so this server can be another relay's remote model.
- ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from ..remote import RemoteAgent, RemoteModelError
from .config import ServeConfig
from .worker import ChatJob, ChatOutcome, CompletionJob, ModelWorker, QueueFull

__all__ = ["create_app"]


class ApiError(Exception):
    """An error answered as OpenAI's ``{"error": {...}}`` with an HTTP status."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    """Fields of OpenAI's chat request that the relay reads, plus its own knobs; others are ignored."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: dict | None = None
    n: int = 1
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    budget: float | None = None
    budget_kind: str | None = None
    gate: str | None = None
    tau: float | None = None
    small_tau: float | None = None
    small_timeout_s: float | None = Field(None, gt=0)


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None
    logprobs: int | None = Field(None, ge=0)
    echo: bool = False
    n: int = 1
    stream: bool = False
    return_tokens_as_token_ids: bool = False
    prompt_logprobs: int | None = Field(None, ge=0)


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return JSONResponse(body, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return "the request body is not valid JSON"
        loc = ".".join(str(x) for x in err.get("loc", ())[1:]) or "body"
        parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts[:5]) or "invalid request"


def _text(content: str | list[ContentPart] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.type != "text":
            raise ApiError(
                400, f"content part of type {part.type!r} is not supported: send text", param="messages"
            )
        texts.append(part.text or "")
    return "".join(texts)


def create_app(config: ServeConfig, worker: ModelWorker) -> FastAPI:
    """The FastAPI app; ``worker`` is loaded already and is started and stopped with the app."""
    metrics = worker.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        await asyncio.to_thread(worker.stop)

    app = FastAPI(title="tokenrelay", lifespan=lifespan)
    created = int(time.time())

    @app.middleware("http")
    async def count(request: Request, call_next):
        response = await call_next(request)
        metrics.requests.labels(endpoint=request.url.path, status=str(response.status_code)).inc()
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        return _error(400, _validation_message(exc))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.message, exc.kind, exc.param)

    @app.get("/health")
    async def health() -> dict:
        if not worker.alive:
            raise ApiError(503, "the model worker is not running", "server_error")
        return {"status": "ok", "queue": worker.queue.qsize(), "models": _model_names(worker)}

    @app.get("/v1/models")
    async def models() -> dict:
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "tokenrelay",
                "tokenrelay_role": role,
            }
            for name, role in config.model_ids.items()
            if role == "relay" or getattr(worker, role) is not None
        ]
        return {"object": "list", "data": data}

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        job = _chat_job(config, worker, req)
        started = time.perf_counter()
        outcome: ChatOutcome = await _wait(worker, job)
        metrics.request_seconds.observe(time.perf_counter() - started)
        rid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if req.stream:
            return StreamingResponse(
                _stream(rid, now, req.model, outcome, req, job), media_type="text/event-stream"
            )
        return {
            "id": rid,
            "object": "chat.completion",
            "created": now,
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": _answer(outcome),
                        "reasoning_content": outcome.result.reasoning,
                    },
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": _usage(outcome),
            "tokenrelay": _relay_block(outcome, job),
        }

    @app.post("/v1/completions")
    async def complete(req: CompletionRequest):
        job = _completion_job(config, worker, req)
        started = time.perf_counter()
        choices = await _wait(worker, job)
        metrics.request_seconds.observe(time.perf_counter() - started)
        prompt_tokens = sum(n for _, n, _ in choices)
        new_tokens = sum(n for _, _, n in choices)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [c for c, _, _ in choices],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": new_tokens,
                "total_tokens": prompt_tokens + new_tokens,
            },
        }

    return app


def _model_names(worker: ModelWorker) -> dict:
    return {
        role: (agent.name if agent is not None else None)
        for role, agent in (("small", worker.small), ("large", worker.large))
    }


async def _wait(worker: ModelWorker, job):
    try:
        future = worker.submit(job)
    except QueueFull as err:
        raise ApiError(503, str(err), "server_busy") from err
    try:
        return await asyncio.wrap_future(future)
    except RemoteModelError as err:
        raise ApiError(502, str(err), "upstream_error") from err
    except Exception as err:  # the request was valid (checked before queueing): a server-side failure
        raise ApiError(500, f"{type(err).__name__}: {err}", "server_error") from err


def _chat_job(config: ServeConfig, worker: ModelWorker, req: ChatRequest) -> ChatJob:
    if req.model != config.model_name:
        raise ApiError(
            404, f"model {req.model!r} is not served here: use {config.model_name!r}", param="model"
        )
    if req.n != 1:
        raise ApiError(400, "n must be 1: the relay gives one answer per request", param="n")
    users = [m for m in req.messages if m.role == "user"]
    if not users:
        raise ApiError(400, "messages hold no user message: the relay answers the last one", param="messages")
    question = _text(users[-1].content).strip()
    if not question:
        raise ApiError(400, "the last user message is empty", param="messages")
    overrides: dict[str, Any] = {
        k: getattr(req, k)
        for k in ("budget", "budget_kind", "gate", "tau", "small_tau")
        if getattr(req, k) is not None
    }
    answer_tokens = req.max_completion_tokens or req.max_tokens
    if answer_tokens is not None:
        overrides["answer_tokens"] = answer_tokens
    try:
        relay = replace(config.relay, **overrides)
    except (ValueError, TypeError) as err:
        raise ApiError(400, str(err)) from err
    if relay.gate != "never" and worker.small is None:
        raise ApiError(
            400, f"gate {relay.gate!r} needs a small model, and this server has none", param="gate"
        )
    timeout = req.small_timeout_s if req.small_timeout_s is not None else config.small_timeout_s
    return ChatJob(question=question, config=relay, small_timeout_s=timeout)


def _completion_job(config: ServeConfig, worker: ModelWorker, req: CompletionRequest) -> CompletionJob:
    role = config.model_ids.get(req.model)
    if role == "relay":
        raise ApiError(400, f"{req.model!r} is the relay: call /v1/chat/completions", param="model")
    agent = getattr(worker, role) if role else None
    if not config.raw_completions or agent is None:
        served = [n for n, r in config.model_ids.items() if r != "relay" and getattr(worker, r) is not None]
        raise ApiError(
            404, f"model {req.model!r} is not served for completions here (served: {served})", param="model"
        )
    if isinstance(agent, RemoteAgent):
        raise ApiError(
            400, f"{req.model!r} runs behind {agent.config.base_url}: call that endpoint", param="model"
        )
    for name, ok in (("n", req.n == 1), ("echo", not req.echo), ("stream", not req.stream)):
        if not ok:
            raise ApiError(
                400, f"{name}={getattr(req, name)!r} is not supported by this endpoint", param=name
            )
    for name in ("logprobs", "prompt_logprobs"):
        if getattr(req, name) not in (None, 0):
            raise ApiError(400, f"{name} > 0 (top alternatives) is not supported: use 0", param=name)
    prompts = req.prompt
    if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
        prompts = [prompts]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ApiError(400, "prompt is empty", param="prompt")
    vocab = len(agent.tokenizer)
    for p in prompts:
        if isinstance(p, list) and any(not 0 <= t < vocab for t in p):
            raise ApiError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
    return CompletionJob(
        which=role,
        prompts=list(prompts),
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        logprobs=req.logprobs is not None,
        tokens_as_ids=req.return_tokens_as_token_ids,
        prompt_logprobs=req.prompt_logprobs is not None,
    )


def _answer(outcome: ChatOutcome) -> str:
    r = outcome.result
    return r.answer if r.answer is not None else r.output.strip()


def _usage(outcome: ChatOutcome) -> dict:
    stages = outcome.result.stages.values()
    prompt = sum(s.prompt_tokens for s in stages)
    new = sum(s.new_tokens for s in stages)
    return {"prompt_tokens": prompt, "completion_tokens": new, "total_tokens": prompt + new}


def _relay_block(outcome: ChatOutcome, job: ChatJob) -> dict:
    r, cfg = outcome.result, job.config
    return {
        "path": r.path,
        "fallback": outcome.fallback,
        "gate": cfg.gate,
        "tau": cfg.tau,
        "small_tau": cfg.small_tau,
        "budget": cfg.budget_value,
        "budget_kind": cfg.budget_kind,
        "selector": cfg.selector,
        "direct_answer": r.direct_answer,
        "direct_prob": r.direct_prob,
        "small_answer": r.small_answer,
        "small_prob": r.small_prob,
        "transfer_text": r.transfer_text,
        "transfer_tokens": r.transfer_tokens,
        "reasoning_tokens": r.reasoning_tokens,
        "stages": {name: asdict(stats) for name, stats in r.stages.items()},
        "latency_s": r.latency_s,
        "queue_s": outcome.queue_s,
        "batch_size": outcome.batch_size,
        "batch_wall_s": outcome.wall_s,
    }


def _stream(rid: str, created: int, model: str, outcome: ChatOutcome, req: ChatRequest, job: ChatJob):
    """The finished answer as server-sent chunks: role, reasoning, content, then the relay's report."""

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        body = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    if outcome.result.reasoning:
        yield chunk({"reasoning_content": outcome.result.reasoning})
    yield chunk({"content": _answer(outcome)})
    include_usage = bool((req.stream_options or {}).get("include_usage"))
    extra = {"usage": _usage(outcome)} if include_usage else {}
    yield chunk({}, "stop", tokenrelay=_relay_block(outcome, job), **extra)
    yield "data: [DONE]\n\n"
