"""Models behind an OpenAI-compatible engine: RemoteAgent against a real `tokenrelay serve` process.

The engine here is `tokenrelay serve` itself, whose /v1/completions serves its in-process model
the way vLLM does (token-id prompts, logprobs, return_tokens_as_token_ids, prompt_logprobs).
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from selector.agents import Agent
from selector.data import Example
from selector.relay import Relay, RelayConfig
from selector.remote import RemoteAgent, RemoteConfig, RemoteModelError
from tests.test_serve import RELAY, start_server, stop_server
from tests.tiny_models import make_causal_lm

QUESTIONS = ["What is 2 + 3?", "Let x = 3 and y = x + 4. What is y?"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_causal_lm(tmp_path_factory.mktemp("remote-models") / "lm", seed=5)


@pytest.fixture(scope="module")
def engine(model_dir, tmp_path_factory):
    """A real server process serving the tiny model as ``tokenrelay-large`` on /v1/completions."""
    config = {"relay": {**RELAY, "gate": "never", "large": str(model_dir)}}
    proc, url = start_server(tmp_path_factory.mktemp("engine"), config, "engine")
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def local(model_dir):
    return Agent.from_pretrained(model_dir, device="cpu")


@pytest.fixture(scope="module")
def remote(engine, model_dir):
    return RemoteAgent(RemoteConfig(base_url=engine, model="tokenrelay-large", tokenizer=str(model_dir)))


def test_remote_generation_equals_in_process(remote, local, one_thread):
    prompts = [local.format_chat(q) for q in QUESTIONS]
    assert [remote.format_chat(q) for q in QUESTIONS] == prompts
    want = local.generate(prompts, max_new_tokens=8)
    got = remote.generate(prompts, max_new_tokens=8)
    for g, w in zip(got, want):
        assert (g.text, g.token_ids, g.finish_reason, g.prompt_tokens) == (
            w.text,
            w.token_ids,
            w.finish_reason,
            w.prompt_tokens,
        )
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
        assert g.prefill_s > 0 and g.decode_s == 0


def test_remote_scoring_uses_prompt_logprobs(remote, local, one_thread):
    prompts = [
        (local.format_chat(QUESTIONS[0]), "Notes: 2 + 3 = 5.\nAnswer:"),
        local.format_chat(QUESTIONS[1]),
    ]
    targets = [" 5", " 7"]
    want = local.score(prompts, targets)
    got = remote.score(prompts, targets, batch_size=1)
    for g, w in zip(got, want):
        assert g.target_tokens == w.target_tokens > 0
        assert g.token_logprobs == pytest.approx(w.token_logprobs, abs=1e-4)
    gens, scores = remote.answer_and_score(prompts[:1], targets[:1], max_new_tokens=4)
    assert gens[0].text == local.generate([prompts[0][0] + prompts[0][1]], max_new_tokens=4)[0].text
    assert scores[0].logprob == pytest.approx(want[0].logprob, abs=1e-4)


def test_relay_over_remote_models_equals_in_process(remote, local, one_thread):
    config = RelayConfig(
        gate="always", selector="selfinfo", granularity="word", reason_tokens=12, answer_tokens=4
    )
    examples = [Example(str(i), q, "") for i, q in enumerate(QUESTIONS)]
    want = Relay(local, local, "selfinfo", config).run(examples, progress=False)
    got = Relay(remote, remote, "selfinfo", config).run(examples, progress=False)
    for g, w in zip(got, want):
        assert (g.path, g.answer, g.reasoning, g.transfer_text) == (
            w.path,
            w.answer,
            w.reasoning,
            w.transfer_text,
        )
    with pytest.raises(ValueError, match="hidden states"):
        remote.generate(["x"], hidden_layer=-1)

    # the scale-out case: the large model behind an engine, the small one here, run concurrently
    concurrent = RelayConfig(**{**vars(config), "gate": "agreement", "concurrent": True})
    want = Relay(local, local, "selfinfo", RelayConfig(**{**vars(config), "gate": "agreement"})).run(
        examples, progress=False
    )
    got = Relay(remote, local, "selfinfo", concurrent).run(examples, progress=False)
    assert [(g.path, g.answer) for g in got] == [(w.path, w.answer) for w in want]


def test_engine_refuses_what_it_cannot_do(engine, remote):
    client = openai.OpenAI(base_url=engine, api_key="EMPTY", max_retries=0)
    for extra, message in [
        ({"model": "tokenrelay-small"}, "not served for completions"),
        ({"logprobs": 5}, "logprobs > 0"),
        ({"prompt": [10**7]}, "token ids must be in"),
        ({"echo": True}, "echo=True is not supported"),
    ]:
        body = {"model": "tokenrelay-large", "prompt": "hi", "max_tokens": 2, **extra}
        with pytest.raises(
            openai.BadRequestError if "not served" not in message else openai.NotFoundError
        ) as err:
            client.completions.create(**body)
        assert message in err.value.body["message"]


class _NoPromptLogprobs(BaseHTTPRequestHandler):
    """An OpenAI-style completions server without vLLM's prompt_logprobs (as OpenAI's own API)."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        n = len(body["prompt"]) if isinstance(body["prompt"][0], list) else 1
        choices = [
            {
                "index": i,
                "text": "5",
                "finish_reason": "length",
                "logprobs": {"tokens": ["5"], "token_logprobs": [-0.1]},
            }
            for i in range(n)
        ]
        out = json.dumps(
            {"id": "c", "object": "text_completion", "created": 0, "model": "m", "choices": choices}
        )
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(out.encode())

    def log_message(self, *args):
        pass


