#!/usr/bin/env python3
"""Builds the multi-LoRA oracle of loraserve: a small random Llama base saved by Hugging Face
transformers, PEFT LoRA adapters saved by PEFT itself, and the logits and greedy tokens that
transformers + PEFT compute for every (adapter, prompt) pair, plus one mixed-adapter batch.

Nobody on the project wrote the reference math here; that is the point. The C implementation loads
the saved base and adapter directories exactly as a user's, and must reproduce these numbers. Run it
on a machine with torch, transformers 5.x, peft and safetensors (see README.md); it touches only
tests/golden_lora/ (or --out).

Everything runs on the CPU in float32 with eager attention and no KV cache, so the goldens depend on
no GPU, TF32 or fused kernel. Goldens are computed from what is on disk, read back by
transformers/PEFT, as the C loader reads it.
"""

import argparse
import dataclasses
import inspect
import json
import math
import os
import platform
import shutil
import sys
import tempfile

import torch
import transformers
import safetensors
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

import peft
from peft import LoraConfig, PeftModel, get_peft_model

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_NEW_TOKENS = 8
PROMPT_LENGTHS = (5, 11, 23, 31)
MARGIN_MIN = 1e-3                   # top-1 minus top-2 logit at every step, so argmax is unambiguous
MAX_PROMPT_TRIES = 200
FIXTURE_CAP_BYTES = 5 << 20
MIXED_TOL = 1e-5                    # mixed-adapter batch vs one adapter at a time, max abs logit diff
BASE_TOL = 1e-6                     # PEFT with adapters disabled / "__base__" vs plain transformers
ADAPTER_EFFECT_MIN = 0.05           # every adapter must move some logit of step 0 by at least this
LORA_INIT_STD = 0.1                 # A and B ~ N(0, 0.1^2): PEFT's own init leaves B = 0 (a no-op)
PEFT_BASE_NAME = "__base__"         # PEFT's adapter_names entry for "no adapter" (checked in main)
BASE_SEED = 21
PROMPT_SEED = 2100000

BASE_CONFIG = dict(vocab_size=384, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                   max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                   attention_bias=False, mlp_bias=False)
ROPE_THETA = 10000.0

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
ALL7 = ATTN + MLP

