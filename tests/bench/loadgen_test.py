#!/usr/bin/python3
"""The S-LoRA workload benchmark's tools on the CPU backend, in a few seconds: a tiny model and 40 adapter
names (8 distinct directories, the rest symlinks) from bench/gen_bench_model; a server under mpirun
with 2 workers; bench/loadgen.py replaying a 3-second Gamma trace over the adapters and a short base-model
trace. The JSON must be complete and add up (every request completed with its own output length,
tokens summed, latencies positive and ordered, the server's counts equal to the client's). Then the
server's step counters scraped around the adapter run (--metrics-url) must agree with the trace, and a
dead metrics URL must only cost a warning. Then the trace's determinism, the HF baseline's bookkeeping with its stand-in engine (same trace, same JSON
fields), and the report that makes the tables.

usage: loadgen_test.py MPIRUN LORASERVE GEN_BENCH_MODEL   (prints TAP)"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
bench = os.path.join(here, '..', '..', 'bench')
sys.path.insert(0, os.path.join(here, '..', 'e2e'))
sys.path.insert(0, bench)
from served import Server, Tap  # noqa: E402
from metrics import metrics_port  # noqa: E402
import loadgen  # noqa: E402

RESULT_KEYS = ('requests_in_trace', 'requests_sent', 'requests_completed', 'requests_incomplete', 'span_s',
               'throughput_req_s', 'throughput_tok_s', 'generated_tokens', 'first_token_s', 'per_token_s',
               'inter_token_s', 'latency_s', 'slo_s', 'slo_attainment', 'user_satisfaction', 'wall_s')


def tail(text):
    return text[-300:].replace('\n', ' | ')


def run_loadgen(t, addr, out, args, what):
    """The JSON, and loadgen's stderr."""
    cmd = [sys.executable, os.path.join(bench, 'loadgen.py'), '--addr', addr, '--out', out, '--per-request',
           '--seed', '7', '--drain-s', '20', '--label', what] + args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    t.ok(p.returncode == 0 and os.path.exists(out), '%s: loadgen exit %d %s' % (what, p.returncode, tail(p.stderr)))
    return (json.load(open(out)) if os.path.exists(out) else None), p.stderr


def check_doc(t, doc, what, n_adapters):
    if doc is None:
        t.ok(False, '%s: no JSON' % what)
        return
    res, reqs = doc['results'], doc['requests']
    top = all(doc.get(k) for k in ('command', 'date', 'device', 'host', 'config', 'results'))
    conf = all(k in doc['config'] for k in ('rate', 'cv', 'alpha', 'n_adapters', 'adapter_pattern', 'input_len',
                                             'output_len', 'seed', 'duration', 'drain_s', 'slo_s'))
    t.ok(top and conf and all(k in res for k in RESULT_KEYS), '%s: command, date, device, configuration and every '
         'result field present' % what)
    n = res['requests_in_trace']
    t.ok(n > 0 and res['requests_sent'] == n and res['requests_completed'] == n and res['requests_incomplete'] == 0
         and len(reqs) == n and not res['errors_by_code'], '%s: all %d requests of the trace completed (%s)'
         % (what, n, res['errors_by_code']))
    t.ok(all(r['tokens'] == r['output_len'] and r['finish'] == 'LENGTH' for r in reqs)
         and res['generated_tokens'] == sum(r['output_len'] for r in reqs) == res['generated_tokens_completed']
         and res['server_completion_tokens_match'], '%s: %d tokens = the sum of the output lengths, each request '
         'held to its own (ignore_eos), the server counted the same' % (what, res['generated_tokens']))
    ft, pt, lat = res['first_token_s'], res['per_token_s'], res['latency_s']
    t.ok(0 < ft['p50'] <= ft['p99'] <= ft['max'] and ft['mean'] > 0 and 0 < pt['mean'] and pt['p50'] <= pt['p99']
         and ft['count'] == n and lat['mean'] >= ft['mean'] and all(0 < r['first_token_s'] <= r['done_s'] for r in reqs),
         '%s: latencies positive and ordered (first token mean %.4f s, per token %.5f s, request %.3f s)'
         % (what, ft['mean'], pt['mean'], lat['mean']))
    t.ok(res['throughput_req_s'] > 0 and res['throughput_tok_s'] > 0 and 0 <= res['slo_attainment'] <= 1
         and abs(res['throughput_req_s'] - n / res['span_s']) < 1e-2 * max(1.0, res['throughput_req_s']),
         '%s: %.2f req/s, %.0f tok/s, SLO attainment %.2f' % (what, res['throughput_req_s'], res['throughput_tok_s'],
                                                              res['slo_attainment']))
    names = {r['adapter'] for r in reqs}
    ok = names == {''} if n_adapters == 0 else ('' not in names and len(names) > 1 and
                                                 all(0 <= int(x.split('a')[-1]) < n_adapters for x in names))
    t.ok(ok and res['distinct_adapters_used'] == len(names), '%s: %d adapter name(s) used, all within n = %d'
         % (what, len(names), n_adapters))


