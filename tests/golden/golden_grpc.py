#!/usr/bin/python3
"""Golden check through the whole server: serves a transformers fixture model with mpirun (1
coordinator + T workers), sends every fixture prompt several times at once, half as streams, so that
they share batches, and requires the greedy tokens transformers recorded, exactly. The logits
themselves are compared by test_golden (the same forward pass, without gRPC); here the question is
whether scheduling, paging, chunked prefill and the gRPC path leave the numbers alone.

usage: golden_grpc.py MPIRUN LORASERVE FIXTURE_DIR TP  (prints TAP)"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'scripts'))
import generate  # noqa: E402  (the project's own client codec)

n_tests = 0
failed = 0


def tap(ok, name):
    global n_tests, failed
    n_tests += 1
    failed += 0 if ok else 1
    print('%s %d - %s' % ('ok' if ok else 'not ok', n_tests, name), flush=True)


def main():
    mpirun, binary, fixture, tp = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    import grpc
    golden = json.load(open(os.path.join(fixture, 'golden.json')))
    tmp = tempfile.mkdtemp(prefix='loraserve-golden-')
    port_file, pid_file = os.path.join(tmp, 'port'), os.path.join(tmp, 'pid')
    # A small page (4 tokens) and step budget (24 tokens) force many pages per sequence and chunked
    # prefill of the longer prompts, next to other requests' decodes.
    cmd = [mpirun, '-np', str(tp + 1), binary, '--model', fixture, '--listen', '127.0.0.1:0',
           '--port-file', port_file, '--pid-file', pid_file, '--page-tokens', '4', '--max-step-tokens', '24']
    log = open(os.path.join(tmp, 'server.log'), 'w+')
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(300):
            if os.path.exists(port_file) or proc.poll() is not None:
                break
            time.sleep(0.1)
        tap(os.path.exists(port_file), 'server starts on %s at TP=%d' % (os.path.basename(fixture), tp))
        if not os.path.exists(port_file):
            return
        channel = grpc.insecure_channel('127.0.0.1:' + open(port_file).read().strip())
        tap(generate.wait_serving(channel, 30) == 'SERVING', 'health SERVING')
        jobs = [(i, rep % 2 == 1) for rep in range(3) for i in range(len(golden['prompts']))]
        results = [None] * len(jobs)

        def run(j):
            i, stream = jobs[j]
            req = {'prompt_token_ids': golden['prompts'][i], 'max_new_tokens': golden['max_new_tokens'],
                   'ignore_eos': True}
            try:
                results[j] = generate.generate(channel, req, stream, 120)[0]['token_ids']
            except grpc.RpcError as e:
                results[j] = '%s: %s' % (e.code().name, e.details())

        threads = [threading.Thread(target=run, args=(j,)) for j in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for j, (i, stream) in enumerate(jobs):
            ok = results[j] == golden['greedy'][i]
            tap(ok, 'prompt %d (%d tokens, %s, concurrent): greedy tokens equal transformers%s'
                % (i, len(golden['prompts'][i]), 'stream' if stream else 'unary',
                   '' if ok else ' (got %s, want %s)' % (results[j], golden['greedy'][i])))
        channel.close()
    finally:
        if os.path.exists(pid_file):
            os.kill(int(open(pid_file).read()), signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        tap(rc == 0, 'server stops on SIGTERM with status 0 (got %s)' % rc)
        if failed:
            log.seek(0)
            sys.stdout.write(''.join('# ' + line for line in log.readlines()[-30:]))
    print('1..%d' % n_tests)


if __name__ == '__main__':
    main()
    sys.exit(1 if failed else 0)
