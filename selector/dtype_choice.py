"""``dtype: fastest``: measure which dtype a model runs fastest in on this machine, once, and remember it.

Why: the fastest dtype is a fact of the machine, not of the model. On an AMD EPYC with AVX512-BF16
the small model decoded 1.5x faster in float16 than in bfloat16; on an Intel Xeon with AMX, bfloat16
was fastest and float16 the slowest; on a CPU without bfloat16 units, bfloat16 prefill is several
times slower than float32. A config that names one dtype is therefore fast on one machine only.

``fastest_dtype`` loads the model in each candidate dtype (one at a time, through
``Agent.from_pretrained``), times a prefill and a few greedy decode steps on its own KV cache, and
picks the dtype with the lowest cost for the model's *workload*: ``answer`` (the relay's large
model: a long prompt, a few answer tokens, so mostly prefill) or ``reason`` (a model that writes a
chain of thought: mostly decode). The timings are cached per machine (CPU name, torch version and
threads, device, the model's weight files) in ``~/.cache/tokenrelay/dtype_speed.json``
(``TOKENRELAY_CACHE`` moves the folder), so the measurement runs once per machine and model; delete
the file to measure again (e.g. after timings taken while something else ran). Costs within 3% are a
tie, won by float32 (then bfloat16): a model is only rounded for a speed-up the timings show.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from .agent_types import DTYPES, _resolve_device
from .io import files_fingerprint, write_json_atomic

__all__ = [
    "FASTEST",
    "WORKLOADS",
    "DtypeChoice",
    "choose_dtype",
    "dtype_cache_path",
    "fastest_dtype",
    "measure_dtype_speed",
    "report",
]

FASTEST = "fastest"
"""The dtype value that asks for a measurement instead of naming a dtype."""

Workload = Literal["answer", "reason"]
WORKLOADS: dict[str, tuple[int, int]] = {"answer": (160, 4), "reason": (96, 192)}
"""Per workload, (prompt tokens, generated tokens) whose cost decides: the relay's large model answers a
~160-token transfer prompt in a few tokens; a reasoning model writes ~200 tokens after a short prompt."""

PROMPT_TOKENS = 128
"""Length of the timed prefill (prefill time is scaled linearly to each workload's prompt)."""
DECODE_STEPS = 8
"""Greedy decode steps timed per round (their median is the per-token decode time)."""
TIE = 0.03
"""Costs within this fraction of the lowest are a tie (timing noise), won by the earlier candidate: float32
before the half-precision dtypes, so a model is never rounded for a speed-up the timings cannot show."""


_FILLER = "Subtract 17 from both sides, then divide by 3, so x = 6."


@dataclass
class DtypeChoice:
    """The chosen dtype and the timings it was chosen on."""

    dtype: str
    workload: str
    timings: dict[str, dict[str, float]]
    """Per candidate dtype: ``prefill_s`` (a PROMPT_TOKENS prefill) and ``decode_s_per_token``."""
    cached: bool
    """Whether the timings came from the cache file (measured on this machine before)."""

    def summary(self) -> str:
        parts = [
            f"{d} {t['prefill_s']:.3f} s prefill / {1000 * t['decode_s_per_token']:.1f} ms per token"
            for d, t in self.timings.items()
        ]
        source = "cached" if self.cached else "measured now"
        return f"{self.dtype} for {self.workload} ({source}: {'; '.join(parts)})"


def report(message: str) -> None:
    """Where a choice is announced by default: stderr (stdout may carry a command's results)."""
    print(message, file=sys.stderr, flush=True)


def dtype_cache_path() -> Path:
    """Where measured timings are kept: ``$TOKENRELAY_CACHE`` or ``~/.cache/tokenrelay``."""
    root = os.environ.get("TOKENRELAY_CACHE") or Path.home() / ".cache" / "tokenrelay"
    return Path(root) / "dtype_speed.json"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine_key(path: str, device: str) -> str:
    """What the timings depend on: the machine, torch, its threads, the device and the weight files."""
    local = Path(path).expanduser()
    weights = ""
    if local.is_dir():
        weights = files_fingerprint(local, ("*.safetensors", "*.bin"))
        path = str(local.resolve())
    threads = torch.get_num_threads() if device == "cpu" else 0
    # the CPU's name can be generic ("Intel(R) Xeon(R) Processor"): its vector units and cores say more
    cpu = f"{_cpu_name()} ({torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores)"
    return f"{cpu}|torch {torch.__version__}|threads {threads}|{device}|{path}|{weights}"


def choose_dtype(timings: dict[str, dict[str, float]], workload: Workload) -> str:
    """The candidate with the lowest cost for ``workload`` (prefill scaled to its prompt, plus its tokens);
    within ``TIE`` of the lowest, the first in ``timings``' order."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; expected one of {sorted(WORKLOADS)}")
    if not timings:
        raise ValueError("no timings to choose a dtype from")
    prompt, generated = WORKLOADS[workload]

    def cost(t: dict[str, float]) -> float:
        return t["prefill_s"] * prompt / PROMPT_TOKENS + t["decode_s_per_token"] * generated

    best = min(cost(t) for t in timings.values())
    return next(d for d, t in timings.items() if cost(t) <= best * (1 + TIE))


def _read_cache(path: Path) -> dict:
    """The cache file's entries; an unreadable file is only a cache: warn and measure again."""
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
        return stored
    except (OSError, ValueError) as err:
        warnings.warn(f"{path}: unreadable dtype timings ({err}); measuring again", stacklevel=3)
        return {}


@torch.inference_mode()
def _time_agent(agent, rounds: int) -> dict[str, float]:
    """Median prefill seconds of PROMPT_TOKENS tokens and median seconds per greedy decode step."""
    text = " ".join([_FILLER] * PROMPT_TOKENS)  # plain text: never an image placeholder token
    ids = agent.encode_text(text)[:PROMPT_TOKENS][None].to(agent.device)
    prefills, steps = [], []
    for r in range(rounds + 1):  # the first round warms up and is dropped
        start = time.perf_counter()
        out = agent.model(input_ids=ids, use_cache=True, **agent._last_logits_only(1))
        prefill = time.perf_counter() - start
        cache, nxt = out.cache, out.logits[:, -1:].argmax(-1)
        length = ids.shape[1]
        step_times = []
        for _ in range(DECODE_STEPS):
            start = time.perf_counter()
            positions = torch.tensor([[length]], device=agent.device)
            out = agent.model(input_ids=nxt, position_ids=positions, cache=cache, use_cache=True)
            cache, nxt = out.cache, out.logits[:, -1:].argmax(-1)
            length += 1
            step_times.append(time.perf_counter() - start)
        if r > 0:
            prefills.append(prefill)
            steps.append(statistics.median(step_times))
    return {"prefill_s": statistics.median(prefills), "decode_s_per_token": statistics.median(steps)}


def measure_dtype_speed(
    path: str, candidates: Sequence[str] = tuple(DTYPES), device: str = "cpu", rounds: int = 2
) -> dict[str, dict[str, float]]:
    """Load ``path`` in each candidate dtype in turn and time its prefill and decode (no cache)."""
    from .agents import Agent

    timings = {}
    for dtype in candidates:
        with warnings.catch_warnings():  # the slow-dtype warning is what this measures
            warnings.simplefilter("ignore")
            agent = Agent.from_pretrained(path, dtype=dtype, device=device)
        timings[dtype] = _time_agent(agent, rounds)
        del agent
    return timings


def fastest_dtype(
    path: str,
    workload: Workload,
    *,
    device: str = "cpu",
    candidates: Sequence[str] = tuple(DTYPES),
    cache_file: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> DtypeChoice:
    """The fastest dtype for ``path`` on this machine and workload, measured once and then read from the cache."""
    bad = [d for d in candidates if d not in DTYPES]
    if bad or not candidates:
        raise ValueError(f"candidate dtypes must be some of {list(DTYPES)}, got {list(candidates)}")
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; expected one of {sorted(WORKLOADS)}")
    device = str(_resolve_device(device))
    cache_file = Path(cache_file) if cache_file is not None else dtype_cache_path()
    key = _machine_key(path, device)
    from filelock import FileLock

    cache_file.parent.mkdir(parents=True, exist_ok=True)
    # one measurement per machine and model even when several processes start at once: the second waits
    with FileLock(str(cache_file.with_name(f".{cache_file.name}.lock"))):
        stored = _read_cache(cache_file)
        known = stored.get(key, {})
        missing = [d for d in candidates if d not in known]
        if missing:
            if log is not None:
                log(f"timing {path} in {', '.join(missing)} on this machine (once; cached in {cache_file})")
            known.update(measure_dtype_speed(path, missing, device=device))
            stored[key] = known
            write_json_atomic(cache_file, stored)
    timings = {d: known[d] for d in candidates}
    return DtypeChoice(choose_dtype(timings, workload), workload, timings, cached=not missing)
