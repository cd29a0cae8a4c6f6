#!/usr/bin/python3
"""Preemption keeps outputs identical: a server with a pool far too small for its load (24 pages of
4 tokens) gets 8 concurrent sampled requests (temperature 0.8, top_p 0.9, one seed each); the newest
running requests are preempted and recomputed, and every output must equal the one the same request
gets when it runs alone. The log must show preemptions, or the test proves nothing.

usage: preemption.py MPIRUN LORASERVE   (prints TAP)"""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'scripts'))
import generate  # noqa: E402

n_tests, failed = 0, 0


def tap(ok, name):
    global n_tests, failed
    n_tests += 1
    failed += 0 if ok else 1
    print('%s %d - %s' % ('ok' if ok else 'not ok', n_tests, name), flush=True)


def main():
    mpirun, binary = sys.argv[1:3]
    import grpc
    tmp = tempfile.mkdtemp(prefix='loraserve-preempt-')
    port_file, pid_file, log_path = (os.path.join(tmp, n) for n in ('port', 'pid', 'log'))
    cmd = [mpirun, '-np', '3', binary, '--listen', '127.0.0.1:0', '--port-file', port_file, '--pid-file', pid_file,
           '--demo-dir', os.path.join(tmp, 'demo'), '--page-tokens', '4', '--max-pages', '24']
    log = open(log_path, 'w+')
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(300):
            if os.path.exists(port_file) or proc.poll() is not None:
                break
            time.sleep(0.1)
        channel = grpc.insecure_channel('127.0.0.1:' + open(port_file).read().strip())
        tap(generate.wait_serving(channel, 30) == 'SERVING', 'server with a 96-token pool is SERVING')
        reqs = [{'prompt_token_ids': [1] + [10 + 7 * i + k for k in range(7)], 'max_new_tokens': 40,
                 'temperature': 0.8, 'top_p': 0.9, 'seed': 1000 + i, 'ignore_eos': True} for i in range(8)]
        alone = [generate.generate(channel, r, False, 60)[0]['token_ids'] for r in reqs]
        together = [None] * len(reqs)

        def run(i):
            together[i] = generate.generate(channel, reqs[i], i % 2 == 0, 120)[0]['token_ids']

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(reqs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(len(reqs)):
            tap(together[i] == alone[i] and len(alone[i]) == 40,
                'request %d: same 40 tokens alone and under preemption' % i)
        log.flush()
        n_pre = open(log_path).read().count('preempting request')
        tap(n_pre > 0, 'preemptions happened (%d)' % n_pre)
    finally:
        if os.path.exists(pid_file):
            os.kill(int(open(pid_file).read()), signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        tap(rc == 0, 'server stops with status 0 (got %s)' % rc)
        if failed:
            log.seek(0)
            sys.stdout.write(''.join('# ' + line for line in log.readlines()[-30:]))
    print('1..%d' % n_tests)


if __name__ == '__main__':
    main()
    sys.exit(1 if failed else 0)