# What each adapter exercises is listed in README.md; keep the two in step.
ADAPTERS = [
    dict(name="a_r8_qv", seed=101, r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    dict(name="b_r16_all", seed=102, r=16, lora_alpha=32, target_modules=ALL7),
    dict(name="c_r4_rslora", seed=103, r=4, lora_alpha=8, target_modules=ATTN, use_rslora=True),
    dict(name="d_pattern", seed=104, r=8, lora_alpha=8, target_modules=ALL7,
         rank_pattern={"o_proj": 2, "down_proj": 12, "model.layers.1.self_attn.q_proj": 3},
         alpha_pattern={"v_proj": 32}),
    dict(name="e_mlp_only", seed=105, r=32, lora_alpha=16, target_modules=MLP),
    dict(name="f_r1_k", seed=106, r=1, lora_alpha=2, target_modules=["k_proj"]),
    # r 64 exceeds k_proj/v_proj's 32 output rows: legal in PEFT, and a shape edge for the server.
    dict(name="g_r64_all", seed=107, r=64, lora_alpha=32, target_modules=ALL7),
]
SPEC_KEYS = ("name", "seed")


# ----------------------------------------------------------------------------- helpers (as tests/golden)

def transformers_version():
    parts = transformers.__version__.split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


def config_fields(cls):
    """Constructor fields of a config class (transformers 5 and PEFT configs may be dataclasses)."""
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    return set(inspect.signature(cls.__init__).parameters)


def rope_kwargs(cls, theta):
    """transformers 5 takes rope_parameters (theta inside); 4.x takes rope_theta + rope_scaling."""
    if "rope_parameters" in config_fields(cls):
        return {"rope_parameters": {"rope_type": "default", "rope_theta": theta}}
    return {"rope_theta": theta, "rope_scaling": None}


def dtype_kwarg(dtype):
    """from_pretrained renamed torch_dtype to dtype in 4.56."""
    return {"dtype" if transformers_version() >= (4, 56) else "torch_dtype": dtype}


def safe_kwargs(fn):
    """safe_serialization=True where the save function still takes it (safetensors is the default)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {"safe_serialization": True} if "safe_serialization" in params else {}


def fail(msg):
    sys.exit(f"make_golden_lora: {msg}")


def tree_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def reset_dir(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)


# ----------------------------------------------------------------------------- base model

def build_base():
    config = LlamaConfig(initializer_range=0.1, hidden_act="silu", bos_token_id=1, eos_token_id=2,
                         **BASE_CONFIG, **rope_kwargs(LlamaConfig, ROPE_THETA))
    torch.manual_seed(BASE_SEED)
    try:
        model = LlamaForCausalLM._from_config(config, attn_implementation="eager")
    except (AttributeError, TypeError):
        config._attn_implementation = "eager"
        model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Norm weights start at exactly 1; perturb them so that a loader ignoring them fails.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    return model.to(torch.float32).eval()


def save_base(model, out_dir):
    reset_dir(out_dir)
    model.save_pretrained(out_dir, **safe_kwargs(model.save_pretrained))
    if not os.path.exists(os.path.join(out_dir, "model.safetensors")):
        fail(f"{out_dir}: expected a single model.safetensors, got {sorted(os.listdir(out_dir))}")


def load_base(base_dir):
    model = LlamaForCausalLM.from_pretrained(base_dir, attn_implementation="eager",
                                             **dtype_kwarg(torch.float32))
    return model.eval()


def check_same_weights(saved, reloaded):
    want = {k: v.float() for k, v in saved.state_dict().items()}
    got = reloaded.state_dict()
    for name, tensor in want.items():
        if name not in got or not torch.equal(got[name], tensor):
            fail(f"reloaded base weights differ from the saved ones at {name}")


# ----------------------------------------------------------------------------- adapters

def lora_config(spec):
    fields = config_fields(LoraConfig)
    kwargs = {k: v for k, v in spec.items() if k not in SPEC_KEYS}
    missing = [k for k in kwargs if k not in fields]
    if missing:
        fail(f"{spec['name']}: this peft's LoraConfig lacks {missing}")
    kwargs.update(lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    for optional, value in (("use_dora", False), ("init_lora_weights", True)):
        if optional in fields:
            kwargs[optional] = value
    return LoraConfig(**kwargs)


def lora_layer_class():
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        from peft.tuners.lora.layer import LoraLayer
    return LoraLayer


def module_key(name):
    """PEFT module path (base_model.model.model.layers.N...) -> the base model's module name."""
    prefix = "base_model.model."
    if not name.startswith(prefix):
        fail(f"unexpected PEFT module path {name}")
    return name[len(prefix):]


def lora_modules(peft_model, adapter):
    """{module name: (r, scale, A shape, B shape)} for one adapter, as PEFT actually built it."""
    LoraLayer = lora_layer_class()
    out = {}
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or adapter not in getattr(module, "r", {}):
            continue
        a = module.lora_A[adapter].weight
        b = module.lora_B[adapter].weight
        out[module_key(name)] = (int(module.r[adapter]), float(module.scaling[adapter]),
                                 tuple(a.shape), tuple(b.shape))
    return out


def pattern_value(pattern, module_name, default):
    """Our reading of PEFT's rank_pattern / alpha_pattern: the key matches the whole module name or
    a dotted suffix of it; the first matching key wins. Cross-checked against PEFT below."""
    for key, value in pattern.items():
        if module_name == key or module_name.endswith("." + key):
            return value
    return default


def expected_modules(spec, n_layers):
    out = {}
    for layer in range(n_layers):
        for m in spec["target_modules"]:
            part = "self_attn" if m in ATTN else "mlp"
            name = f"model.layers.{layer}.{part}.{m}"
            r = pattern_value(spec.get("rank_pattern", {}), name, spec["r"])
            alpha = pattern_value(spec.get("alpha_pattern", {}), name, spec["lora_alpha"])
            scale = alpha / math.sqrt(r) if spec.get("use_rslora") else alpha / r
            out[name] = (r, scale)
    return out


def linear_shape(name):
    h, kv = BASE_CONFIG["hidden_size"], BASE_CONFIG["num_key_value_heads"] * BASE_CONFIG["head_dim"]
    q, inter = BASE_CONFIG["num_attention_heads"] * BASE_CONFIG["head_dim"], BASE_CONFIG["intermediate_size"]
    m = name.rsplit(".", 1)[1]
    return {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
            "gate_proj": (inter, h), "up_proj": (inter, h), "down_proj": (h, inter)}[m]   # (out, in)


def check_modules(spec, got):
    want = expected_modules(spec, BASE_CONFIG["num_hidden_layers"])
    if set(got) != set(want):
        fail(f"{spec['name']}: PEFT adapted {sorted(got)}, expected {sorted(want)}")
    for name, (r, scale) in want.items():
        gr, gs, a_shape, b_shape = got[name]
        out_f, in_f = linear_shape(name)
        if gr != r or abs(gs - scale) > 1e-9 * max(1.0, abs(scale)):
            fail(f"{spec['name']} {name}: PEFT has r {gr} scale {gs}, expected r {r} scale {scale}")
        if a_shape != (r, in_f) or b_shape != (out_f, r):
            fail(f"{spec['name']} {name}: lora_A {a_shape} lora_B {b_shape}, expected {(r, in_f)} {(out_f, r)}")


def make_adapter(spec, base_dir, out_dir):
    """Fresh base, one adapter named "default" (so PEFT saves it at out_dir itself), random A and B."""
    model = load_base(base_dir)
    peft_model = get_peft_model(model, lora_config(spec))
    gen = torch.Generator().manual_seed(spec["seed"])
    n = 0
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                p.copy_(LORA_INIT_STD * torch.randn(p.shape, generator=gen, dtype=torch.float32))
                n += 1
    if n == 0:
        fail(f"{spec['name']}: no lora_A/lora_B parameters found")
    check_modules(spec, lora_modules(peft_model, "default"))
    reset_dir(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp, **safe_kwargs(peft_model.save_pretrained))
        src = tmp
        if not os.path.exists(os.path.join(tmp, "adapter_config.json")):
            src = os.path.join(tmp, "default")      # older layouts put non-root adapters in a subdir
        for fname in ("adapter_config.json", "adapter_model.safetensors"):
            if not os.path.exists(os.path.join(src, fname)):
                fail(f"{spec['name']}: PEFT wrote no {fname} ({sorted(os.listdir(src))})")
            shutil.copy(os.path.join(src, fname), os.path.join(out_dir, fname))
        # PEFT also writes a model card README.md: not part of the fixture.
    path = os.path.join(out_dir, "adapter_config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["base_model_name_or_path"] = "base"       # relative name; the absolute build path is noise
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])   # PEFT keeps a set: make reruns identical
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    check_adapter_file(spec, out_dir, n)


