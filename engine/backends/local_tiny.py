"""``builtin:tiny``: a tiny Llama-style model and tokenizer that the engine builds locally.

It lets the whole workflow (validate, baseline, QLoRA training, evaluation, /ask) run on a laptop
or in CI with no download. It is built once under ``Settings.builtin_dir``, saved with
``save_pretrained`` and then loaded through the same ``from_pretrained`` path as any real model.
The build is deterministic: the same tokenizer merges and the same initial weights every time.

It knows nothing: its weights are random. It is for trying the workflow and for tests, and every
message that names it says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

TINY_VERSION = "tiny-v2"
SEED = 1234
VOCAB_SIZE = 1024
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|unk|>"]
EOS_TOKEN = "<|end|>"
PAD_TOKEN = "<|pad|>"

# A chat template with `{% generation %}` markers so TRL can compute an assistant-only loss mask.
# Each turn ends with the EOS token, so generation stops at the end of the assistant's answer.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set content = message['content'] if message['content'] is string else "
    "(message['content'] | selectattr('text', 'defined') | map(attribute='text') | join('') "
    "if message['content'] else '') -%}"
    "{{- '<|' + message['role'] + '|>\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- content + '<|end|>' -}}{%- endgeneration -%}"
    "{%- else -%}{{- content + '<|end|>' -}}{%- endif -%}"
    "{{- '\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
)

MODEL_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}


def ensure_builtin_tiny(builtin_dir: Path) -> Path:
    """Return the directory of the built tiny model, building it first if needed.

    Safe when several processes race: each builds into a private temporary directory and
    renames it into place; the loser discards its copy.
    """
    target = Path(builtin_dir) / TINY_VERSION
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=target.parent))
    try:
        _build(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _corpus() -> list[str]:
    """A fixed, varied corpus for the BPE merges: English words, numbers, prices, JSON, labels."""
    words = (
        "the a an and or of to in on for with without from by at as is are was were be been this that "
        "these those it its you your we our they their he she his her what which who when where why how "
        "product price cost costs dollars usd euro item items new used refurbished brand model size color "
        "black white silver blue red green small medium large wireless bluetooth laptop phone camera "
        "headphones speaker watch monitor keyboard mouse chair desk lamp bottle backpack shoes jacket "
        "customer support ticket order refund shipping delivery broken late missing damaged account login "
        "password email name issue urgency low normal high urgent positive negative neutral spam ham yes no "
        "please thanks hello answer question json number label text summary extract return only valid "
        "estimate estimator description features warranty battery screen storage memory inch inches gb tb "
        "year years month months day days week today tomorrow good bad great terrible excellent poor"
    ).split()
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    lines += [" ".join(w.capitalize() for w in words[i : i + 8]) for i in range(0, len(words), 8)]
    lines += [f"{n} {n}.{n % 100:02d} ${n:,}.99 {n * 37 % 10007}" for n in range(0, 3000, 7)]
    lines += [
        json.dumps({"name": w, "product": words[(i * 7) % len(words)], "urgency": ["low", "high"][i % 2]})
        for i, w in enumerate(words)
    ]
    lines += ["{}[]():;,.!?'\"-_/+*=<>@#%&|\\~`^\n\t"] * 20
    return lines


def _build(out_dir: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token="<|unk|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (EOS_TOKEN, PAD_TOKEN, "<|unk|>")],
        model_max_length=MODEL_CONFIG["max_position_embeddings"],
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)

    config = LlamaConfig(
        vocab_size=len(fast),
        bos_token_id=None,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        **MODEL_CONFIG,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(config)
        # Why: the final RMSNorm fixes the hidden state's scale and LoRA never touches lm_head, so
        # with the usual 0.02 init every logit stays within about +-1.3 and no fine-tune can make
        # an answer likely (the loss cannot fall far below ln(vocab)). Rows of norm ~1 let LoRA
        # make confident predictions, as a pretrained head can.
        torch.nn.init.normal_(model.lm_head.weight, std=config.hidden_size**-0.5)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    from transformers.utils import logging as hf_logging

    # A "Writing model shards" bar for a 1 MB model is noise in the console and in `make run`.
    hf_logging.disable_progress_bar()
    model.save_pretrained(out_dir)
    (out_dir / "FTBOT_BUILTIN.md").write_text(
        "builtin:tiny - a tiny randomly initialised Llama-style model built by ftbot for trying the\n"
        "workflow and for tests. It knows nothing; its answers are not meaningful.\n"
    )
