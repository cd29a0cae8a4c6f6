#!/usr/bin/python3
"""The Prometheus endpoint (--metrics-listen) scraped over HTTP while and after the PEFT fixture model
serves calls with two adapters: the counters agree with the calls made (requests by status, generated
tokens, histogram counts, tokens and time of decode and mixed steps), the gauges with the pool (pages by
use within capacity, KV pages back to zero when idle, resident adapters listed with their pages), and
the log has one admitted and one finished line per request.

usage: metrics.py MPIRUN LORASERVE GOLDEN_LORA_DIR   (prints TAP)"""
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request

from served import Server, Tap, generate

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def scrape(port):
    """{(name, labels): value} of one scrape; labels as the raw '{...}' text ('' when none)."""
    text = urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise ValueError('not a sample line: %r' % line)
        out[(m.group(1), m.group(2) or '')] = float(m.group(3))
    return out


def val(s, name, labels=''):
    return s.get(('loraserve_' + name, labels), 0.0)


def hist_ok(s, name):
    """Buckets cumulative and non-decreasing, +Inf equal to _count."""
    buckets = [v for (n, lab), v in s.items() if n == 'loraserve_%s_bucket' % name]
    inf = val(s, name + '_bucket', '{le="+Inf"}')
    return buckets == sorted(buckets) and inf == val(s, name + '_count') and max(buckets) == inf


def metrics_port(srv, timeout_s=30):
    end = time.time() + timeout_s
    while time.time() < end:
        m = re.search(r'metrics on http://[^:]+:(\d+)/metrics', srv.log_text())
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    return 0


def run_calls(srv, reqs, results):
    def one(i, req, stream):
        try:
            results[i] = generate.generate(srv.channel, req, stream, 120)[0]
        except Exception as e:  # noqa: BLE001  (the check below reports it)
            results[i] = e
    threads = [threading.Thread(target=one, args=(i, req, i % 2 == 0)) for i, req in enumerate(reqs)]
    for th in threads:
        th.start()
    return threads


def check_idle_start(t, port):
    s = scrape(port)
    t.ok(val(s, 'requests_total', '{code="OK"}') == 0 and val(s, 'generated_tokens_total') == 0,
         'before any call: no requests, no tokens')
    t.ok(val(s, 'pool_pages_capacity') > 0 and val(s, 'pool_pages', '{use="free"}') == val(s, 'pool_pages_capacity'),
         'before any call: the whole pool is free (%d pages)' % val(s, 'pool_pages_capacity'))


def check_during(t, srv, port):
    reqs = [{'prompt_token_ids': [1, 2, 3 + i], 'max_new_tokens': 400, 'ignore_eos': True,
             'adapter': ('a_r8_qv', 'b_r16_all', '')[i % 3]} for i in range(6)]
    results = [None] * len(reqs)
    threads = run_calls(srv, reqs, results)
    seen = None
    for _ in range(100):
        time.sleep(0.05)
        s = scrape(port)
        if val(s, 'requests_running') + val(s, 'requests_waiting') >= 1 and val(s, 'pool_pages', '{use="kv"}') > 0:
            seen = s
            break
    for th in threads:
        th.join()
    t.ok(seen is not None, 'during the calls: running/waiting requests and KV pages are visible')
    if seen:
        used = val(seen, 'pool_pages', '{use="kv"}') + val(seen, 'pool_pages', '{use="adapter"}')
        t.ok(used <= val(seen, 'pool_pages_capacity') and used + val(seen, 'pool_pages', '{use="free"}') ==
             val(seen, 'pool_pages_capacity'), 'during the calls: kv + adapter + free pages == capacity')
        t.ok(val(seen, 'batch_size') >= 1, 'during the calls: batch size %d' % val(seen, 'batch_size'))
    ok = [r for r in results if isinstance(r, dict)]
    t.ok(len(ok) == len(reqs), 'all %d calls succeeded (%s)' % (len(reqs), [type(r).__name__ for r in results]))
    return ok


def check_after(t, port, ok, n_bad):
    time.sleep(0.5)         # the loop publishes at most every 50 ms
    s = scrape(port)
    n, tokens = len(ok), sum(r['completion_tokens'] for r in ok)
    t.ok(val(s, 'requests_total', '{code="OK"}') == n, 'requests_total{code="OK"} == %d calls' % n)
    t.ok(val(s, 'requests_total', '{code="INVALID_ARGUMENT"}') == n_bad,
         'requests_total{code="INVALID_ARGUMENT"} == %d refused calls' % n_bad)
    t.ok(val(s, 'generated_tokens_total') == tokens, 'generated_tokens_total == %d completion tokens' % tokens)
    t.ok(val(s, 'time_to_first_token_seconds_count') == n, 'first-token histogram count == requests')
    t.ok(val(s, 'time_per_output_token_seconds_count') == tokens - n,
         'per-token histogram count == tokens - requests (%d)' % (tokens - n))
    t.ok(hist_ok(s, 'time_to_first_token_seconds') and hist_ok(s, 'time_per_output_token_seconds'),
         'histogram buckets are cumulative and end at _count')
    t.ok(val(s, 'time_per_output_token_seconds_sum') > 0 and val(s, 'steps_total') >= tokens / 6,
         'per-token latency sum > 0, %d steps' % val(s, 'steps_total'))
    t.ok(val(s, 'requests_running') == 0 and val(s, 'requests_waiting') == 0 and
         val(s, 'pool_pages', '{use="kv"}') == 0, 'idle afterwards: nothing running or queued, no KV pages')
    resident = {lab: v for (name, lab), v in s.items() if name == 'loraserve_adapter_resident_pages'}
    t.ok(set(resident) == {'{adapter="a_r8_qv"}', '{adapter="b_r16_all"}'} and
         sum(resident.values()) == val(s, 'pool_pages', '{use="adapter"}') == val(s, 'pool_pages_capacity') -
         val(s, 'pool_pages', '{use="free"}'), 'both adapters listed as resident, their pages == adapter pages: %s' %
         resident)
    t.ok(val(s, 'adapter_loads_total') == 2 and val(s, 'adapters_registered') == 2 and
         val(s, 'adapters_resident') == 2 and val(s, 'adapter_copy_bytes_total') > 0,
         'adapter loads 2, registered 2, resident 2, %d bytes copied' % val(s, 'adapter_copy_bytes_total'))
    t.ok(val(s, 'adapter_read_seconds_total') > 0 and val(s, 'adapter_copy_seconds_total') >= 0,
         'adapter read time %.6f s, copy time %.6f s (worker rank 1)' % (val(s, 'adapter_read_seconds_total'),
                                                                        val(s, 'adapter_copy_seconds_total')))


