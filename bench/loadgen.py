#!/usr/bin/python3
"""Replays S-LoRA's synthetic workload (research: Sheng et al. 2024, section 7.2) against a running
loraserve through gRPC GenerateStream, so that the first token and every later token are timed as a client
sees them.

The trace, fixed by --seed: arrivals are a Gamma process of rate R (req/s) and coefficient of variation
cv (cv = 1 is Poisson); request i asks for adapter floor(n * u_i^(1/alpha)) with u_i uniform, S-LoRA's
power law (alpha = 1 is uniform over the n adapters, smaller alpha is more skewed); input and output
lengths are uniform in [8, 512]; prompts are random token ids (no tokenizer needed) and ignore_eos holds
every request to its output length. n = 0 sends every request to the base model.

The trace holds round(R * duration) requests (or --requests). Requests still running --drain-s after the
last arrival are cut by their deadline and reported as incomplete, so one run never takes longer than
duration + drain (+ the optional warm-up and preload).

Reports (stdout, and JSON with --out, with the whole configuration, host, device, date and command):
throughput (completed req/s and generated tok/s over first arrival -> last completion, S-LoRA's
definition), first-token latency from the scheduled arrival (mean/p50/p99), per-token latency (per request:
(last - first token) / (tokens - 1); and every inter-token gap), end-to-end latency, SLO attainment (first
token within --slo-s, 6 s as in S-LoRA; requests without a first token count as misses).

With --metrics-url the server's Prometheus counters are scraped after the warm-up and after the drain,
and their deltas go to the JSON as server_metrics (null when a scrape fails): steps, step time, tokens
and sequences of decode-only and mixed steps, the fraction of the interval the workers were busy,
adapter loads, evictions, copies and preemptions. That tells a slow run's scheduling from its kernels.

usage: loadgen.py --addr HOST:PORT --n-adapters N [--adapter-pattern 's1/a{:04d}'] --rate R [--cv 1]
                  [--alpha 1] [--duration 60 | --requests K] [--input-len 8,512] [--output-len 8,512]
                  [--vocab V | --model DIR] [--seed 42] [--drain-s 60] [--out FILE] [--meta key=value]...
                  [--metrics-url http://HOST:PORT/metrics]"""
import argparse
import http.client
import json
import math
import os
import platform
import random
import shlex
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'scripts'))
import generate  # noqa: E402  (the project's protobuf codec: no generated modules needed)

N_CHANNELS = 4          # separate HTTP/2 connections: one would cap concurrent streams at the server's limit
PUBLISH_SETTLE_S = 0.15  # the server publishes its counters at most every 50 ms: the last step shows by then
STEP_KINDS = ('decode', 'mixed')
# server_metrics keys of the plain counters, and their series.
SERVER_COUNTERS = {'steps': 'loraserve_steps_total', 'preemptions': 'loraserve_preemptions_total',
                   'generated_tokens': 'loraserve_generated_tokens_total',
                   'prompt_tokens': 'loraserve_prompt_tokens_total',
                   'adapter_loads': 'loraserve_adapter_loads_total',
                   'adapter_evictions': 'loraserve_adapter_evictions_total',
                   'adapter_copy_bytes': 'loraserve_adapter_copy_bytes_total',
                   'adapter_read_s': 'loraserve_adapter_read_seconds_total',
                   'adapter_copy_s': 'loraserve_adapter_copy_seconds_total'}
# The per-kind figures: key within server_metrics[kind], and the counter family.
STEP_COUNTERS = {'steps': 'loraserve_steps_by_kind_total', 'seconds': 'loraserve_step_seconds_total',
                 'tokens': 'loraserve_step_tokens_total', 'sequences': 'loraserve_step_sequences_total'}


def pct(xs, p):
    """Nearest-rank percentile of a list (0 when empty)."""
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(math.ceil(p / 100 * len(xs))) - 1))]


def stats(xs, digits=5):
    return {'mean': round(sum(xs) / len(xs), digits) if xs else 0.0, 'p50': round(pct(xs, 50), digits),
            'p99': round(pct(xs, 99), digits), 'max': round(max(xs), digits) if xs else 0.0, 'count': len(xs)}


def parse_range(s):
    lo, _, hi = s.partition(',')
    lo, hi = int(lo), int(hi or lo)
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError('%r: LO,HI with 1 <= LO <= HI expected' % s)
    return [lo, hi]


