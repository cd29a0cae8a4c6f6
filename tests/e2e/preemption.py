#!/usr/bin/python3
"""Preemption keeps outputs identical: a server with a pool far too small for its load (24 pages of
4 tokens) gets 8 concurrent sampled requests (temperature 0.8, top_p 0.9, one seed each); the newest
running requests are preempted and recomputed, and every output must equal the one the same request
gets when it runs alone. The log must show preemptions, or the test proves nothing.

usage: preemption.py MPIRUN LORASERVE   (prints TAP)"""
import sys
import tempfile
import threading

from served import Server, Tap, generate


def main():
    mpirun, binary = sys.argv[1:3]
    t = Tap()
    args = ['--demo-dir', tempfile.mkdtemp(prefix='loraserve-demo-'), '--page-tokens', '4', '--max-pages', '24']
    with Server(mpirun, binary, args) as srv:
        t.ok(srv.serving(), 'server with a 96-token pool is SERVING')
        reqs = [{'prompt_token_ids': [1] + [10 + 7 * i + k for k in range(7)], 'max_new_tokens': 40,
                 'temperature': 0.8, 'top_p': 0.9, 'seed': 1000 + i, 'ignore_eos': True} for i in range(8)]
        alone = [generate.generate(srv.channel, r, False, 60)[0]['token_ids'] for r in reqs]
        together = [None] * len(reqs)

        def run(i):
            together[i] = generate.generate(srv.channel, reqs[i], i % 2 == 0, 120)[0]['token_ids']

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(reqs))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for i in range(len(reqs)):
            t.ok(together[i] == alone[i] and len(alone[i]) == 40, 'request %d: same 40 tokens alone and under preemption' % i)
        n_pre = srv.log_text().count('preempting request')
        t.ok(n_pre > 0, 'preemptions happened (%d)' % n_pre)
    t.ok(srv.exit_status == 0, 'server stops with status 0 (got %s)' % srv.exit_status)
    if t.failed:
        srv.print_log_tail()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