def test_engine_without_prompt_logprobs_gets_a_clear_error(model_dir):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoPromptLogprobs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        agent = RemoteAgent(RemoteConfig(base_url=url, model="m", tokenizer=str(model_dir)))
        assert agent.generate(["What is 2 + 3?"], max_new_tokens=1)[0].token_ids == agent.encode_text("5")
        with pytest.raises(RemoteModelError, match="no prompt log-probs.*prompt_logprobs"):
            agent.score(["What is 2 + 3?"], " 5")
    finally:
        server.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_served_relay_with_a_remote_small_model(engine, model_dir, tmp_path):
    relay = {**RELAY, "large": str(model_dir), "small": str(model_dir)}
    endpoint = {"base_url": engine, "model": "tokenrelay-large", "timeout_s": 60}
    proc, url = start_server(tmp_path, {"relay": relay, "small_endpoint": endpoint}, "remote-small")
    try:
        client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=120)
        resp = client.chat.completions.create(
            model="tokenrelay",
            messages=[{"role": "user", "content": QUESTIONS[0]}],
            extra_body={"gate": "always"},
        )
        models = {m.id for m in client.models.list().data}
    finally:
        stop_server(proc)
    assert resp.tokenrelay["path"] == "transfer" and resp.tokenrelay["fallback"] is None
    assert resp.choices[0].message.reasoning_content
    assert "tokenrelay-small" in models  # listed, but served by the endpoint: completions go there


def test_unreachable_small_endpoint_falls_back_to_the_direct_answer(model_dir):
    """The model worker (what the server runs) with a small endpoint on a closed port."""
    from selector.serve.config import ServeConfig
    from selector.serve.worker import ChatJob, ModelWorker

    dead = RemoteConfig(base_url=f"http://127.0.0.1:{_closed_port()}/v1", model="gone", timeout_s=5)
    relay = RelayConfig(**{**RELAY, "gate": "always", "large": str(model_dir), "small": str(model_dir)})
    worker = ModelWorker(ServeConfig(relay=relay, small_endpoint=dead))
    worker.load()
    worker.start()
    try:
        jobs = [ChatJob(q, relay) for q in QUESTIONS] + [
            ChatJob(QUESTIONS[0], RelayConfig(**{**vars(relay), "gate": "never"}))
        ]
        outcomes = [worker.submit(job).result(120) for job in jobs]
    finally:
        worker.stop()
    for outcome in outcomes[:2]:
        assert outcome.fallback.startswith("small model failed") and "cannot connect" in outcome.fallback
        assert outcome.result.path == "direct" and outcome.result.reasoning is None
    assert outcomes[0].result.answer == outcomes[2].result.answer and outcomes[2].fallback is None


def test_hidden_selector_is_refused_with_a_remote_small_model(model_dir, tmp_path, capsys):
    from selector.cli import main
    from selector.scorer import ScorerConfig, TokenSelector

    selector = tmp_path / "hidden-selector"
    TokenSelector(
        ScorerConfig(hidden_layer=-1, hidden_size=32, small_model=str(model_dir), d_model=32)
    ).save_pretrained(selector)
    argv = [
        "serve",
        "--relay.small",
        str(model_dir),
        "--relay.large",
        str(model_dir),
        "--relay.selector",
        str(selector),
    ]
    argv += [
        "--small_endpoint.base_url",
        "http://127.0.0.1:9/v1",
        "--small_endpoint.model",
        "m",
        "--port",
        "0",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'hidden' selector" in err and "selfinfo" in err and "Traceback" not in err


def test_engine_benchmark_compares_in_process_and_engine(engine, model_dir, tmp_path):
    from scripts.bench_serve import main

    out = tmp_path / "engine.json"
    args = ["--engine-url", engine, "--engine-model", "tokenrelay-large", "--model-dir", str(model_dir)]
    assert main([*args, "--requests", "2", "--reason-tokens", "8", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["where"] for r in result["rows"]] == ["in-process", "engine"]
    assert result["identical_answers"] == 2
    # The real deployment: an in-process small model reasons, only the large one sits behind the engine;
    # questions from a JSONL file.
    data = tmp_path / "q.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"x = {i}. What is x?", "answer": str(i)}) + "\n"
            for i in range(3)
        )
    )
    small = ["--small-dir", str(model_dir), "--data", str(data)]
    assert main([*args, *small, "--requests", "2", "--reason-tokens", "8", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["small_dir"] == str(model_dir) and [r["questions"] for r in result["rows"]] == [2, 2]
    assert result["identical_answers"] == 2 and all(0 <= r["accuracy"] <= 1 for r in result["rows"])