def build_trace(a):
    """The requests in arrival order: S-LoRA's draws (adapter, input length, output length, gaps), then
    the prompt ids from a second stream so that changing the vocabulary leaves the trace itself alone."""
    n = a.requests if a.requests else max(1, int(round(a.rate * a.duration)))
    shape, scale = 1.0 / (a.cv * a.cv), a.cv * a.cv / a.rate
    try:
        import numpy as np
        rs = np.random.RandomState(a.seed)
        u = rs.power(a.alpha, n) if a.n_adapters else np.zeros(n)
        ins = rs.randint(a.input_len[0], a.input_len[1] + 1, n)
        outs = rs.randint(a.output_len[0], a.output_len[1] + 1, n)
        gaps = rs.gamma(shape, scale, n)
        draws = [(float(u[i]), int(ins[i]), int(outs[i]), float(gaps[i])) for i in range(n)]
        source = 'numpy RandomState'
    except ImportError:
        rng = random.Random(a.seed)
        draws = [(rng.random() ** (1.0 / a.alpha), rng.randint(*a.input_len), rng.randint(*a.output_len),
                  rng.gammavariate(shape, scale)) for _ in range(n)]
        source = 'python random'
    ids = random.Random(a.seed + 1)
    trace, t = [], 0.0
    for i, (u, n_in, n_out, gap) in enumerate(draws):
        t += gap
        k = min(a.n_adapters - 1, int(a.n_adapters * u)) if a.n_adapters else -1
        trace.append({'i': i, 'arrival': t, 'adapter': a.adapter_pattern.format(k) if k >= 0 else '',
                      'input_len': n_in, 'output_len': n_out,
                      'prompt': [ids.randrange(a.min_token_id, a.vocab) for _ in range(n_in)]})
    return trace, source


class Client:
    def __init__(self, addr):
        import grpc
        self.grpc = grpc
        opts = [('grpc.use_local_subchannel_pool', 1), ('grpc.max_receive_message_length', 64 << 20)]
        self.channels = [grpc.insecure_channel(addr, options=opts) for _ in range(N_CHANNELS)]
        self.calls = [c.unary_stream(generate.GENERATE_STREAM, request_serializer=lambda b: b,
                                     response_deserializer=lambda b: b) for c in self.channels]

    def stream(self, k, req, timeout_s):
        """Yields (monotonic time, decoded message) for each message of one GenerateStream call."""
        for raw in self.calls[k % N_CHANNELS](generate.encode_generate_request(req), timeout=timeout_s):
            yield time.monotonic(), generate.decode_generate_response(raw)

    def close(self):
        for c in self.channels:
            c.close()


def run_request(client, r, t0, hard_end, rec):
    """One request of the trace, sent at its arrival; fills rec with its timeline (monotonic seconds)."""
    req = {'prompt_token_ids': r['prompt'], 'max_new_tokens': r['output_len'], 'ignore_eos': True,
           'adapter': r['adapter'], 'request_id': 'lg-%d' % r['i']}
    rec.update(i=r['i'], adapter=r['adapter'], input_len=r['input_len'], output_len=r['output_len'],
               arrival=t0 + r['arrival'], sent=time.monotonic(), stamps=[], tokens=0, finish='', error='')
    try:
        for t, m in client.stream(r['i'], req, max(1.0, hard_end - time.monotonic())):
            if m['token_ids']:
                rec['stamps'].append((t, len(m['token_ids'])))
                rec['tokens'] += len(m['token_ids'])
            if m['finish_reason'] != 'UNSPECIFIED':
                rec['finish'], rec['server'] = m['finish_reason'], {
                    k: m[k] for k in ('completion_tokens', 'prompt_tokens', 'queue_time_s', 'first_token_time_s',
                                      'total_time_s')}
    except client.grpc.RpcError as e:
        rec['error'] = '%s: %s' % (e.code().name, e.details())
    rec['done'] = time.monotonic()


def warm_up(client, a):
    """A few short requests before the clock starts: first-call costs (kernels, handles) stay out of it."""
    ids = random.Random(a.seed + 2)
    for k in range(a.warmup_requests):
        adapter = a.adapter_pattern.format(k % a.n_adapters) if a.n_adapters else ''
        req = {'prompt_token_ids': [ids.randrange(a.min_token_id, a.vocab) for _ in range(16)],
               'max_new_tokens': 8, 'ignore_eos': True, 'adapter': adapter}
        for _ in client.stream(k, req, 120):
            pass