def check_server_metrics(t, doc, what):
    """Every prompt token of the trace goes through a mixed step and every generated token but a request's
    last comes back as a decode token, so without preemption the steps' tokens add up exactly."""
    m = doc and doc.get('server_metrics')
    if not m:
        t.ok(False, '%s: server_metrics present (%r)' % (what, m))
        return
    res = doc['results']
    d, x = m.get('decode', {}), m.get('mixed', {})
    t.ok(m['steps'] > 0 and d.get('steps', 0) + x.get('steps', 0) == m['steps'] and 0 < m.get('busy_fraction', 0)
         <= 1.05, '%s: server_metrics: %d steps (%s decode, %s mixed), busy fraction %s' %
         (what, m['steps'], d.get('steps'), x.get('steps'), m.get('busy_fraction')))
    want = res['prompt_tokens_completed'] + res['generated_tokens'] - res['requests_completed']
    got = d.get('tokens', 0) + x.get('tokens', 0)
    t.ok(got == want if m.get('preemptions') == 0 else got > want, '%s: server_metrics: step tokens %d vs prompt + '
         'generated - requests %d (%s preemptions)' % (what, got, want, m.get('preemptions')))
    t.ok(all(k in m for k in ('adapter_loads', 'adapter_evictions', 'adapter_copy_bytes', 'adapter_read_s',
                              'adapter_copy_s', 'before', 'after')) and d.get('mean_step_ms', 0) > 0
         and d.get('mean_sequences_per_step', 0) >= 1 and m['after']['loraserve_steps_total'] -
         m['before']['loraserve_steps_total'] == m['steps'], '%s: server_metrics: adapter counters, means (decode '
         '%s ms, %s seqs per step), raw before/after' % (what, d.get('mean_step_ms'), d.get('mean_sequences_per_step')))


def check_trace(t):
    a = loadgen.parse_args(['--addr', '-', '--n-adapters', '1000', '--rate', '50', '--requests', '4000', '--cv', '2',
                            '--vocab', '1000', '--alpha', '1'])
    t1, _ = loadgen.build_trace(a)
    t2, _ = loadgen.build_trace(a)
    gaps = [y['arrival'] - x['arrival'] for x, y in zip([{'arrival': 0.0}] + t1, t1)]
    mean = sum(gaps) / len(gaps)
    cv = (sum((g - mean) ** 2 for g in gaps) / len(gaps)) ** 0.5 / mean
    lens = [r['input_len'] for r in t1] + [r['output_len'] for r in t1]
    idx = [int(r['adapter'][1:]) for r in t1]
    t.ok(t1 == t2 and abs(mean - 1 / 50) < 0.003 and abs(cv - 2) < 0.3 and min(lens) >= 8 and max(lens) <= 512
         and abs(sum(idx) / len(idx) - 500) < 30, 'trace: same seed, same trace; gaps mean %.4f s (1/R), cv %.2f, '
         'lengths in [8, 512], uniform adapters at alpha 1' % (mean, cv))
    a.alpha = 0.1
    skew, _ = loadgen.build_trace(a)
    low = sum(1 for r in skew if int(r['adapter'][1:]) < 10) / len(skew)
    t.ok(low > 0.5, 'trace: alpha 0.1 is skewed (%.0f%% of requests on the first 1%% of adapters)' % (100 * low))