def check_adapter_file(spec, out_dir, n_params):
    path = os.path.join(out_dir, "adapter_model.safetensors")
    with safe_open(path, framework="pt") as f:
        keys = list(f.keys())
        for k in keys:
            t = f.get_tensor(k)
            if t.dtype != torch.float32:
                fail(f"{spec['name']}: {k} saved as {t.dtype}, expected float32")
            if ".lora_B." in k and float(t.abs().max()) == 0.0:
                fail(f"{spec['name']}: {k} is all zeros")
    if len(keys) != n_params or any(".lora_A." not in k and ".lora_B." not in k for k in keys):
        fail(f"{spec['name']}: unexpected tensors in {path}: {sorted(keys)[:4]}... ({len(keys)})")


def peft_base_name():
    """The adapter_names entry that means "base model" in mixed batches. PEFT has used "__base__"
    since mixed batches appeared (tuners/lora/layer.py _mixed_batch_forward); read it from the
    installed source when a constant exists, and confirm by behaviour in check_mixed_base."""
    for modname in ("peft.tuners.lora.layer", "peft.tuners.tuners_utils", "peft.utils.constants"):
        try:
            mod = __import__(modname, fromlist=["*"])
        except ImportError:
            continue
        for attr in ("BASE_ADAPTER_NAME", "BASE_NAME"):
            value = getattr(mod, attr, None)
            if isinstance(value, str) and value:
                return value
        try:
            src = inspect.getsource(mod)
        except (OSError, TypeError):
            continue
        if '"__base__"' in src or "'__base__'" in src:
            return "__base__"
    return PEFT_BASE_NAME


# ----------------------------------------------------------------------------- goldens

def forward_last(model, ids, **kwargs):
    return model(input_ids=torch.tensor([ids]), use_cache=False, **kwargs).logits[0, -1].float()


@torch.no_grad()
def greedy(model, prompt):
    """Full forward over prompt + generated so far at each step, no KV cache: the plainest oracle."""
    ids = list(prompt)
    rows, margins = [], []
    for _ in range(MAX_NEW_TOKENS):
        logits = forward_last(model, ids)
        top = torch.topk(logits, 2).values
        margins.append(float(top[0] - top[1]))
        rows.append(logits.clone())
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):], torch.stack(rows), min(margins)


def run_all(base, peft_model, names, prompt):
    """{adapter ("" = base): (greedy, logits [steps, vocab], margin)} for one prompt."""
    out = {"": greedy(base, prompt)}
    for name in names:
        peft_model.set_adapter(name)
        out[name] = greedy(peft_model, prompt)
    return out


