#!/usr/bin/env python3
"""Builds the numerical oracle of loraserve: small random Llama/Mistral models saved by Hugging Face
transformers itself, plus the logits and greedy tokens transformers computes for them.

Nobody on the project wrote the reference math here; that is the point. The C implementation loads
the saved directories exactly as a user's model and must reproduce these numbers. Run it on a machine
with torch, transformers 5.x and safetensors (see README.md); it touches only tests/golden/<name>/.

Everything runs on the CPU in float32 with eager attention, so the goldens do not depend on a GPU,
TF32 or fused kernels.
"""

import argparse
import dataclasses
import inspect
import json
import os
import shutil
import sys

import torch
import transformers
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_NEW_TOKENS = 12
PROMPT_LENGTHS = (5, 17, 33, 40)    # 33 and 40 exceed mistral_sw's window of 16
MARGIN_MIN = 1e-3                   # top-1 minus top-2 logit at every step, so argmax is unambiguous
MAX_PROMPT_TRIES = 200
FIXTURE_CAP_BYTES = 5 << 20

LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # Small on purpose: llama3 scaling only bends wavelengths longer than original/low_freq_factor,
    # so with head_dim 16 and theta 5e5 most frequencies are actually rescaled.
    "original_max_position_embeddings": 64,
}

MODELS = [
    {
        "name": "llama_gqa",
        "classes": (LlamaConfig, LlamaForCausalLM),
        "seed": 1,
        "config": dict(vocab_size=384, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                       max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                       attention_bias=False, mlp_bias=False),
        "rope": (500000.0, LLAMA3_SCALING),
        "save_dtype": torch.float32,
        "shards": 1,
    },
    {
        "name": "mistral_sw",
        "classes": (MistralConfig, MistralForCausalLM),
        "seed": 2,
        "config": dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                       max_position_embeddings=512, sliding_window=16, tie_word_embeddings=False),
        "rope": (10000.0, None),
        "save_dtype": torch.float32,
        "shards": 2,
    },
    {
        "name": "llama_bf16",
        "classes": (LlamaConfig, LlamaForCausalLM),
        "seed": 3,
        "config": dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, head_dim=16,
                       max_position_embeddings=512, tie_word_embeddings=True,
                       attention_bias=False, mlp_bias=False),
        "rope": (10000.0, None),
        "save_dtype": torch.bfloat16,
        "shards": 1,
    },
]


def transformers_version():
    parts = transformers.__version__.split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def config_fields(cls):
    """Constructor fields of a config class (transformers 5 configs may be dataclasses)."""
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    return set(inspect.signature(cls.__init__).parameters)


def rope_kwargs(cls, theta, scaling):
    """transformers 5 takes rope_parameters (theta inside); 4.x takes rope_theta + rope_scaling."""
    if "rope_parameters" in config_fields(cls):
        params = {"rope_type": "default"} if scaling is None else dict(scaling)
        params["rope_theta"] = theta
        return {"rope_parameters": params}
    return {"rope_theta": theta, "rope_scaling": scaling}


def dtype_kwarg(dtype):
    """from_pretrained renamed torch_dtype to dtype in 4.56."""
    return {"dtype" if transformers_version() >= (4, 56) else "torch_dtype": dtype}


def build_model(spec):
    config_cls, model_cls = spec["classes"]
    theta, scaling = spec["rope"]
    config = config_cls(initializer_range=0.1, hidden_act="silu", bos_token_id=1, eos_token_id=2,
                        **spec["config"], **rope_kwargs(config_cls, theta, scaling))
    torch.manual_seed(spec["seed"])
    try:
        model = model_cls._from_config(config, attn_implementation="eager")
    except (AttributeError, TypeError):
        config._attn_implementation = "eager"
        model = model_cls(config)
    with torch.no_grad():
        # Norm weights start at exactly 1; perturb them so that a loader ignoring them fails.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    return model.to(spec["save_dtype"]).eval()