def main():
    mpirun, binary, gen = sys.argv[1:4]
    t = Tap()
    tmp = tempfile.mkdtemp(prefix='loraserve-bench-')
    model, root = os.path.join(tmp, 'model'), os.path.join(tmp, 'adapters')
    subprocess.run([gen, 'model', model, 'tiny'], check=True)
    subprocess.run([gen, 'adapters', model, os.path.join(root, 's2'), '40', '8', '8,16,32,64'], check=True)
    links = sum(1 for d in os.listdir(os.path.join(root, 's2')) if os.path.islink(os.path.join(root, 's2', d)))
    t.ok(links == 32, 'gen_bench_model: 40 names, 8 directories, %d symlinks' % links)
    args = ['--model', model, '--adapters', root, '--backend', 'cpu', '--max-waiting', '4096', '--kv-cache-mb', '64',
            '--metrics-listen', '127.0.0.1:0']
    with Server(mpirun, binary, args, tp=2, prefix='loraserve-bench-') as srv:
        t.ok(srv.serving(), 'serving the tiny model with 2 workers (no tokenizer.json: token ids only)')
        addr = '127.0.0.1:' + open(srv.port_file).read().strip()
        url = 'http://127.0.0.1:%d/metrics' % metrics_port(srv)
        doc, err = run_loadgen(t, addr, os.path.join(tmp, 'lora.json'), [
            '--n-adapters', '40', '--adapter-pattern', 's2/a{:04d}', '--rate', '12', '--duration', '3',
            '--input-len', '8,24', '--output-len', '4,16', '--model', model, '--warmup-requests', '2', '--preload',
            '--meta', 'setting=S2', '--metrics-url', url], 'S2 n=40')
        check_doc(t, doc, 'S2 n=40', 40)
        t.ok(doc is not None and doc['results']['preload_failed'] == [] and doc['meta'] == {'setting': 'S2'},
             'preload registered every name; --meta kept')
        check_server_metrics(t, doc, 'S2 n=40')
        t.ok('loadgen: server metrics over' in err, 'S2 n=40: the server metrics summary line on stderr')
        doc0, err = run_loadgen(t, addr, os.path.join(tmp, 'base.json'), [
            '--n-adapters', '0', '--rate', '20', '--requests', '10', '--input-len', '8,16', '--output-len', '4,8',
            '--vocab', '1024', '--meta', 'setting=S1', '--metrics-url', 'http://127.0.0.1:1/metrics'], 'base n=0')
        check_doc(t, doc0, 'base n=0', 0)
        t.ok(doc0 is not None and doc0['server_metrics'] is None and 'warning: cannot scrape' in err,
             'base n=0: an unreachable --metrics-url is a warning and a null server_metrics')
    if t.failed:
        srv.print_log_tail()
    check_trace(t)
    hf_out = os.path.join(tmp, 'hf.json')
    p = subprocess.run([sys.executable, os.path.join(bench, 'hf_peft_baseline.py'), '--fake', '0.001', '--model', model,
                        '--adapters', root, '--n-adapters', '40', '--adapter-pattern', 's2/a{:04d}', '--rate', '12',
                        '--duration', '3', '--input-len', '8,24', '--output-len', '4,16', '--seed', '7',
                        '--time-cap-s', '10', '--out', hf_out], capture_output=True, text=True, timeout=60)
    hf = json.load(open(hf_out)) if p.returncode == 0 else None
    t.ok(hf is not None and all(k in hf['results'] for k in RESULT_KEYS) and doc is not None
         and hf['results']['requests_in_trace'] == doc['results']['requests_in_trace']
         and hf['results']['requests_completed'] == hf['results']['requests_in_trace']
         and hf['results']['generated_tokens'] == doc['results']['generated_tokens'],
         'HF baseline (stand-in engine): the same trace, the same JSON fields, the same token count %s'
         % tail(p.stderr))
    os.makedirs(os.path.join(tmp, 'sweep', 'results'))
    for f in ('lora.json', 'base.json', 'hf.json'):
        if os.path.exists(os.path.join(tmp, f)):
            shutil.copy(os.path.join(tmp, f), os.path.join(tmp, 'sweep', 'results', f))
    p = subprocess.run([sys.executable, os.path.join(bench, 'slora_report.py'), os.path.join(tmp, 'sweep')],
                       capture_output=True, text=True, timeout=30)
    table = open(os.path.join(tmp, 'sweep', 'table.md')).read() if p.returncode == 0 else ''
    t.ok('| S2 | 40 |' in table and '| base | 0 |' in table and '| S1 | 5 |' in table,
         'slora_report: table.md beside S-LoRA Table 3 %s' % tail(p.stderr))
    shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
