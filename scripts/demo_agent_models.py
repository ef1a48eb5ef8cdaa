"""The demo agents' tokenizer and models: a byte-level BPE tokenizer with a ChatML template, tiny Llama-style
decoders, and their function-preserving growth (``grow_model``). Used by ``scripts.train_demo_agents``."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from selector.demo.synthetic import ChainProblem, verbose_reasoning

__all__ = ["CHATML_TEMPLATE", "SPECIAL_TOKENS", "ModelShape", "build_model", "build_tokenizer", "grow_model",
           "save_agent", "tokenizer_corpus"]  # fmt: skip

SPECIAL_TOKENS = ["<pad>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class ModelShape:
    """A tiny Llama-style decoder."""

    hidden: int = 128
    """Hidden size."""
    layers: int = 4
    """Decoder layers."""
    heads: int = 4
    """Attention heads (key/value heads too)."""
    ffn: int = 384
    """MLP intermediate size."""


def build_tokenizer(corpus: list[str], vocab_size: int = 1200):
    """A byte-level BPE tokenizer trained on the demo's text, with a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    numbers = " ".join(str(n) for n in range(-50, 200))
    tok.train_from_iterator([*corpus, *[numbers] * 50], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<|im_end|>")
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tokenizer_corpus(problems: list[ChainProblem], rng: random.Random) -> list[str]:
    """Questions, worked solutions and the prompt builders' fixed wording (so instructions are few tokens)."""
    from selector.prompts import PromptTemplate

    template = PromptTemplate()
    fixed = [template.reasoning_instruction, template.direct_instruction, template.transfer_header]
    corpus = [*fixed * 200, "user", "assistant", "system"]
    for p in problems[:3000]:
        corpus += [p.question, verbose_reasoning(p, rng)]
    return corpus


def build_model(tokenizer, shape: ModelShape, seed: int):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.ffn,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=768,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    return model


@torch.no_grad()
def grow_model(model, shape: ModelShape, seed: int = 0):
    """A wider, deeper copy of a Llama model computing the same function (Net2Net-style growth).

    Head size is kept (``heads`` may grow), so attention scale and rotary frequencies are unchanged.
    Old weights fill the top-left blocks; every new head, MLP unit and layer reads the stream with
    fresh random weights but writes to it through zero output projections, and the residual
    stream's new dimensions stay zero, so the RMSNorm weights are scaled by sqrt(old/new) hidden
    size (and its epsilon by old/new) to keep each normalised vector as before. The grown model answers like the original (up to
    float rounding) and costs, per token, what a model of the grown shape costs.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    d0, f0, h0, n0 = c.hidden_size, c.intermediate_size, c.num_attention_heads, c.num_hidden_layers
    if shape.hidden < d0 or shape.ffn < f0 or shape.heads < h0 or shape.layers < n0:
        raise ValueError(
            f"growth only: {shape} is smaller than the model ({d0}, {f0}, {h0} heads, {n0} layers)"
        )
    kv0 = c.num_key_value_heads
    if shape.heads % (h0 // kv0):
        raise ValueError(f"heads must be a multiple of the query group size {h0 // kv0}")
    kv1 = shape.heads // (h0 // kv0)  # same group size: old query heads keep their key/value heads
    torch.manual_seed(seed)
    config = LlamaConfig(
        **{
            **c.to_dict(),
            "hidden_size": shape.hidden,
            "intermediate_size": shape.ffn,
            "num_hidden_layers": shape.layers,
            "num_attention_heads": shape.heads,
            "num_key_value_heads": kv1,
            "head_dim": head_dim,
            "rms_norm_eps": c.rms_norm_eps * d0 / shape.hidden,  # mean squares shrink by d0/hidden
        }
    )
    big = LlamaForCausalLM(config).to(torch.float32).eval()
    big.generation_config = model.generation_config
    scale = (d0 / shape.hidden) ** 0.5
    a0, k0 = h0 * head_dim, kv0 * head_dim
    emb = big.model.embed_tokens.weight
    emb.zero_()
    emb[:, :d0] = model.model.embed_tokens.weight
    for i, layer in enumerate(big.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        attn.o_proj.weight.zero_()
        mlp.down_proj.weight.zero_()
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight.fill_(scale)
        if i >= n0:
            continue  # a new layer: the identity until trained
        old = model.model.layers[i]
        attn.q_proj.weight[:a0, :d0] = old.self_attn.q_proj.weight
        attn.k_proj.weight[:k0, :d0] = old.self_attn.k_proj.weight
        attn.v_proj.weight[:k0, :d0] = old.self_attn.v_proj.weight
        attn.o_proj.weight[:d0, :a0] = old.self_attn.o_proj.weight
        mlp.gate_proj.weight[:f0, :d0] = old.mlp.gate_proj.weight
        mlp.up_proj.weight[:f0, :d0] = old.mlp.up_proj.weight
        mlp.down_proj.weight[:d0, :f0] = old.mlp.down_proj.weight
        layer.input_layernorm.weight[:d0] = old.input_layernorm.weight * scale
        layer.post_attention_layernorm.weight[:d0] = old.post_attention_layernorm.weight * scale
    big.model.norm.weight.fill_(scale)
    big.model.norm.weight[:d0] = model.model.norm.weight * scale
    if not c.tie_word_embeddings:
        big.lm_head.weight.zero_()
        big.lm_head.weight[:, :d0] = model.lm_head.weight
    return big


def save_agent(model, tokenizer, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
