"""Tiny real Hugging Face models built in-process for tests: no network, loaded through from_pretrained."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<image>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Question: what is 2 + 3? Let me think step by step. First, 2 + 3 = 5. So the answer is 5. Answer: 5",
    "Let x = 3 and y = x + 4, so y is 7. Therefore z = y * 2 = 14. Answer: 14",
    "The sky is blue. Reply with the final answer only. Notes from a helper's reasoning:",
    "red green blue yellow circle square triangle what color is the shape? 0 1 2 3 4 5 6 7 8 9 10",
    "Solve the problem step by step. End with a final line 'Answer: <answer>'.",
]


def build_tokenizer(chat_template: bool = True, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences (every byte is in the vocabulary)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 10, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    if chat_template:
        fast.chat_template = CHATML_TEMPLATE
    return fast


def _llama_config(vocab_size: int, hidden: int = 32, layers: int = 2) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def make_causal_lm(
    out: Path,
    *,
    chat_template: bool = True,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    vocab_size: int = 400,
) -> Path:
    """Save a random tiny Llama-style causal LM with its tokenizer to ``out`` (another
    ``vocab_size`` gives another tokenizer: pairs with different tokenizers)."""
    import torch

    torch.manual_seed(seed)
    tok = build_tokenizer(chat_template=chat_template, vocab_size=vocab_size)
    model = LlamaForCausalLM(_llama_config(len(tok), hidden, layers))
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_vlm(out: Path, *, seed: int = 0) -> Path:
    """Save a random tiny LLaVA-style vision-language model (CLIP tower + Llama text) with its processor."""
    import torch

    torch.manual_seed(seed)
    tok = build_tokenizer(chat_template=True)
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=32,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_llama_config(len(tok)),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHATML_TEMPLATE,
    )
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