def preload(a):
    """LoadAdapter for every name first, as S-LoRA reads all adapters at start-up; 8 calls at a time."""
    import grpc
    names, failed, lock = [a.adapter_pattern.format(k) for k in range(a.n_adapters)], [], threading.Lock()
    channel = grpc.insecure_channel(a.addr)

    def worker(part):
        for name in part:
            try:
                generate.adapter_call(channel, generate.LOAD_ADAPTER, name, 120)
            except grpc.RpcError as e:
                with lock:
                    failed.append('%s: %s: %s' % (name, e.code().name, e.details()))

    threads = [threading.Thread(target=worker, args=(names[k::8],)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    channel.close()
    return failed


def summarize(recs, t0, trace_len, a):
    ok = [r for r in recs if not r['error'] and r['finish'] and r['tokens'] == r['output_len']]
    ttft = [r['stamps'][0][0] - r['arrival'] for r in recs if r['stamps']]
    tpot = [(r['stamps'][-1][0] - r['stamps'][0][0]) / (r['tokens'] - 1) for r in ok if r['tokens'] > 1]
    gaps = []
    for r in recs:
        for (t_prev, _), (t, k) in zip(r['stamps'], r['stamps'][1:]):
            gaps += [(t - t_prev) / k] * k     # a message of k tokens stands for k equal gaps
    e2e = [r['done'] - r['arrival'] for r in ok]
    first = min([r['arrival'] for r in recs], default=t0)
    span = max(1e-9, max([r['done'] for r in ok], default=first) - first)
    span_tok = max(1e-9, max([r['stamps'][-1][0] for r in recs if r['stamps']], default=first) - first)
    first_ok = [r['stamps'][0][0] - r['arrival'] if r['stamps'] else math.inf for r in recs]
    tokens_all = sum(r['tokens'] for r in recs)
    errors = {}
    for r in recs:
        if r['error']:
            key = r['error'].split(':')[0]
            errors[key] = errors.get(key, 0) + 1
    return {
        'requests_in_trace': trace_len, 'requests_sent': len(recs), 'requests_completed': len(ok),
        'requests_incomplete': len(recs) - len(ok), 'errors_by_code': errors,
        'error_examples': sorted({r['error'] for r in recs if r['error']})[:5],
        'span_s': round(span, 3),
        'throughput_req_s': round(len(ok) / span, 4),
        'generated_tokens': tokens_all, 'generated_tokens_completed': sum(r['tokens'] for r in ok),
        'prompt_tokens_completed': sum(r['input_len'] for r in ok),
        'throughput_tok_s': round(tokens_all / span_tok, 1),
        'first_token_s': stats(ttft, 4), 'per_token_s': stats(tpot, 5), 'inter_token_s': stats(gaps, 5),
        'latency_s': stats(e2e, 3),
        'slo_s': a.slo_s, 'slo_attainment': round(sum(1 for x in first_ok if x < a.slo_s) / max(1, len(recs)), 4),
        'user_satisfaction': round(sum(1 - (x / a.slo_s) ** 2 for x in first_ok if x < a.slo_s) / max(1, len(recs)), 4),
        'distinct_adapters_used': len({r['adapter'] for r in recs}),
        'server_completion_tokens_match': all(r.get('server', {}).get('completion_tokens') == r['tokens'] for r in ok),
    }


def scrape_metrics(url):
    """(monotonic time, {series: value}) of the counters server_metrics uses, or None with a warning: the
    run itself never depends on the endpoint."""
    time.sleep(PUBLISH_SETTLE_S)
    wanted = set(SERVER_COUNTERS.values()) | {'%s{kind="%s"}' % (f, k) for f in STEP_COUNTERS.values()
                                              for k in STEP_KINDS}
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        at = time.monotonic()
        out = {}
        for line in text.splitlines():
            series, _, value = line.rpartition(' ')
            if series in wanted:
                v = float(value)
                out[series] = int(v) if v.is_integer() else v
        return at, out
    except (OSError, ValueError, http.client.HTTPException) as e:
        print('loadgen: warning: cannot scrape %s: %s' % (url, e), file=sys.stderr, flush=True)
        return None


def ratio(x, y, digits):
    return round(x / y, digits) if y else None


def server_delta(url, before, after):
    """The server_metrics object: counter deltas between the two scrapes (a counter one of them lacks is
    left out), per-kind means, busy_fraction, and the raw values."""
    if before is None or after is None:
        return None
    (t0, v0), (t1, v1) = before, after
    interval = t1 - t0

    def delta(series):
        if series not in v0 or series not in v1:
            return None
        d = v1[series] - v0[series]
        return round(d, 6) if isinstance(d, float) else d

    out = {'url': url, 'interval_s': round(interval, 3)}
    out.update({k: delta(series) for k, series in SERVER_COUNTERS.items() if delta(series) is not None})
    busy = 0.0
    for kind in STEP_KINDS:
        d = {k: delta('%s{kind="%s"}' % (f, kind)) for k, f in STEP_COUNTERS.items()}
        d = {k: v for k, v in d.items() if v is not None}
        if len(d) < len(STEP_COUNTERS):
            continue
        d.update(mean_step_ms=ratio(1000 * d['seconds'], d['steps'], 4),
                 mean_sequences_per_step=ratio(d['sequences'], d['steps'], 3))
        out[kind] = d
        busy += d['seconds']
    if all(kind in out for kind in STEP_KINDS):
        out['busy_fraction'] = ratio(busy, interval, 4)
    out['before'], out['after'] = v0, v1
    return out


def server_summary(m):
    if m is None:
        return 'loadgen: server metrics: none'
    kinds = ', '.join('%s %d steps (%s ms, %s seqs)' % (k, m[k]['steps'], m[k]['mean_step_ms'],
                                                        m[k]['mean_sequences_per_step'])
                      for k in STEP_KINDS if k in m)
    rest = ', '.join('%s %g' % (k, m[k]) for k in ('busy_fraction', 'adapter_loads', 'adapter_evictions',
                                                   'preemptions') if m.get(k) is not None)
    return 'loadgen: server metrics over %.1f s: %s; %s' % (m['interval_s'], kinds or 'no step counters', rest)


def describe_device(a):
    if a.device:
        return a.device
    try:
        out = subprocess.run(['nvidia-smi', '--query-gpu=name,memory.total', '--format=csv,noheader'],
                             capture_output=True, text=True, timeout=20).stdout.strip()
        if out:
            return '; '.join(out.splitlines())
    except (OSError, subprocess.SubprocessError):
        pass
    model = next((line.split(':', 1)[1].strip() for line in open('/proc/cpuinfo') if line.startswith('model name')),
                 platform.machine()) if os.path.exists('/proc/cpuinfo') else platform.machine()
    return 'CPU: %s x %d' % (model, os.cpu_count() or 0)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument('--addr', required=True, help='server host:port')
    ap.add_argument('--n-adapters', type=int, required=True, help='n (0 = base model only)')
    ap.add_argument('--adapter-pattern', default='a{:04d}', help='adapter name of index k (str.format)')
    ap.add_argument('--alpha', type=float, default=1.0, help='power-law exponent (1 = uniform)')
    ap.add_argument('--rate', type=float, required=True, help='R: mean arrivals per second')
    ap.add_argument('--cv', type=float, default=1.0, help='coefficient of variation of the gaps')
    ap.add_argument('--duration', type=float, default=60.0, help='trace length in s (requests = R * duration)')
    ap.add_argument('--requests', type=int, default=0, help='instead of --duration: this many requests')
    ap.add_argument('--input-len', type=parse_range, default=[8, 512], metavar='LO,HI')
    ap.add_argument('--output-len', type=parse_range, default=[8, 512], metavar='LO,HI')
    ap.add_argument('--vocab', type=int, default=0, help='prompt ids in [min-token-id, vocab)')
    ap.add_argument('--model', help='read the vocabulary size from DIR/config.json')
    ap.add_argument('--min-token-id', type=int, default=3, help='skip the special ids below this')
    ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--drain-s', type=float, default=60.0, help='after the last arrival, wait at most this long')
    ap.add_argument('--slo-s', type=float, default=6.0, help='first-token SLO')
    ap.add_argument('--warmup-requests', type=int, default=0, help='short untimed requests sent first')
    ap.add_argument('--preload', action='store_true', help='LoadAdapter every name before the trace (untimed)')
    ap.add_argument('--wait-ready', type=float, default=60.0, help='wait this long for health SERVING')
    ap.add_argument('--device', default='', help='device text for the JSON (default: nvidia-smi, else the CPU)')
    ap.add_argument('--label', default='')
    ap.add_argument('--meta', action='append', default=[], metavar='KEY=VALUE', help='extra fields for the JSON')
    ap.add_argument('--out', help='write the JSON here')
    ap.add_argument('--per-request', action='store_true', help='also write every request\'s figures to the JSON')
    ap.add_argument('--metrics-url', help='the server\'s Prometheus endpoint (http://HOST:PORT/metrics): '
                    'deltas around the run go to the JSON as server_metrics')
    a = ap.parse_args(argv)
    if a.model and not a.vocab:
        a.vocab = json.load(open(os.path.join(a.model, 'config.json')))['vocab_size']
    if a.vocab <= a.min_token_id:
        ap.error('--vocab or --model needed (prompt ids are random in [min-token-id, vocab))')
    if a.rate <= 0 or a.cv <= 0 or a.alpha <= 0 or a.n_adapters < 0:
        ap.error('rate, cv and alpha must be > 0, n-adapters >= 0')
    return a


def main(argv):
    a = parse_args(argv)
    import grpc
    with grpc.insecure_channel(a.addr) as ch:
        status = generate.wait_serving(ch, a.wait_ready)
    if status != 'SERVING':
        sys.exit('loadgen: %s is not SERVING (%s)' % (a.addr, status))
    trace, source = build_trace(a)
    client = Client(a.addr)
    t_setup = time.monotonic()
    preload_failed = preload(a) if a.preload and a.n_adapters else []
    preload_s = time.monotonic() - t_setup
    warm_up(client, a)
    scraped = scrape_metrics(a.metrics_url) if a.metrics_url else None
    recs = [dict() for _ in trace]
    t0 = time.monotonic()
    hard_end = t0 + trace[-1]['arrival'] + a.drain_s
    threads = []
    for r, rec in zip(trace, recs):
        delay = t0 + r['arrival'] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        th = threading.Thread(target=run_request, args=(client, r, t0, hard_end, rec), daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join(max(0.0, hard_end + 10 - time.monotonic()))
    wall = time.monotonic() - t0
    client.close()
    server = server_delta(a.metrics_url, scraped, scrape_metrics(a.metrics_url)) if scraped else None
    recs = [r for r in recs if 'done' in r]    # a thread still blocked past its deadline is not counted
    res = summarize(recs, t0, len(trace), a)
    res['wall_s'] = round(wall, 3)
    res['late_sends_s_max'] = round(max((r['sent'] - r['arrival'] for r in recs), default=0.0), 4)
    res['preload_s'] = round(preload_s, 2)
    res['preload_failed'] = preload_failed[:5]
    config = {k: v for k, v in vars(a).items() if k not in ('meta', 'out', 'label', 'device', 'per_request')}
    config.update(trace_source=source, trace_span_s=round(trace[-1]['arrival'], 3),
                  mean_input_len=round(sum(r['input_len'] for r in trace) / len(trace), 1),
                  mean_output_len=round(sum(r['output_len'] for r in trace) / len(trace), 1))
    doc = {
        'benchmark': 'S-LoRA synthetic workload over gRPC (bench/loadgen.py)', 'label': a.label,
        'system': 'loraserve',
        'command': ' '.join(['bench/loadgen.py'] + [shlex.quote(x) for x in argv]),
        'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'host': platform.node(),
        'cpus': os.cpu_count(), 'device': describe_device(a),
        'meta': dict(kv.split('=', 1) for kv in a.meta if '=' in kv),
        'config': config, 'results': res,
    }
    if a.metrics_url:
        doc['server_metrics'] = server
        print(server_summary(server), file=sys.stderr, flush=True)
    if a.per_request:
        doc['requests'] = [{'i': r['i'], 'adapter': r['adapter'], 'input_len': r['input_len'],
                            'output_len': r['output_len'], 'tokens': r['tokens'], 'finish': r['finish'],
                            'error': r['error'], 'arrival_s': round(r['arrival'] - t0, 4),
                            'first_token_s': round(r['stamps'][0][0] - r['arrival'], 4) if r['stamps'] else None,
                            'done_s': round(r['done'] - r['arrival'], 4)} for r in recs]
    text = json.dumps(doc, indent=2)
    if a.out:
        with open(a.out, 'w') as f:
            f.write(text + '\n')
    brief = {k: res[k] for k in ('requests_sent', 'requests_completed', 'throughput_req_s', 'throughput_tok_s',
                                 'slo_attainment')}
    brief.update(first_token_mean_s=res['first_token_s']['mean'], per_token_mean_s=res['per_token_s']['mean'])
    print(('%s: ' % a.label if a.label else '') + json.dumps(brief), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