def pick_prompts(base, peft_model, names):
    vocab = BASE_CONFIG["vocab_size"]
    prompts, results = [], []
    for i, length in enumerate(PROMPT_LENGTHS):
        for attempt in range(MAX_PROMPT_TRIES):
            gen = torch.Generator().manual_seed(PROMPT_SEED + i * 1000 + attempt)
            prompt = torch.randint(0, vocab, (length,), generator=gen).tolist()
            res = run_all(base, peft_model, names, prompt)
            worst = min(m for _, _, m in res.values())
            if worst > MARGIN_MIN:
                break
        else:
            fail(f"no prompt of length {length} with margin > {MARGIN_MIN} for every adapter")
        print(f"prompt {i}: length {length}, seed attempt {attempt}, margin min {worst:.4g}")
        prompts.append(prompt)
        results.append(res)
    return prompts, results


@torch.no_grad()
def check_disabled_is_base(peft_model, prompts, results):
    """PEFT with adapters disabled must be the plain transformers base (sanity of the oracle)."""
    worst = 0.0
    with peft_model.disable_adapter():
        for p, prompt in enumerate(prompts):
            toks, rows, _ = results[p][""]
            ids = list(prompt)
            for t in range(MAX_NEW_TOKENS):
                worst = max(worst, float((forward_last(peft_model, ids) - rows[t]).abs().max()))
                ids.append(toks[t])
    if worst > BASE_TOL:
        fail(f"PEFT with adapters disabled differs from the base by {worst:.3g}")
    return worst


def mixed_rows(names):
    """(adapter, prompt, step) per batch row: every adapter and the base once, with varied prompts
    and steps, then repeats (same adapter twice, two adapters on one sequence, base twice)."""
    rows = []
    for k, name in enumerate([""] + names):
        rows.append((name, k % len(PROMPT_LENGTHS), (3 * k + 1) % MAX_NEW_TOKENS))
    # Step 0 is the bare prompt, so prompt 1 at step 0 is one sequence under four adapters (with
    # e_mlp_only's row above); later steps follow each adapter's own greedy tokens.
    extra = [("b_r16_all", 3, 7), ("", 0, 0), ("d_pattern", 1, 0), ("f_r1_k", 1, 0), ("g_r64_all", 1, 0)]
    rows += [r for r in extra if r[0] in names or r[0] == ""]
    return rows


@torch.no_grad()
def mixed_batch(peft_model, prompts, results, names, base_name):
    """One right-padded batch, one adapter per row through PEFT's adapter_names. Right padding keeps
    the real positions exact: causal attention never looks at the pads that follow them, and
    position ids start at 0 in every row."""
    rows = mixed_rows(names)
    seqs = [prompts[p] + results[p][a][0][:t] for a, p, t in rows]
    width = max(len(s) for s in seqs)
    pad = 0
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    adapter_names = [a if a else base_name for a, _, _ in rows]
    logits = peft_model(input_ids=ids, attention_mask=mask, use_cache=False,
                        adapter_names=adapter_names).logits.float()
    got = torch.stack([logits[i, len(s) - 1] for i, s in enumerate(seqs)])
    want = torch.stack([results[p][a][1][t] for a, p, t in rows])
    per_row = (got - want).abs().amax(dim=1)
    for (a, p, t), d in zip(rows, per_row.tolist()):
        print(f"  mixed row {a or base_name:>12} prompt {p} step {t}: max diff {d:.3g}")
    max_diff = float(per_row.max())
    if max_diff > MIXED_TOL:
        fail(f"mixed-adapter batch differs from single-adapter runs by {max_diff:.3g} > {MIXED_TOL}")
    desc = {
        "padding": "right",
        "pad_id": pad,
        "peft_base_name": base_name,
        "rows": [{"adapter": a, "prompt": p, "step": t, "input_ids": s}
                 for (a, p, t), s in zip(rows, seqs)],
        "logits": "logits.mixed",
    }
    return desc, got.contiguous(), max_diff


def check_adapter_effects(names, results):
    """Every adapter must change the logits clearly and change some greedy token, so a server that
    ignores or mixes up adapters fails on tokens, not only on a tolerance."""
    effects = {}
    for name in names:
        delta = max(float((res[name][1][0] - res[""][1][0]).abs().max()) for res in results)
        changed = sum(res[name][0] != res[""][0] for res in results)
        effects[name] = (delta, changed)
        if delta < ADAPTER_EFFECT_MIN:
            fail(f"{name}: moves step-0 logits by at most {delta:.3g} (< {ADAPTER_EFFECT_MIN})")
        if changed == 0:
            fail(f"{name}: greedy tokens equal the base's on every prompt")
    for i, a in enumerate(names):          # and adapters must differ from each other
        for b in names[i + 1:]:
            if all(res[a][0] == res[b][0] for res in results):
                fail(f"{a} and {b} give the same greedy tokens on every prompt")
    return effects