def check_steps(t, s, n, tokens, wall_s):
    """Every prompt token goes through a mixed step and every generated token but a request's last comes
    back as one decode token, so without preemption (which recomputes) the steps' tokens are exactly
    prompt + generated - requests."""
    kinds = ('decode', 'mixed')
    by = {k: {f: val(s, f, '{kind="%s"}' % k) for f in ('steps_by_kind_total', 'step_tokens_total',
                                                         'step_sequences_total', 'step_seconds_total')}
          for k in kinds}
    d, x = by['decode'], by['mixed']
    t.ok(d['steps_by_kind_total'] + x['steps_by_kind_total'] == val(s, 'steps_total') and
         min(d['steps_by_kind_total'], x['steps_by_kind_total']) >= 1,
         'steps_by_kind_total: %d decode + %d mixed == steps_total' % (d['steps_by_kind_total'],
                                                                       x['steps_by_kind_total']))
    prompt = val(s, 'prompt_tokens_total')
    want = prompt + val(s, 'generated_tokens_total') - n
    got = d['step_tokens_total'] + x['step_tokens_total']
    exact = val(s, 'preemptions_total') == 0
    t.ok(got == want if exact else got > want, 'step_tokens_total: %d decode + %d mixed %s prompt %d + generated %d '
         '- requests %d' % (d['step_tokens_total'], x['step_tokens_total'], '==' if exact else '>', prompt, tokens, n))
    t.ok(x['step_tokens_total'] >= prompt and d['step_tokens_total'] == d['step_sequences_total'] and
         x['step_sequences_total'] >= x['steps_by_kind_total'],
         'mixed steps carry every prompt token and >= 1 sequence each, decode steps one token per sequence')
    secs = d['step_seconds_total'] + x['step_seconds_total']
    t.ok(d['step_seconds_total'] > 0 and x['step_seconds_total'] > 0 and secs < wall_s,
         'step_seconds_total: decode %.4f s + mixed %.4f s, within the %.1f s the test has run' %
         (d['step_seconds_total'], x['step_seconds_total'], wall_s))


def check_http(t, port):
    try:
        urllib.request.urlopen('http://127.0.0.1:%d/other' % port, timeout=10)
        code = 200
    except urllib.error.HTTPError as e:
        code = e.code
    t.ok(code == 404, 'another path answers 404 (%s)' % code)


def check_log(t, srv, n_calls):
    log = srv.log_text()
    admitted = re.findall(r' r0 I \S+ request (\S+) admitted: adapter=\S+ prompt_tokens=\d+', log)
    finished = re.findall(r' r0 I \S+ request (\S+) finished: status=OK finish=\w+ adapter=\S+', log)
    refused = re.findall(r' r0 I \S+ request \S+ refused: status=INVALID_ARGUMENT', log)
    t.ok(len(admitted) == n_calls and sorted(admitted) == sorted(finished) and len(refused) == 1,
         'log: one admitted and one finished line per call (%d, %d), one refused line' % (len(admitted), len(finished)))


def main():
    mpirun, binary, fixture = sys.argv[1:4]
    t = Tap()
    t0 = time.monotonic()
    args = ['--model', os.path.join(fixture, 'base'), '--adapters', os.path.join(fixture, 'adapters'),
            '--metrics-listen', '127.0.0.1:0']
    with Server(mpirun, binary, args, prefix='loraserve-metrics-') as srv:
        t.ok(srv.serving(), 'serving')
        port = metrics_port(srv)
        t.ok(port > 0, 'the log names the metrics port (%d)' % port)
        if not port:
            srv.print_log_tail()
            return t.done()
        check_idle_start(t, port)
        ok = check_during(t, srv, port)
        for stream in (False, True):
            ok.append(generate.generate(srv.channel, {'prompt_token_ids': [4, 5], 'max_new_tokens': 7}, stream, 60)[0])
        try:
            generate.generate(srv.channel, {'prompt_token_ids': [1], 'max_new_tokens': 1 << 20}, False, 60)
        except Exception:  # noqa: BLE001  (counted below as INVALID_ARGUMENT)
            pass
        check_after(t, port, ok, 1)
        check_steps(t, scrape(port), len(ok), sum(r['completion_tokens'] for r in ok), time.monotonic() - t0)
        check_http(t, port)
        check_log(t, srv, len(ok))
    t.ok(srv.exit_status == 0, 'graceful stop, mpirun exits 0 (%s)' % srv.exit_status)
    if t.failed:
        srv.print_log_tail()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