def save_model(model, out_dir, shards):
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    kwargs = {}
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kwargs["safe_serialization"] = True
    if shards > 1:
        total = sum(p.numel() * p.element_size() for p in model.parameters())
        # Greedy packing with a cap of 60% of the total gives exactly two files as long as no tensor
        # exceeds ~20% of the model; checked below rather than trusted.
        kwargs["max_shard_size"] = int(total * 0.6)
    model.save_pretrained(out_dir, **kwargs)
    index = os.path.join(out_dir, "model.safetensors.index.json")
    if shards == 1:
        if not os.path.exists(os.path.join(out_dir, "model.safetensors")):
            sys.exit(f"{out_dir}: expected a single model.safetensors")
        return
    with open(index) as f:
        files = set(json.load(f)["weight_map"].values())
    if len(files) != shards:
        sys.exit(f"{out_dir}: expected {shards} shards, transformers wrote {sorted(files)}")


def reload_model(spec, out_dir):
    """The goldens come from what is on disk, read back by transformers, as the C loader reads it."""
    model_cls = spec["classes"][1]
    model = model_cls.from_pretrained(out_dir, attn_implementation="eager", **dtype_kwarg(torch.float32))
    return model.eval()


def check_same_weights(saved, reloaded):
    want = {k: v.float() for k, v in saved.state_dict().items()}
    got = reloaded.state_dict()
    for name, tensor in want.items():
        if name not in got or not torch.equal(got[name], tensor):
            sys.exit(f"reloaded weights differ from the saved ones at {name}")


@torch.no_grad()
def greedy(model, prompt):
    """Full forward over prompt + generated so far at each step, no KV cache: the plainest oracle."""
    ids = list(prompt)
    rows, margins = [], []
    for _ in range(MAX_NEW_TOKENS):
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].float()
        top = torch.topk(logits, 2).values
        margins.append(float(top[0] - top[1]))
        rows.append(logits.clone())
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):], torch.stack(rows), min(margins)


def pick_prompts(model, spec):
    vocab = spec["config"]["vocab_size"]
    prompts, outputs, logits, margin = [], [], [], float("inf")
    for i, length in enumerate(PROMPT_LENGTHS):
        for attempt in range(MAX_PROMPT_TRIES):
            gen = torch.Generator().manual_seed(spec["seed"] * 100000 + i * 1000 + attempt)
            prompt = torch.randint(0, vocab, (length,), generator=gen).tolist()
            out, rows, m = greedy(model, prompt)
            if m > MARGIN_MIN:
                break
        else:
            sys.exit(f"{spec['name']}: no prompt of length {length} with margin > {MARGIN_MIN}")
        prompts.append(prompt)
        outputs.append(out)
        logits.append(rows)
        margin = min(margin, m)
    return prompts, outputs, logits, margin


def write_goldens(spec, out_dir, prompts, outputs, logits, margin):
    golden = {
        "model": spec["name"],
        "prompts": prompts,
        "greedy": outputs,
        "max_new_tokens": MAX_NEW_TOKENS,
        "logit_margin_min": margin,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    tensors = {f"logits.{i}": rows.contiguous() for i, rows in enumerate(logits)}
    save_file(tensors, os.path.join(out_dir, "golden.safetensors"), metadata={"format": "pt"})


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="build one model by name")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    total = 0
    for spec in MODELS:
        if args.only and spec["name"] != args.only:
            continue
        out_dir = os.path.join(HERE, spec["name"])
        model = build_model(spec)
        save_model(model, out_dir, spec["shards"])
        reloaded = reload_model(spec, out_dir)
        check_same_weights(model, reloaded)
        prompts, outputs, logits, margin = pick_prompts(reloaded, spec)
        write_goldens(spec, out_dir, prompts, outputs, logits, margin)
        size = dir_bytes(out_dir)
        total += size
        print(f"{spec['name']}: {size / 1024:.0f} KiB, margin min {margin:.4g}, greedy[0] {outputs[0]}")
    if total > FIXTURE_CAP_BYTES:
        sys.exit(f"fixtures take {total} bytes, over the {FIXTURE_CAP_BYTES}-byte cap")
    print(f"total {total / 1024:.0f} KiB (transformers {transformers.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