def logits_key(adapter, prompt):
    return f"logits.{adapter or PEFT_BASE_NAME}.{prompt}"


def write_goldens(out_dir, prompts, results, names, modules, mixed, mixed_logits, mixed_diff):
    cases, tensors, margin = [], {}, float("inf")
    for adapter in [""] + names:
        for p in range(len(prompts)):
            toks, rows, m = results[p][adapter]
            key = logits_key(adapter, p)
            cases.append({"adapter": adapter, "prompt": p, "greedy": toks, "logits": key,
                          "margin_min": m})
            tensors[key] = rows.contiguous()
            margin = min(margin, m)
    tensors[mixed["logits"]] = mixed_logits
    golden = {
        "base": "base",
        "adapters": [{"name": n, "dir": f"adapters/{n}",
                      "modules": {k: {"r": v[0], "scale": v[1]} for k, v in sorted(modules[n].items())}}
                     for n in names],
        "prompts": prompts,
        "max_new_tokens": MAX_NEW_TOKENS,
        "cases": cases,
        "mixed_batch": mixed,
        "margin_min": margin,
        "mixed_batch_max_diff": mixed_diff,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "safetensors": getattr(safetensors, "__version__", "?"),
        },
    }
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    save_file(tensors, os.path.join(out_dir, "golden.safetensors"), metadata={"format": "pt"})
    return margin


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=HERE, help="fixture directory (default: this script's)")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    base_dir = os.path.join(out_dir, "base")
    adapters_dir = os.path.join(out_dir, "adapters")
    for stale in ("golden.json", "golden.safetensors"):
        if os.path.exists(os.path.join(out_dir, stale)):
            os.remove(os.path.join(out_dir, stale))
    reset_dir(adapters_dir)

    built = build_base()
    save_base(built, base_dir)
    base = load_base(base_dir)
    check_same_weights(built, base)
    del built

    names = [spec["name"] for spec in ADAPTERS]
    for spec in ADAPTERS:
        make_adapter(spec, base_dir, os.path.join(adapters_dir, spec["name"]))

    # Goldens from disk: a second copy of the base wrapped by PEFT with every adapter loaded back.
    host = load_base(base_dir)
    peft_model = PeftModel.from_pretrained(host, os.path.join(adapters_dir, names[0]), adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(os.path.join(adapters_dir, name), adapter_name=name)
    peft_model.eval()
    modules = {}
    for spec in ADAPTERS:
        got = lora_modules(peft_model, spec["name"])
        check_modules(spec, got)
        modules[spec["name"]] = {k: (v[0], v[1]) for k, v in got.items()}

    prompts, results = pick_prompts(base, peft_model, names)
    disabled_diff = check_disabled_is_base(peft_model, prompts, results)
    effects = check_adapter_effects(names, results)
    base_name = peft_base_name()
    mixed, mixed_logits, mixed_diff = mixed_batch(peft_model, prompts, results, names, base_name)
    margin = write_goldens(out_dir, prompts, results, names, modules, mixed, mixed_logits, mixed_diff)

    print(f"base: {tree_bytes(base_dir) / 1024:.0f} KiB")
    for name in names:
        delta, changed = effects[name]
        size = tree_bytes(os.path.join(adapters_dir, name))
        print(f"{name}: {size / 1024:.0f} KiB, {len(modules[name])} modules, step-0 max |dlogit| vs base "
              f"{delta:.3g}, greedy differs from base on {changed}/{len(prompts)} prompts")
    total = tree_bytes(out_dir)
    print(f"margin min {margin:.4g} (> {MARGIN_MIN}); adapters-disabled vs base max diff {disabled_diff:.3g}; "
          f"mixed batch ({len(mixed['rows'])} rows, base as {base_name!r}) max diff {mixed_diff:.3g}")
    print(f"total {total / 1024:.0f} KiB in {out_dir} (torch {torch.__version__}, transformers "
          f"{transformers.__version__}, peft {peft.__version__})")
    if total > FIXTURE_CAP_BYTES:
        fail(f"fixtures take {total} bytes, over the {FIXTURE_CAP_BYTES}-byte cap")


if __name__ == "__main__":
    main()
