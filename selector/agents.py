"""Model agents: one wrapper that drives a Hugging Face causal LM or image-text-to-text model.

An agent formats prompts (chat template when the model has one, a plain template otherwise),
generates batched with per-token log-probabilities and stage timings, and scores target strings
given prompts, reusing the KV cache of a shared prefix (the labeling case: one question, many
reasoning variants; ``selector.prefix_cache``). Its config and result types are in
``selector.agent_types`` and re-exported here.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from .agent_types import (
    DTYPES,
    AgentConfig,
    Generation,
    ScoreResult,
    TokenTimer,
    _fast_on_this_cpu,
    _image_lists,
    _load_image,
    _looks_local,
    _resolve_device,
    _score_requests,
)
from .prefix_cache import PrefixTreeScoring, PromptCache, cut_cache, one_text_prompt

__all__ = ["DTYPES", "Agent", "AgentConfig", "Generation", "PromptCache", "ScoreResult", "TokenTimer"]


class Agent(PrefixTreeScoring):
    """A small or large model: prompt formatting, batched generation and scoring."""

    supports_prompt_cache = True
    """``generate``/``answer_and_score`` take ``prefix`` and ``keep_prompt`` (a remote engine does not)."""

    def __init__(self, model, tokenizer, processor=None, config: AgentConfig | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.processor = processor
        self.config = config or AgentConfig(path=getattr(model, "name_or_path", "model") or "model")
        self.supports_images = processor is not None and hasattr(processor, "image_processor")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        use_chat = self.config.chat_template
        has_template = bool(getattr(self._template_owner, "chat_template", None))
        if use_chat and not has_template:
            raise ValueError(f"{self.name}: chat_template=True but the tokenizer has no chat template")
        self.uses_chat_template = has_template if use_chat is None else use_chat
        self.eos_ids = self._eos_ids()
        self._takes_logits_to_keep: bool | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> Agent:
        """Load a causal LM or an image-text-to-text model (by its config) from a folder or hub id."""
        import transformers
        from transformers import (
            AutoConfig,
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        config = AgentConfig(path=str(path), **kwargs)
        path = str(path)
        local = Path(path).expanduser()
        if local.exists():
            if not local.is_dir() or not (local / "config.json").exists():
                raise FileNotFoundError(f"model folder {path!r} has no config.json: not a Hugging Face model")
            path = str(local)
        elif _looks_local(path):
            raise FileNotFoundError(f"model folder {path!r} does not exist")
        transformers.utils.logging.disable_progress_bar()
        common = {"trust_remote_code": config.trust_remote_code}
        try:
            hf_config = AutoConfig.from_pretrained(path, **common)
        except OSError as err:
            raise FileNotFoundError(
                f"could not load model {path!r}: not a local folder, and the hub could not provide it ({err})"
            ) from err
        vision = type(hf_config) in AutoModelForImageTextToText._model_mapping
        load = {"device_map": config.device_map, **common}
        load["dtype"] = "auto" if config.dtype == "auto" else DTYPES[config.dtype]
        if vision:
            model = AutoModelForImageTextToText.from_pretrained(path, **load)
            processor = AutoProcessor.from_pretrained(path, **common)
            tokenizer = processor.tokenizer
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **load)
            tokenizer = AutoTokenizer.from_pretrained(path, **common)
            processor = None
        if config.device_map is None:
            model.to(_resolve_device(config.device))
        agent = cls(model, tokenizer, processor, config)
        if agent.device.type == "cpu" and not _fast_on_this_cpu(model.dtype):
            warnings.warn(
                f"{path}: {model.dtype} weights on a CPU without {model.dtype} units (dtype={config.dtype!r}) "
                "prefill several times slower than float32 (decoding may still be faster: "
                "python -m scripts.bench_dtype measures both); pass dtype float32 unless you measured otherwise",
                stacklevel=2,
            )
        return agent

    # ------------------------------------------------------------------ properties
    @property
    def name(self) -> str:
        return str(self.config.path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def _template_owner(self):
        return self.processor if self.supports_images else self.tokenizer

    @property
    def image_token(self) -> str:
        token = getattr(self.processor, "image_token", None) or getattr(self.tokenizer, "image_token", None)
        if not token:
            raise ValueError(f"{self.name}: the processor defines no image token")
        return token

    @property
    def num_hidden_layers(self) -> int:
        cfg = self.model.config
        cfg = getattr(cfg, "text_config", None) or cfg
        return cfg.num_hidden_layers

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    # ------------------------------------------------------------------ prompts
    def format_chat(self, user: str, *, n_images: int = 0, system: str | None = None) -> str:
        """Render one user turn (and the assistant's turn start) as prompt text."""
        if n_images and not self.supports_images:
            raise ValueError(f"{self.name} is a text-only model: it cannot take an image")
        system = system if system is not None else self.config.system_prompt
        if self.uses_chat_template:
            messages = [{"role": "system", "content": system}] if system else []
            if self.supports_images:
                content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": user}]
                messages.append({"role": "user", "content": content})
            else:
                messages.append({"role": "user", "content": user})
            return self._template_owner.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        images = "".join(f"{self.image_token}\n" for _ in range(n_images))
        head = f"{system}\n\n" if system else ""
        bos = self.tokenizer.bos_token or ""
        return f"{bos}{head}{images}{user}\n\n"

    def _check_images(self, images: Sequence) -> list:
        images = list(images or [])
        if images and not self.supports_images:
            raise ValueError(f"{self.name} is a text-only model: it cannot take an image")
        return [_load_image(im) for im in images]

    def encode_prompt(self, text: str, images: Sequence) -> dict[str, torch.Tensor]:
        """Token ids (1-D) of a prompt, with image features expanded when there are images."""
        images = self._check_images(images)
        if images:
            enc = self.processor(text=[text], images=images, return_tensors="pt")
            enc = {k: v for k, v in enc.items() if k != "attention_mask"}
            enc["input_ids"] = enc["input_ids"][0]
            return enc
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        return {"input_ids": ids}

    def encode_text(self, text: str) -> torch.Tensor:
        """Token ids (1-D) of a piece of text, no special tokens: how ``score`` tokenizes each piece."""
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
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
        """Generate for a batch of formatted prompts (left padding), greedy unless ``do_sample``.

        ``images`` holds one list of images per prompt (image prompts need the model's image
        tokens in their text: ``format_chat(..., n_images=k)`` puts them there). For one text-only
        prompt, ``prefix`` lets it resume from an earlier prompt's KV cache where their tokens agree,
        and ``keep_prompt`` returns its own (``Generation.prompt_cache``) for a later prompt.
        """
        if not prompts:
            return []
        images = _image_lists(prompts, images)
        encoded = [self.encode_prompt(p, im) for p, im in zip(prompts, images)]
        results, _ = self._generate_encoded(
            encoded, max_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p, seed=seed,
            hidden_layer=hidden_layer, prefix=prefix, keep_prompt=keep_prompt,
        )  # fmt: skip
        return results

    def _generate_encoded(
        self,
        encoded: list[dict[str, torch.Tensor]],
        max_new_tokens: int,
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        hidden_layer: int | None = None,
        prefix: PromptCache | None = None,
        keep_prompt: bool = False,
    ):
        """Generate for encoded prompts; also returns (batch, raw output) for callers that reuse the KV."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        batch = self._left_padded(encoded)
        prompt_lens = [int(n) for n in batch["attention_mask"].sum(1)]
        if seed is not None:
            torch.manual_seed(seed)
        kv, reused = self._resume_from(prefix, encoded)  # before the clock: the earlier prompt paid for it
        resume = {"cache": kv} if kv is not None else {}
        timer = TokenTimer()
        sampling = {"do_sample": do_sample}
        if do_sample:
            sampling.update(temperature=temperature, top_p=top_p)
        else:
            sampling.update(temperature=None, top_p=None, top_k=None)
        out = self.model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            min_new_tokens=1,
            return_dict_in_generate=True,
            output_logits=True,
            stopping_criteria=[timer],
            pad_token_id=self.tokenizer.pad_token_id,
            **sampling,
            **resume,
        )
        end = time.perf_counter()
        first = timer.first or end
        prefill_s, decode_s = first - timer.start, end - first
        width = batch["input_ids"].shape[1]
        new = out.sequences[:, width:]
        # step by step: stacking (batch, steps, vocab) logits and their log-softmax held three copies
        # of ~1 GB each for 8 x 256 steps of a 150k vocabulary, which put two evals past 24 GB
        logprobs = torch.stack(
            [
                torch.log_softmax(step.float(), dim=-1).gather(-1, new[:, t, None])[:, 0]
                for t, step in enumerate(out.logits)
            ],
            dim=1,
        )
        results = []
        for i in range(len(encoded)):
            ids = new[i].tolist()
            stop = next((t for t, tok in enumerate(ids) if tok in self.eos_ids), None)
            n = len(ids) if stop is None else stop
            results.append(
                Generation(
                    text=self.tokenizer.decode(ids[:n], skip_special_tokens=True),
                    token_ids=ids[:n],
                    logprobs=[float(x) for x in logprobs[i, :n]],
                    finish_reason="length" if stop is None else "stop",
                    prompt_tokens=prompt_lens[i],
                    new_tokens=n,
                    prefill_s=prefill_s,
                    decode_s=decode_s,
                    cached_tokens=reused,
                )
            )
        if keep_prompt and one_text_prompt(encoded) and getattr(out.cache, "is_croppable", False):
            kv = cut_cache(copy.deepcopy(out.cache), width)  # a copy: callers crop and extend the original
            results[0].prompt_cache = PromptCache(text="", ids=batch["input_ids"][0], kv=kv)
        if hidden_layer is not None:
            started = time.perf_counter()
            states = self._hidden_states(batch, new, [r.new_tokens for r in results], hidden_layer)
            spent = time.perf_counter() - started  # a second forward the caller asked for: part of the decode
            for r, h in zip(results, states):
                r.hidden_states, r.decode_s, r.hidden_s = h, r.decode_s + spent, spent
        return results, (batch, out)

    @torch.inference_mode()
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
        """Greedy answers to ``(prefix, rest)`` prompts and log p(target | prompt), sharing one prefill.

                Equal to ``generate([prefix + rest])`` and ``score([(prefix, rest)], targets)`` (what an
                evaluation asks of every prompt) at little more than the generation's cost: the target is
                run on the generation's own KV cache, cropped back to the prompt (``prefix`` and ``keep_prompt``
        as in ``generate``). A prompt whose pieces
                tokenize differently from its whole text, an image prompt, or a model whose cache cannot be
                cropped, is scored by ``score`` instead, so the numbers never depend on which path ran.
        """
        prompts = [tuple(p) for p in prompts]
        targets, images = _score_requests(prompts, targets, images)
        if not prompts:
            return [], []
        encoded = [self.encode_prompt(a + b, im) for (a, b), im in zip(prompts, images)]
        gens, (batch, out) = self._generate_encoded(
            encoded, max_new_tokens, prefix=prefix, keep_prompt=keep_prompt
        )
        shared = [
            not im and torch.equal(enc["input_ids"], torch.cat([self.encode_text(a), self.encode_text(b)]))
            for (a, b), im, enc in zip(prompts, images, encoded)
        ]
        scores: list[ScoreResult | None] = [None] * len(prompts)
        if any(shared) and getattr(out.cache, "is_croppable", False):
            rows = [i for i, ok in enumerate(shared) if ok]
            for i, res in zip(
                rows, self._score_after_generation(batch, out, rows, [targets[i] for i in rows])
            ):
                scores[i] = res
        rest = [i for i, res in enumerate(scores) if res is None]
        if rest:
            for i, res in zip(rest, self.score([prompts[i] for i in rest], [targets[i] for i in rest],
                                               images=[images[i] for i in rest])):  # fmt: skip
                scores[i] = res
        return gens, scores  # type: ignore[return-value]

    def _score_after_generation(self, batch, out, rows: list[int], targets: list[str]) -> list[ScoreResult]:
        """Score ``targets`` after the prompts of ``rows`` on the generation's cache, cropped to the prompts."""
        width = batch["input_ids"].shape[1]
        cache = cut_cache(out.cache, width)
        ids = [self.encode_text(t).to(self.device) for t in targets]
        first = out.logits[0].float()  # the prefill's last logits: they predict each target's first token
        if len(rows) != batch["input_ids"].shape[0]:
            cache.batch_select_indices(torch.as_tensor(rows, device=self.device))
        tgt, tgt_mask = self._right_padded(ids)
        prompt_mask = batch["attention_mask"][rows]
        mask = torch.cat([prompt_mask, tgt_mask], dim=1)
        positions = prompt_mask.sum(1, keepdim=True) + torch.arange(tgt.shape[1], device=self.device)[None]
        logits = self.model(
            input_ids=tgt, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
        ).logits
        results = []
        for k, i in enumerate(rows):
            row_logits = torch.cat([first[i][None], logits[k].float()], dim=0)
            results.append(self._gather(row_logits, 1, ids[k]))
        return results

    @torch.inference_mode()
    def hidden_states_of(
        self,
        prompts: Sequence[str],
        continuations: Sequence[Sequence[int]],
        *,
        images: Sequence[Sequence] | None = None,
        layer: int,
    ) -> list[torch.Tensor]:
        """Hidden states at ``layer`` of given continuation tokens after their prompts, (tokens, hidden) each.

        What ``generate(hidden_layer=...)`` records, for text generated earlier: one teacher-forced
        forward instead of a second generation, and aligned with exactly these tokens.
        """
        if len(continuations) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        if not prompts:
            return []
        images = _image_lists(prompts, images)
        batch = self._left_padded([self.encode_prompt(p, im) for p, im in zip(prompts, images)])
        lengths = [len(c) for c in continuations]
        new = torch.full((len(prompts), max(lengths)), self.tokenizer.pad_token_id, dtype=torch.long)
        for i, c in enumerate(continuations):
            new[i, : len(c)] = torch.as_tensor(list(c), dtype=torch.long)
        return self._hidden_states(batch, new.to(self.device), lengths, layer)

    def _hidden_states(
        self, batch, new: torch.Tensor, lengths: Sequence[int], layer: int
    ) -> list[torch.Tensor]:
        """One forward over prompt + continuation: the hidden state of each continuation token itself."""
        n_layers = self.num_hidden_layers
        if not -n_layers - 1 <= layer <= n_layers:
            raise ValueError(f"hidden_layer {layer} out of range for a model with {n_layers} layers")
        mask = torch.cat([batch["attention_mask"], torch.ones_like(new)], dim=1)
        width = batch["input_ids"].shape[1]
        for i, n in enumerate(lengths):  # tokens after the end-of-sequence are padding here
            mask[i, width + n :] = 0
        inputs = {**batch, "input_ids": torch.cat([batch["input_ids"], new], dim=1), "attention_mask": mask}
        if not self.supports_images:
            inputs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
        # logits of one position only: the full (batch, width, 150k) logits nobody reads were ~2 GB
        hidden = self.model(**inputs, output_hidden_states=True, **self._last_logits_only(1)).hidden_states[
            layer
        ]
        return [hidden[i, width : width + n].float().cpu() for i, n in enumerate(lengths)]

    def _left_padded(self, encoded: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in encoded)
        ids = torch.full((len(encoded), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, e in enumerate(encoded):
            n = len(e["input_ids"])
            ids[i, width - n :] = e["input_ids"]
            mask[i, width - n :] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        extra = [k for e in encoded for k in e if k != "input_ids"]
        for key in dict.fromkeys(extra):
            batch[key] = torch.cat([e[key] for e in encoded if key in e], dim=0)
        return {k: v.to(self.device) for k, v in batch.items()}

    # ------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def score(
        self,
        prompts: Sequence[str | tuple[str, str]],
        targets: Sequence[str] | str,
        *,
        images: Sequence[Sequence] | None = None,
        batch_size: int = 8,
        reuse_prefix: bool = True,
    ) -> list[ScoreResult]:
        """log p(target | prompt) for each pair, summed and per target token.

        A prompt is a string or a ``(prefix, rest)`` pair; each piece and the target are tokenized
        separately and concatenated, so a prompt's tokens never depend on how it is batched. With
        ``reuse_prefix``, requests that share a prefix (and images) encode it once and reuse its
        KV cache for every rest.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        targets, images = _score_requests(prompts, targets, images)
        parts = [(p, "") if isinstance(p, str) else tuple(p) for p in prompts]
        results: list[ScoreResult | None] = [None] * len(parts)
        groups: dict[tuple | None, list[int]] = {}
        for i, (prefix, _) in enumerate(parts):
            key = (prefix, tuple(im if isinstance(im, str) else id(im) for im in images[i]))
            groups.setdefault(key if reuse_prefix else None, []).append(i)
        target_ids = {t: self.encode_text(t) for t in set(targets)}
        for members in groups.values():
            prefix, _ = parts[members[0]]
            prefix_enc = self.encode_prompt(prefix, images[members[0]])
            if reuse_prefix and len(members) > 1 and len(prefix_enc["input_ids"]) > 0:
                self._score_with_cache(prefix_enc, members, parts, targets, target_ids, batch_size, results)
                continue
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                rows, extras = [], []
                for i in chunk:
                    enc = prefix_enc if i == members[0] else self.encode_prompt(parts[i][0], images[i])
                    rows.append(
                        (
                            torch.cat([enc["input_ids"], self.encode_text(parts[i][1])]),
                            target_ids[targets[i]],
                        )
                    )
                    extras.append({k: v for k, v in enc.items() if k != "input_ids"})
                for i, res in zip(chunk, self._score_rows(rows, extras)):
                    results[i] = res
        return results  # type: ignore[return-value]

    def _score_rows(
        self, rows: list[tuple[torch.Tensor, torch.Tensor]], extras: list[dict]
    ) -> list[ScoreResult]:
        """Score right-padded (context, target) rows in one forward pass (no cache)."""
        if any(len(c) == 0 for c, _ in rows):
            raise ValueError("cannot score a target after an empty prompt")
        seqs = [torch.cat([c, t]) for c, t in rows]
        ids, mask = self._right_padded(seqs)
        inputs = {"input_ids": ids, "attention_mask": mask}
        for key in dict.fromkeys(k for e in extras for k in e):
            inputs[key] = torch.cat([e[key] for e in extras if key in e], dim=0).to(self.device)
        # the LM head only where a target is read: full (batch, width, 150k) logits were ~2 GB for a
        # batch of 8 transfer prompts, and ~15% of the compute
        needed = sorted({p for c, t in rows for p in range(len(c) - 1, len(c) - 1 + len(t))})
        keep = (
            self._last_logits_only(torch.tensor(needed, device=self.device))
            if "pixel_values" not in inputs
            else {}
        )
        logits = self.model(**inputs, **keep).logits
        if not keep:
            needed = list(range(ids.shape[1]))
        at = {p: k for k, p in enumerate(needed)}
        return [
            self._gather(logits[i, [at[p] for p in range(len(c) - 1, len(c) - 1 + len(t))]], 1, t)
            for i, (c, t) in enumerate(rows)
        ]

    def _gather(self, logits: torch.Tensor, context_len: int, target: torch.Tensor) -> ScoreResult:
        """Log-probs of ``target`` whose first token sits at ``context_len`` in the row of ``logits``."""
        n = len(target)
        pred = logits[context_len - 1 : context_len - 1 + n].float().log_softmax(-1)
        lp = pred.gather(-1, target.to(pred.device)[:, None])[:, 0]
        values = [float(x) for x in lp]
        return ScoreResult(logprob=math.fsum(values), token_logprobs=values)

    def _right_padded(self, seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1
        return ids.to(self.device), mask.to(self.device)
