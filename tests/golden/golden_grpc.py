#!/usr/bin/python3
"""Golden check through the whole server: serves a transformers fixture model with mpirun (1
coordinator + T workers), sends every fixture prompt several times at once, half as streams, so that
they share batches, and requires the greedy tokens transformers recorded, exactly. The logits
themselves are compared by test_golden (the same forward pass, without gRPC); here the question is
whether scheduling, paging, chunked prefill and the gRPC path leave the numbers alone.

usage: golden_grpc.py MPIRUN LORASERVE FIXTURE_DIR TP  (prints TAP)"""
import json
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'e2e'))
from served import Server, Tap, generate  # noqa: E402


def main():
    mpirun, binary, fixture, tp = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    import grpc
    golden = json.load(open(os.path.join(fixture, 'golden.json')))
    t = Tap()
    # A small page (4 tokens) and step budget (24 tokens) force many pages per sequence and chunked
    # prefill of the longer prompts, next to other requests' decodes.
    args = ['--model', fixture, '--page-tokens', '4', '--max-step-tokens', '24']
    with Server(mpirun, binary, args, tp=tp, prefix='loraserve-golden-') as srv:
        t.ok(srv.serving(), 'serving %s at TP=%d' % (os.path.basename(fixture), tp))
        jobs = [(i, rep % 2 == 1) for rep in range(3) for i in range(len(golden['prompts']))]
        results = [None] * len(jobs)

        def run(j):
            i, stream = jobs[j]
            req = {'prompt_token_ids': golden['prompts'][i], 'max_new_tokens': golden['max_new_tokens'],
                   'ignore_eos': True}
            try:
                results[j] = generate.generate(srv.channel, req, stream, 120)[0]['token_ids']
            except grpc.RpcError as e:
                results[j] = '%s: %s' % (e.code().name, e.details())

        threads = [threading.Thread(target=run, args=(j,)) for j in range(len(jobs))] if srv.channel else []
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for j, (i, stream) in enumerate(jobs):
            ok = results[j] == golden['greedy'][i]
            t.ok(ok, 'prompt %d (%d tokens, %s, concurrent): greedy tokens equal transformers%s'
                 % (i, len(golden['prompts'][i]), 'stream' if stream else 'unary',
                    '' if ok else ' (got %s, want %s)' % (results[j], golden['greedy'][i])))
    t.ok(srv.exit_status == 0, 'server stops on SIGTERM with status 0 (got %s)' % srv.exit_status)
    if t.failed:
        srv.print_log_tail()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
