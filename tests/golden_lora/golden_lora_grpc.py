#!/usr/bin/python3
"""Multi-LoRA golden check through the whole server: the fixture base model is served with
--adapters pointing at the PEFT fixture adapters, nothing pre-loaded, so every adapter is registered
lazily on first use; all 32 (adapter, prompt) cases are sent at once, half as streams, so that
different adapters share batches and pages; the greedy tokens must equal PEFT's. A pool of 800 pages
of 4 tokens cannot hold every adapter and every request at once, so residency, eviction and copies are
exercised too. ListAdapters must then show all 7 adapters.

usage: golden_lora_grpc.py MPIRUN LORASERVE FIXTURE_DIR TP  (prints TAP)"""
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
    args = ['--model', os.path.join(fixture, 'base'), '--adapters', os.path.join(fixture, 'adapters'),
            '--page-tokens', '4', '--max-pages', '800', '--max-step-tokens', '64']
    with Server(mpirun, binary, args, tp=tp, prefix='loraserve-golden-lora-') as srv:
        t.ok(srv.serving(), 'serving the LoRA fixture at TP=%d' % tp)
        cases = golden['cases']
        results = [None] * len(cases)

        def run(j):
            c = cases[j]
            req = {'prompt_token_ids': golden['prompts'][c['prompt']], 'max_new_tokens': golden['max_new_tokens'],
                   'ignore_eos': True, 'adapter': c['adapter']}
            try:
                results[j] = generate.generate(srv.channel, req, j % 2 == 1, 120)[0]['token_ids']
            except grpc.RpcError as e:
                results[j] = '%s: %s' % (e.code().name, e.details())

        threads = [threading.Thread(target=run, args=(j,)) for j in range(len(cases))] if srv.channel else []
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for j, c in enumerate(cases):
            ok = results[j] == c['greedy']
            t.ok(ok, '%s, prompt %d (concurrent, %s): greedy tokens equal PEFT%s'
                 % (c['adapter'] or 'base', c['prompt'], 'stream' if j % 2 else 'unary',
                    '' if ok else ' (got %s, want %s)' % (results[j], c['greedy'])))
        listed = generate.adapter_call(srv.channel, generate.LIST_ADAPTERS) if srv.channel else []
        names = sorted(a['name'] for a in listed)
        want = sorted(a['name'] for a in golden['adapters'])
        t.ok(names == want, 'ListAdapters shows the %d adapters loaded on first use (%s)' % (len(want), names))
        t.ok(all(a['active_requests'] == 0 for a in listed), 'no adapter is held once every request finished')
    log = srv.log_text()
    t.ok(srv.exit_status == 0, 'server stops on SIGTERM with status 0 (got %s)' % srv.exit_status)
    summary = [line for line in log.splitlines() if 'adapters:' in line]
    print('# ' + (summary[-1] if summary else 'no summary line'))
    if t.failed:
        srv.print_log_tail()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
