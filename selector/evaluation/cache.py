"""A persistent cache of model outputs with the wall times measured when they were computed.

``CachedAgent`` wraps an ``Agent``: ``generate`` and ``score`` answer from the cache what they
have seen (key = hash of the model's fingerprint, the kind of call, the prompt text, images and
parameters) and call the model, as one batch, only for the rest. The cache is a JSONL file written
append-only, one flushed and fsynced write per batch (hidden states go to side files, written
atomically first), so an interrupted run loses at most the batch in flight. Model fingerprints hold
the folder's weight files (size, mtime), the dtype and the device type: a GPU run never reuses CPU
timings. `tokenrelay eval` is its user.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..agents import Agent, Generation, PromptCache, ScoreResult
from ..io import atomic_path, files_fingerprint

__all__ = [
    "CACHE_FILE",
    "CachedAgent",
    "OutputCache",
    "digest",
    "image_keys",
    "model_fingerprint",
]

CACHE_FILE = "outputs.jsonl"


def digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:40]


def model_fingerprint(agent: Agent) -> str:
    """Model name, weight files (size, mtime), dtype and device type: what a cached output depends on."""
    name = str(agent.name)
    local = Path(name).expanduser()
    weights = ""
    if local.is_dir():
        name = str(local.resolve())
        weights = files_fingerprint(local, ("*.safetensors", "*.bin", "config.json"))
    dtype = getattr(getattr(agent, "config", None), "dtype", "")
    device = getattr(agent, "device", None)  # None: a model behind an endpoint (its name holds the URL)
    return f"{name}|{weights}|{dtype}|{device.type if device is not None else 'remote'}"


def image_keys(images: Sequence) -> list[str]:
    keys = []
    for im in images or []:
        if isinstance(im, (str, os.PathLike)):
            keys.append(str(Path(im).expanduser().resolve()))
        else:  # a PIL image: its pixels
            keys.append(f"{im.mode}{im.size}:" + hashlib.sha256(im.tobytes()).hexdigest()[:16])
    return keys


class OutputCache:
    """Model outputs by key: an append-only JSONL file, the last line of a key winning on load.

    ``put`` writes its entries as one flushed and fsynced write; a line cut short by a kill is
    dropped when the file is next opened. Hidden-state tensors live in ``hidden/`` side files,
    each written atomically before the line that names it.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / CACHE_FILE
        self.entries: dict[str, dict] = {}
        self.hits: Counter = Counter()
        self.misses: Counter = Counter()
        self.lines = 0
        self._load()

    @staticmethod
    def key(*parts) -> str:
        """A stable hash of JSON-able parts."""
        return digest(*parts)

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a write cut short: drop its partial line
            cut = data.rfind(b"\n") + 1
            with self.path.open("r+b") as f:
                f.truncate(cut)
            data = data[:cut]
        bad = 0
        for line in data.decode().splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            self.entries[entry["key"]] = entry
            self.lines += 1
        if bad:
            warnings.warn(f"{bad} unreadable line(s) in {self.path} were skipped", stacklevel=2)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str, kind: str | None = None) -> dict | None:
        entry = self.entries.get(key)
        if kind is not None:
            (self.hits if entry is not None else self.misses)[kind] += 1
        return entry

    def put(self, entries: Sequence[dict]) -> None:
        """Append entries (each with 'key', 'kind', 'value') in one durable write."""
        if not entries:
            return
        text = "".join(json.dumps(e) + "\n" for e in entries)
        with self.path.open("a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        for e in entries:
            self.entries[e["key"]] = e
        self.lines += len(entries)

    def save_tensor(self, key: str, tensor) -> str:
        """Write ``tensor`` under hidden/ (atomically); returns its file name."""
        from safetensors.torch import save_file

        folder = self.folder / "hidden"
        folder.mkdir(exist_ok=True)
        name = f"{key}.safetensors"
        with atomic_path(folder / name) as tmp:
            save_file({"t": tensor.contiguous().float().cpu()}, str(tmp))
        return name

    def load_tensor(self, name: str):
        from safetensors.torch import load_file

        path = self.folder / "hidden" / name
        if not path.exists():
            raise FileNotFoundError(f"cached hidden states {path} are missing: delete {self.path} to rebuild")
        return load_file(str(path))["t"]

    def stats(self) -> dict:
        return {
            "entries": len(self.entries),
            "hits": dict(self.hits),
            "misses": dict(self.misses),
        }


class CachedAgent:
    """An ``Agent`` whose ``generate`` and ``score`` answer from an ``OutputCache`` when they can.

    Everything else (tokenizer, format_chat, name, model, ...) is the wrapped agent's. Only the
    prompts not in the cache reach the model, in one call. ``hidden_layer`` is the layer whose
    states a generation miss also records (so a later trained selector finds them), when the
    call itself asks for none.
    """

    def __init__(self, agent: Agent, cache: OutputCache, hidden_layer: int | None = None):
        self.agent = agent
        self.cache = cache
        self.hidden_layer = hidden_layer
        self.model_key = model_fingerprint(agent)

    def __getattr__(self, name):
        return getattr(self.agent, name)

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
        prefix: PromptCache | None = None,
        keep_prompt: bool = False,
    ) -> list[Generation]:
        prompts = list(prompts)
        images = [list(im) for im in images] if images is not None else [[] for _ in prompts]
        params = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, **_resume_key(prefix, prompts)}
        if do_sample:
            params.update(temperature=temperature, top_p=top_p, seed=seed)
        keys = [
            self.cache.key(self.model_key, "generate", p, image_keys(im), params)
            for p, im in zip(prompts, images)
        ]
        missing, stateless = [], []  # not cached at all / cached without the asked layer's states
        for i, key in enumerate(keys):
            entry = self.cache.get(key)
            if entry is None:
                missing.append(i)
            elif hidden_layer is not None and str(hidden_layer) not in entry["value"]["hidden"]:
                stateless.append(i)
        self.cache.hits["generate"] += len(keys) - len(missing)
        self.cache.misses["generate"] += len(missing)
        self.cache.misses["hidden_states"] += len(stateless)
        if missing:
            layer = hidden_layer if hidden_layer is not None else self.hidden_layer
            gens = self.agent.generate(
                [prompts[i] for i in missing],
                images=[images[i] for i in missing],
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                hidden_layer=layer,
                **({"prefix": prefix} if params.get("resume_from") else {}),
            )
            entries = []
            for i, gen in zip(missing, gens):
                value = _generation_value(gen)
                value["hidden"] = {}
                if gen.hidden_states is not None:
                    value["hidden"][str(layer)] = self.cache.save_tensor(
                        f"{keys[i]}-L{layer}", gen.hidden_states
                    )
                entries.append(
                    {"key": keys[i], "kind": "generate", "model": self.agent.name, "params": params,
                     "prompt": prompts[i], "value": value}
                )  # fmt: skip
            self.cache.put(entries)
        if stateless:
            # A cached generation lacking this layer's states gets them from one forward over its own
            # tokens: no second generation, and its text stays as it was. A reader of states pays for
            # one such forward, as when generate computes them: its time joins decode_s (and hidden_s,
            # which a reading of the reasoning for itself leaves out) unless one was counted already.
            started = time.perf_counter()
            states = self.agent.hidden_states_of(
                [prompts[i] for i in stateless],
                [self.cache.get(keys[i])["value"]["token_ids"] for i in stateless],
                images=[images[i] for i in stateless],
                layer=hidden_layer,
            )
            spent = time.perf_counter() - started
            entries = []
            for i, h in zip(stateless, states):
                old = self.cache.get(keys[i])
                value = {**old["value"], "hidden": dict(old["value"]["hidden"])}
                value["hidden"][str(hidden_layer)] = self.cache.save_tensor(f"{keys[i]}-L{hidden_layer}", h)
                if not value.get("hidden_s"):
                    value["decode_s"], value["hidden_s"] = value["decode_s"] + spent, spent
                entries.append({**old, "value": value})
            self.cache.put(entries)
        gens = [self._generation(self.cache.get(k)["value"], hidden_layer) for k in keys]
        if keep_prompt and len(prompts) == 1 and not images[0]:
            # Its KV is computed only if a later prompt resumes from it (outside that call's timing).
            gens[0].prompt_cache = PromptCache(text=prompts[0])
        return gens

    def _generation(self, value: dict, hidden_layer: int | None) -> Generation:
        hidden = None
        if hidden_layer is not None:
            hidden = self.cache.load_tensor(value["hidden"][str(hidden_layer)])
        fields = {k: v for k, v in value.items() if k != "hidden"}
        return Generation(**fields, hidden_states=hidden)

    def answer_and_score(
        self,
        prompts: Sequence[tuple[str, str]],
        targets: Sequence[str],
        *,
        images: Sequence[Sequence] | None = None,
        max_new_tokens: int = 16,
        prefix: PromptCache | None = None,
        keep_prompt: bool = False,
    ) -> tuple[list[Generation], list[ScoreResult]]:
        """``Agent.answer_and_score`` through the cache: its entries are the ones ``generate`` and
        ``score`` write, so either call finds what the other computed. Prompts missing both share
        one prefill; a prompt missing only one of them computes only that one. A generation that
        resumed from a ``prefix`` is keyed apart (its prefill time differs; its score does not)."""
        prompts = [tuple(p) for p in prompts]
        targets = list(targets)
        images = [list(im) for im in images] if images is not None else [[] for _ in prompts]
        resume = _resume_key(prefix, [a + b for a, b in prompts])
        params = {"max_new_tokens": max_new_tokens, "do_sample": False, **resume}
        gen_keys = [
            self.cache.key(self.model_key, "generate", a + b, image_keys(im), params)
            for (a, b), im in zip(prompts, images)
        ]
        score_keys = [
            self.cache.key(self.model_key, "score", list(p), t, image_keys(im))
            for p, t, im in zip(prompts, targets, images)
        ]
        both = [i for i in range(len(prompts)) if self.cache.get(gen_keys[i]) is None
                and self.cache.get(score_keys[i]) is None]  # fmt: skip
        if both:
            t0 = time.perf_counter()
            gens, scores = self.agent.answer_and_score(
                [prompts[i] for i in both],
                [targets[i] for i in both],
                images=[images[i] for i in both],
                max_new_tokens=max_new_tokens,
                **({"prefix": prefix} if resume else {}),
            )
            # The target's own forward: the call's time beyond the (batch-shared) generation.
            seconds = max(0.0, time.perf_counter() - t0 - gens[0].prefill_s - gens[0].decode_s) / len(both)
            entries = []
            for i, gen, sc in zip(both, gens, scores):
                value = {**_generation_value(gen), "hidden": {}}
                entries.append(
                    {"key": gen_keys[i], "kind": "generate", "model": self.agent.name, "params": params,
                     "prompt": prompts[i][0] + prompts[i][1], "value": value}
                )  # fmt: skip
                entries.append(
                    {"key": score_keys[i], "kind": "score", "model": self.agent.name, "prompt": "".join(prompts[i]),
                     "target": targets[i], "value": {"logprob": sc.logprob, "token_logprobs": sc.token_logprobs,
                                                     "seconds": seconds}}
                )  # fmt: skip
            self.cache.put(entries)
        # Whatever is still missing (one of the two), the usual way; the rest comes from the cache.
        gens = self.generate(
            [a + b for a, b in prompts], images=images, max_new_tokens=max_new_tokens, prefix=prefix,
            keep_prompt=keep_prompt,
        )  # fmt: skip
        scores = self.score(prompts, targets, images=images)
        for kind in ("generate", "score"):  # computed above, though the two calls found them cached
            self.cache.hits[kind] -= len(both)
            self.cache.misses[kind] += len(both)
        return gens, scores

    def score(
        self,
        prompts: Sequence[str | tuple[str, str]],
        targets: Sequence[str] | str,
        *,
        images: Sequence[Sequence] | None = None,
        batch_size: int = 8,
        reuse_prefix: bool = True,
    ) -> list[ScoreResult]:
        prompts = [(p, "") if isinstance(p, str) else tuple(p) for p in prompts]
        targets = [targets] * len(prompts) if isinstance(targets, str) else list(targets)
        images = [list(im) for im in images] if images is not None else [[] for _ in prompts]
        keys = [
            self.cache.key(self.model_key, "score", list(p), t, image_keys(im))
            for p, t, im in zip(prompts, targets, images)
        ]
        missing = [i for i, k in enumerate(keys) if self.cache.get(k, "score") is None]
        if missing:
            t0 = time.perf_counter()
            scores = self.agent.score(
                [prompts[i] for i in missing],
                [targets[i] for i in missing],
                images=[images[i] for i in missing],
                batch_size=batch_size,
                reuse_prefix=reuse_prefix,
            )
            seconds = (time.perf_counter() - t0) / len(missing)
            self.cache.put(
                [
                    {"key": keys[i], "kind": "score", "model": self.agent.name, "prompt": "".join(prompts[i]),
                     "target": targets[i], "value": {"logprob": s.logprob, "token_logprobs": s.token_logprobs,
                                                     "seconds": seconds}}
                    for i, s in zip(missing, scores)
                ]
            )  # fmt: skip
        out = []
        for k in keys:
            v = self.cache.get(k)["value"]
            out.append(ScoreResult(logprob=v["logprob"], token_logprobs=list(v["token_logprobs"])))
        return out


def _resume_key(prefix: PromptCache | None, prompts: Sequence[str]) -> dict:
    """The cache-key part of a generation resumed from ``prefix`` (one prompt only, as the agent does)."""
    if prefix is None or len(prompts) != 1:
        return {}
    earlier = prefix.text if prefix.text else ",".join(map(str, prefix.ids.tolist()))
    return {"resume_from": digest(earlier)}


def _generation_value(gen: Generation) -> dict:
    return {
        "text": gen.text,
        "token_ids": list(gen.token_ids),
        "logprobs": list(gen.logprobs),
        "finish_reason": gen.finish_reason,
        "prompt_tokens": gen.prompt_tokens,
        "new_tokens": gen.new_tokens,
        "prefill_s": gen.prefill_s,
        "decode_s": gen.decode_s,
        "hidden_s": gen.hidden_s,
        "cached_tokens": gen.cached_tokens,
    }
