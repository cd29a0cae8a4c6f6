#!/usr/bin/env python3
"""The Hugging Face baseline of the S-LoRA workload benchmark: transformers + PEFT serving the same trace
(bench/loadgen.py builds it, same seed, same adapters, same model directory) the way a simple server
would, and writing the same JSON as the load generator, so bench/plot.sh and the tables put the two side
by side. S-LoRA compares against a PEFT server in the same way (its Table 3).

The server is simulated in-process: requests arrive on the trace's clock; whenever the GPU is free, the
oldest waiting requests (up to --max-batch, 32) form one batch, left-padded, with mixed adapters through
PEFT's adapter_names argument to generate() (the base model's rows use "__base__"), greedy, held to the
longest output of the batch (min_new_tokens = max_new_tokens: ignore_eos). Every decoding step is
timestamped (a logits processor that synchronises the GPU), so a request's first token and its last
(its own output length) are known even though the batch runs on. Adapters are loaded on first use
(PeftModel.load_adapter, one per distinct directory: the names that are symlinks share one).

Bounded: no new batch starts after --time-cap-s (from the first arrival) and a running batch is stopped
there; what did not finish is reported as incomplete. --fake replaces the model by a timed stand-in, so
the bookkeeping can be checked on a machine without torch.

usage: hf_peft_baseline.py --model DIR --adapters ROOT --n-adapters N --adapter-pattern 's1/a{:04d}'
                           --rate R [loadgen's workload flags] [--max-batch 32] [--time-cap-s 120] --out FILE"""
import argparse
import json
import os
import platform
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadgen  # noqa: E402  (the trace and the summary: identical definitions for both systems)


class FakeEngine:
    """A stand-in with a fixed step time: checks the scheduling and the JSON without a GPU."""
    name = 'fake (no model: fixed step time)'

    def __init__(self, step_s):
        self.step_s = step_s

    def ensure_adapters(self, dirs):
        return 0.0

    def generate(self, batch, max_new, deadline):
        stamps = []
        time.sleep(self.step_s * 2)          # the prefill
        for _ in range(max_new):
            if time.monotonic() > deadline:
                break
            time.sleep(self.step_s)
            stamps.append(time.monotonic())
        return stamps


