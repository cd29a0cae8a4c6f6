#!/usr/bin/python3
"""Serving throughput of a running loraserve, driven through gRPC: C concurrent clients each send
streaming requests back to back (prompt of P random token ids, N new tokens, ignore_eos, greedy) until
R requests are done. Prints and writes JSON: generated tokens/s, requests/s, first-token and per-token
latency percentiles, with the command, host and date.

usage: serve_bench.py --addr HOST:PORT [--concurrency 8] [--requests 64] [--prompt-len 32]
                      [--max-new-tokens 64] [--vocab 1024] [--out FILE] [--label TEXT]"""
import argparse
import json
import os
import platform
import random
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'scripts'))
import generate  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--addr', required=True)
    ap.add_argument('--concurrency', type=int, default=8)
    ap.add_argument('--requests', type=int, default=64)
    ap.add_argument('--prompt-len', type=int, default=32)
    ap.add_argument('--max-new-tokens', type=int, default=64)
    ap.add_argument('--vocab', type=int, default=1024)
    ap.add_argument('--out')
    ap.add_argument('--label', default='')
    a = ap.parse_args()
    import grpc
    channel = grpc.insecure_channel(a.addr)
    if generate.wait_serving(channel, 60) != 'SERVING':
        sys.exit('server at %s is not SERVING' % a.addr)
    rng = random.Random(1)
    prompts = [[rng.randrange(3, a.vocab) for _ in range(a.prompt_len)] for _ in range(a.requests)]
    lock, next_req, records, errors = threading.Lock(), [0], [], []

    def client():
        while True:
            with lock:
                i = next_req[0]
                next_req[0] += 1
            if i >= a.requests:
                return
            t0, stamps = time.monotonic(), []
            req = {'prompt_token_ids': prompts[i], 'max_new_tokens': a.max_new_tokens, 'ignore_eos': True}
            try:
                resp, _ = generate.generate(channel, req, True, 600,
                                            on_delta=lambda m: stamps.append((time.monotonic(), len(m['token_ids']))))
            except grpc.RpcError as e:
                errors.append('%s: %s' % (e.code().name, e.details()))
                continue
            first = next(t for t, n in stamps if n > 0)
            end = stamps[-1][0]
            n = len(resp['token_ids'])
            with lock:
                records.append({'ttft': first - t0, 'tpot': (end - first) / max(1, n - 1), 'tokens': n})

    t_start = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t_start
    tokens = sum(r['tokens'] for r in records)
    ttft, tpot = [r['ttft'] for r in records], [r['tpot'] for r in records]
    result = {
        'label': a.label, 'command': ' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
        'host': platform.node(), 'cpus': os.cpu_count(), 'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'config': vars(a), 'requests_ok': len(records), 'errors': errors[:5], 'n_errors': len(errors),
        'wall_s': round(wall, 3), 'generated_tokens': tokens,
        'tokens_per_s': round(tokens / wall, 1), 'requests_per_s': round(len(records) / wall, 2),
        'ttft_s': {'mean': round(sum(ttft) / max(1, len(ttft)), 4), 'p50': round(pct(ttft, 50), 4),
                   'p99': round(pct(ttft, 99), 4)},
        'tpot_s': {'mean': round(sum(tpot) / max(1, len(tpot)), 5), 'p50': round(pct(tpot, 50), 5),
                   'p99': round(pct(tpot, 99), 5)},
    }
    print(json.dumps(result, indent=2))
    if a.out:
        with open(a.out, 'w') as f:
            json.dump(result, f, indent=2)
            f.write('\n')
    sys.exit(1 if errors else 0)


if __name__ == '__main__':
    main()
