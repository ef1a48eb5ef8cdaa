"""`tokenrelay serve`: a real server process on a free port, called with the official openai client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.tiny_models import make_causal_lm

QUESTION = "What is 2 + 3?"
RELAY = {
    "selector": "selfinfo",
    "granularity": "word",
    "gate": "agreement",
    "reason_tokens": 12,
    "answer_tokens": 4,
    "batch_size": 4,
    "device": "cpu",
}


def start_server(tmp: Path, config: dict, name: str = "serve") -> tuple[subprocess.Popen, str]:
    """Start `tokenrelay serve` on a free port with ``config`` (YAML); returns the process and its /v1 URL."""
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"port": 0, **config}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    log = (tmp / f"{name}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "selector.cli", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
        cwd=Path(__file__).parent.parent,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(180)
    if not lines or "http://" not in lines[0]:
        proc.kill()
        raise RuntimeError(f"server did not start: {lines} {(tmp / f'{name}.log').read_text()[-2000:]}")
    url = lines[0].split()[-1]
    for _ in range(100):
        try:
            if httpx.get(url.removesuffix("/v1") + "/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server never became healthy")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-models")
    return make_causal_lm(root / "small", seed=3), make_causal_lm(root / "large", seed=4, hidden=48)


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    small, large = models
    proc, url = start_server(
        tmp_path_factory.mktemp("serve"), {"relay": {**RELAY, "small": str(small), "large": str(large)}}
    )
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server, api_key="EMPTY", max_retries=0, timeout=120)


def ask(client, question: str = QUESTION, **knobs):
    return client.chat.completions.create(
        model="tokenrelay", messages=[{"role": "user", "content": question}], extra_body=knobs or None
    )


def test_models_and_health(client, server):
    ids = {m.id for m in client.models.list().data}
    assert ids == {"tokenrelay", "tokenrelay-small", "tokenrelay-large"}
    health = httpx.get(server.removesuffix("/v1") + "/health").json()
    assert health["status"] == "ok" and health["models"]["small"].endswith("small")


def test_plain_answer_carries_the_relay_report(client):
    resp = ask(client, gate="always")
    message = resp.choices[0].message
    report = resp.tokenrelay
    assert message.role == "assistant" and isinstance(message.content, str)
    assert isinstance(message.reasoning_content, str) and message.reasoning_content
    assert report["path"] == "transfer" and report["fallback"] is None and report["gate"] == "always"
    assert report["transfer_text"] is not None
    assert 0 <= report["transfer_tokens"] <= report["reasoning_tokens"] and report["reasoning_tokens"] > 0
    assert {"small_reasoning", "selection", "large_prefill", "large_decode"} <= set(report["stages"])
    assert all(s["seconds"] >= 0 for s in report["stages"].values())
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0


def test_streamed_answer_matches_the_plain_one(client):
    plain = ask(client, gate="always")
    chunks = list(
        client.chat.completions.create(
            model="tokenrelay",
            messages=[{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"gate": "always"},
        )
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks)
    assert content == plain.choices[0].message.content
    assert reasoning == plain.choices[0].message.reasoning_content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].tokenrelay["transfer_text"] == plain.tokenrelay["transfer_text"]
    assert chunks[-1].usage.total_tokens == plain.usage.total_tokens


def test_per_request_budget_and_gate(client):
    never = ask(client, gate="never")
    assert never.tokenrelay["path"] == "direct" and never.choices[0].message.reasoning_content is None
    assert "small_reasoning" not in never.tokenrelay["stages"]
    full = ask(client, gate="always", budget=1.0, budget_kind="ratio")
    assert full.tokenrelay["transfer_tokens"] == full.tokenrelay["reasoning_tokens"] > 2
    few = ask(client, gate="always", budget=2, budget_kind="tokens")
    assert few.tokenrelay["budget_kind"] == "tokens" and few.tokenrelay["transfer_tokens"] <= 2
    assert few.tokenrelay["reasoning_tokens"] == full.tokenrelay["reasoning_tokens"]
    sure = ask(client, gate="confidence", tau=0.0)  # nothing is under probability 0: answered directly
    assert sure.tokenrelay["path"] == "direct" and sure.tokenrelay["tau"] == 0.0
    assert sure.choices[0].message.content == never.choices[0].message.content
    # small_tau 1.0: transfer only if the small model is certain of the answer its reasoning states
    strict = ask(client, gate="small_confidence", small_tau=1.0)
    report, p = strict.tokenrelay, strict.tokenrelay["small_prob"]
    assert report["small_tau"] == 1.0 and "small_reasoning" in report["stages"]
    assert p is None or 0 < p <= 1
    assert report["path"] == ("transfer" if p is not None and p >= 1.0 else "direct")
    if report["path"] == "direct":
        assert strict.choices[0].message.content == never.choices[0].message.content


def test_small_model_past_its_deadline_falls_back_to_the_direct_answer(client, server):
    direct = ask(client, gate="never").choices[0].message.content
    resp = ask(client, gate="always", small_timeout_s=1e-6)
    report = resp.tokenrelay
    assert report["fallback"].startswith("small model timed out")
    assert report["path"] == "direct" and report["transfer_text"] is None
    assert resp.choices[0].message.content == direct
    metrics = httpx.get(server.removesuffix("/v1") + "/metrics").text
    line = next(
        x for x in metrics.splitlines() if x.startswith('tokenrelay_relay_path_total{path="fallback"}')
    )
    assert float(line.split()[-1]) >= 1
    assert "tokenrelay_stage_seconds_bucket" in metrics and "tokenrelay_transferred_tokens_total" in metrics


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"messages": [{"role": "user", "content": "hi"}], "gate": "sometimes"}, 400, "unknown gate"),
        ({"messages": [{"role": "user", "content": "hi"}], "budget": 1.5}, 400, "ratio budget"),
        ({"messages": [{"role": "user", "content": "hi"}], "tau": 2}, 400, "tau must be in [0, 1]"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "small_tau": -1},
            400,
            "small_tau must be in [0, 1]",
        ),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
        ({"messages": [{"role": "system", "content": "be brief"}]}, 400, "no user message"),
        ({"messages": [{"role": "user", "content": "  "}]}, 400, "empty"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n must be 1"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-9"}, 404, "'gpt-9' is not served"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            400,
            "'image_url' is not supported",
        ),
    ],
)
def test_malformed_requests_get_4xx_with_a_clear_message(client, body, status, message):
    body = {"model": "tokenrelay", **body}
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(
            model=body.pop("model"), messages=body.pop("messages"), extra_body=body or None
        )
    assert err.value.status_code == status
    assert message in err.value.body["message"]


def test_invalid_json_and_unknown_route(server):
    resp = httpx.post(
        server + "/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]["message"]
    assert httpx.post(server + "/completions", json={"model": "tokenrelay", "prompt": "x"}).status_code == 400


def test_concurrent_clients_are_all_answered(client, server):
    questions = [f"What is {i} + {i + 1}?" for i in range(6)]
    answers: dict[int, object] = {}

    def one(i: int) -> None:
        answers[i] = ask(client, questions[i], gate="always")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(answers) == list(range(len(questions)))
    assert all(
        a.tokenrelay["path"] == "transfer" and a.choices[0].message.content is not None
        for a in answers.values()
    )
    assert all(1 <= a.tokenrelay["batch_size"] <= 4 for a in answers.values())
    metrics = httpx.get(server.removesuffix("/v1") + "/metrics").text
    ok = [
        x for x in metrics.splitlines() if x.startswith("tokenrelay_requests_total") and 'status="200"' in x
    ]
    assert sum(float(x.split()[-1]) for x in ok if "/v1/chat/completions" in x) >= len(questions)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--relay.large", "/no/large", "--relay.gate", "always"], "needs a small model"),
        (["--relay.large", "/no/large", "--relay.gate", "never", "--port", "70000"], "port must be"),
        (["--relay.small", "/s", "--relay.large", "/l", "--relay.selector", "oracle"], "oracle selector"),
        (["--relay.small", "/s", "--relay.large", "/no/large"], "/no/large"),
    ],
)
def test_bad_config_is_one_clear_line(argv, message, capsys):
    from selector.cli import main

    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_load_benchmark_counts_every_request(server, tmp_path, capsys):
    from scripts.bench_serve import main

    out = tmp_path / "bench.json"
    assert (
        main(
            ["--url", server, "--clients", "1", "3", "--requests", "3", "--gate", "never", "--out", str(out)]
        )
        == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(r["clients"], r["answered"], r["lost"]) for r in rows] == [(1, 3, 0), (3, 3, 0)]
    assert all(r["p50_s"] <= r["p95_s"] and r["throughput_rps"] > 0 for r in rows)
    assert "| clients |" in capsys.readouterr().out