class PeftEngine:
    def __init__(self, model_dir, step_log):
        import torch
        import transformers
        import peft
        self.torch, self.transformers, self.peft = torch, transformers, peft
        t = time.monotonic()
        try:
            base = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float16, device_map='cuda')
        except (TypeError, ValueError, ImportError) as e:     # older keyword, or no accelerate for device_map
            print('hf_peft_baseline: plain load (%s)' % e, file=sys.stderr)
            base = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float16).to('cuda')
        if next(base.parameters()).dtype != torch.float16:      # a version that ignored the keyword
            base = base.half()
        base.eval()
        self.base, self.model, self.loaded = base, None, {}
        self.load_s = time.monotonic() - t
        self.step_log = step_log
        self.name = '%s; torch %s, transformers %s, peft %s' % (torch.cuda.get_device_name(0), torch.__version__,
                                                                 transformers.__version__, peft.__version__)

    def ensure_adapters(self, dirs):
        """Loads the directories not loaded yet; returns the seconds it took (part of serving time)."""
        t = time.monotonic()
        for d in dirs:
            if d in self.loaded:
                continue
            name = 'd%d' % len(self.loaded)      # PEFT module keys cannot hold '.' or '/'
            if self.model is None:
                self.model = self.peft.PeftModel.from_pretrained(self.base, d, adapter_name=name)
                self.model.eval()
            else:
                self.model.load_adapter(d, adapter_name=name)
            self.loaded[d] = name
        return time.monotonic() - t

    def generate(self, batch, max_new, deadline):
        torch, tf = self.torch, self.transformers
        stamps = []

        class Stamp(tf.LogitsProcessor):
            def __call__(self, input_ids, scores):
                torch.cuda.synchronize()         # the step's logits are really there
                stamps.append(time.monotonic())
                return scores

        class Deadline(tf.StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), time.monotonic() > deadline, dtype=torch.bool,
                                  device=input_ids.device)

        width = max(len(r['prompt']) for r in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for k, r in enumerate(batch):            # left padding: every row's last prompt token is aligned
            ids[k, width - len(r['prompt']):] = torch.tensor(r['prompt'])
            mask[k, width - len(r['prompt']):] = 1
        kw = dict(input_ids=ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=max_new, min_new_tokens=max_new,
                  do_sample=False, pad_token_id=0, logits_processor=tf.LogitsProcessorList([Stamp()]),
                  stopping_criteria=tf.StoppingCriteriaList([Deadline()]))
        model = self.base
        if any(r['adapter'] for r in batch):
            model = self.model
            kw['adapter_names'] = [self.loaded[r['dir']] if r['adapter'] else '__base__' for r in batch]
        with torch.inference_mode():
            model.generate(**kw)
        return stamps


def resolve_dirs(trace, root):
    for r in trace:
        r['dir'] = os.path.realpath(os.path.join(root, r['adapter'])) if r['adapter'] else ''


def serve(engine, trace, a):
    """The simulated server loop; returns loadgen-style records and the adapter load time."""
    t0 = time.monotonic()
    cap_end = t0 + trace[0]['arrival'] + a.time_cap_s
    nxt, waiting, recs, load_s, batches = 0, [], [], 0.0, []
    while True:
        now = time.monotonic()
        while nxt < len(trace) and t0 + trace[nxt]['arrival'] <= now:
            waiting.append(trace[nxt])
            nxt += 1
        if now >= cap_end or (not waiting and nxt == len(trace)):
            break
        if not waiting:
            time.sleep(min(t0 + trace[nxt]['arrival'], cap_end) - now)
            continue
        batch, waiting = waiting[:a.max_batch], waiting[a.max_batch:]
        load_s += engine.ensure_adapters(sorted({r['dir'] for r in batch if r['dir']}))
        max_new = max(r['output_len'] for r in batch)
        t_start = time.monotonic()
        stamps = engine.generate(batch, max_new, cap_end)
        batches.append({'size': len(batch), 'adapters': len({r['dir'] for r in batch}), 'max_new': max_new,
                        'steps': len(stamps), 's': round(time.monotonic() - t_start, 3)})
        for r in batch:
            got = stamps[:r['output_len']]
            recs.append({'i': r['i'], 'adapter': r['adapter'], 'input_len': r['input_len'],
                         'output_len': r['output_len'], 'arrival': t0 + r['arrival'], 'sent': t0 + r['arrival'],
                         'stamps': [(t, 1) for t in got], 'tokens': len(got),
                         'finish': 'LENGTH' if len(got) == r['output_len'] else '',
                         'error': '' if len(got) == r['output_len'] else 'TIME_CAP: stopped at the time cap',
                         'server': {'completion_tokens': len(got)}, 'done': got[-1] if got else time.monotonic()})
    for r in waiting:                             # arrived, never scheduled before the cap
        recs.append({'i': r['i'], 'adapter': r['adapter'], 'input_len': r['input_len'], 'output_len': r['output_len'],
                     'arrival': t0 + r['arrival'], 'sent': t0 + r['arrival'], 'stamps': [], 'tokens': 0, 'finish': '',
                     'error': 'TIME_CAP: still waiting at the time cap', 'done': time.monotonic()})
    recs.sort(key=lambda r: r['i'])
    return recs, load_s, batches, t0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--adapters', default='', help='adapter root (the server\'s --adapters)')
    ap.add_argument('--max-batch', type=int, default=32)
    ap.add_argument('--time-cap-s', type=float, default=120.0, help='serving stops this long after the first arrival')
    ap.add_argument('--fake', type=float, default=0.0, metavar='STEP_S', help='no model: a step takes STEP_S')
    own, rest = ap.parse_known_args(argv)
    a = loadgen.parse_args(['--addr', '-'] + rest)
    a.adapters, a.max_batch, a.time_cap_s, a.fake = own.adapters, own.max_batch, own.time_cap_s, own.fake
    if a.n_adapters and not a.adapters:
        ap.error('--adapters ROOT is needed with --n-adapters > 0')
    trace, source = loadgen.build_trace(a)
    resolve_dirs(trace, a.adapters)
    missing = sorted({r['dir'] for r in trace if r['dir'] and not os.path.isdir(r['dir'])})
    if missing:
        sys.exit('hf_peft_baseline: adapter directories missing, e.g. %s' % missing[0])
    engine = FakeEngine(a.fake) if a.fake else PeftEngine(a.model, None)
    if a.warmup_requests and not a.fake:          # kernels and cuBLAS handles, outside the clock
        warm = [dict(r, output_len=4) for r in trace[:a.warmup_requests]]
        engine.ensure_adapters(sorted({r['dir'] for r in warm if r['dir']}))
        engine.generate(warm, 4, time.monotonic() + 120)
    recs, load_s, batches, t0 = serve(engine, trace, a)
    res = loadgen.summarize(recs, t0, len(trace), a)
    res.update(wall_s=round(time.monotonic() - t0, 3), adapter_load_s=round(load_s, 2), batches=len(batches),
               mean_batch_size=round(sum(b['size'] for b in batches) / max(1, len(batches)), 2),
               model_load_s=round(getattr(engine, 'load_s', 0.0), 1),
               distinct_adapter_dirs_loaded=len(getattr(engine, 'loaded', {})))
    config = {k: v for k, v in vars(a).items() if k not in ('meta', 'out', 'label', 'device', 'per_request', 'addr')}
    config.update(trace_source=source, trace_span_s=round(trace[-1]['arrival'], 3),
                  mean_input_len=round(sum(r['input_len'] for r in trace) / len(trace), 1),
                  mean_output_len=round(sum(r['output_len'] for r in trace) / len(trace), 1))
    doc = {
        'benchmark': 'S-LoRA synthetic workload, simulated arrivals in-process (bench/hf_peft_baseline.py)',
        'label': a.label, 'system': 'HF transformers + PEFT (batches of up to %d, mixed adapter_names)' % a.max_batch,
        'command': ' '.join(['bench/hf_peft_baseline.py'] + [shlex.quote(x) for x in argv]),
        'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'host': platform.node(), 'cpus': os.cpu_count(),
        'device': a.device or engine.name, 'meta': dict(kv.split('=', 1) for kv in a.meta if '=' in kv),
        'config': config, 'results': res, 'batches': batches[:200],
    }
    if a.out:
        with open(a.out, 'w') as f:
            f.write(json.dumps(doc, indent=2) + '\n')
    brief = {k: res[k] for k in ('requests_sent', 'requests_completed', 'throughput_req_s', 'throughput_tok_s',
                                 'slo_attainment', 'mean_batch_size')}
    print(('%s: ' % a.label if a.label else '') + json.dumps(brief), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
