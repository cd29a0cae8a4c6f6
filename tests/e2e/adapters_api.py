#!/usr/bin/python3
"""The Adapters service and lazy loading through gRPC, on the PEFT fixture model: LoadAdapter /
ListAdapters / UnloadAdapter, names resolved under --adapters (nested names work; "..", absolute paths
and symlinks leaving the root are refused before anything is opened), invalid adapters refused with a
status naming the field and leaving the registry unchanged, and unloading an adapter that requests use
refused with FAILED_PRECONDITION until they finish.

usage: adapters_api.py MPIRUN LORASERVE GOLDEN_LORA_DIR   (prints TAP)"""
import json
import os
import shutil
import sys
import tempfile
import threading
import time

from served import Server, Tap, generate


def make_root(fixture):
    """An adapters root with good, nested and broken adapters, and an escape hatch outside it."""
    tmp = tempfile.mkdtemp(prefix='loraserve-adapters-')
    root, src = os.path.join(tmp, 'root'), os.path.join(fixture, 'adapters')
    os.makedirs(os.path.join(root, 'org'))
    shutil.copytree(os.path.join(src, 'a_r8_qv'), os.path.join(root, 'good'))
    shutil.copytree(os.path.join(src, 'f_r1_k'), os.path.join(root, 'org', 'nested'))
    shutil.copytree(os.path.join(src, 'a_r8_qv'), os.path.join(tmp, 'outside'))
    os.symlink(os.path.join(tmp, 'outside'), os.path.join(root, 'escape'))

    def variant(name, **changes):
        d = os.path.join(root, name)
        shutil.copytree(os.path.join(src, 'a_r8_qv'), d)
        path = os.path.join(d, 'adapter_config.json')
        cfg = json.load(open(path))
        cfg.update(changes)
        json.dump(cfg, open(path, 'w'))
        return d

    variant('dora', use_dora=True)
    variant('save', modules_to_save=['lm_head'])
    variant('badrank', r=4)
    variant('otherbase', base_model_name_or_path='some/other-model')
    d = variant('pickle')
    os.rename(os.path.join(d, 'adapter_model.safetensors'), os.path.join(d, 'adapter_model.bin'))
    return tmp, root


def call(srv, method, name=None):
    import grpc
    try:
        return 'OK', generate.adapter_call(srv.channel, method, name)
    except grpc.RpcError as e:
        return e.code().name, e.details()


def names(srv):
    return sorted(a['name'] for a in call(srv, generate.LIST_ADAPTERS)[1])


def check_refusals(t, srv):
    cases = [('../good', 'INVALID_ARGUMENT', ''), ('/etc', 'INVALID_ARGUMENT', ''),
             ('escape', 'INVALID_ARGUMENT', ''), ('missing', 'NOT_FOUND', ''),
             ('dora', 'FAILED_PRECONDITION', 'use_dora'), ('save', 'FAILED_PRECONDITION', 'modules_to_save'),
             ('badrank', 'INVALID_ARGUMENT', 'lora_'), ('otherbase', 'FAILED_PRECONDITION', 'base_model'),
             ('pickle', 'FAILED_PRECONDITION', 'bin')]
    before = names(srv)
    for name, code, needle in cases:
        got, detail = call(srv, generate.LOAD_ADAPTER, name)
        t.ok(got == code and needle in str(detail), 'LoadAdapter %r: %s naming %r (got %s: %s)'
             % (name, code, needle or 'the name', got, detail))
    t.ok(names(srv) == before, 'refused adapters change nothing (%s)' % names(srv))


def check_unload_in_use(t, srv):
    import grpc
    req = {'prompt_token_ids': [1, 5, 9], 'max_new_tokens': 400, 'ignore_eos': True, 'adapter': 'good'}
    started, stop = threading.Event(), threading.Event()

    def long_stream():
        call_ = srv.channel.unary_stream(generate.GENERATE_STREAM, request_serializer=generate._identity,
                                         response_deserializer=generate._identity)
        it = call_(generate.encode_generate_request(req), timeout=120)
        try:
            for _ in it:
                started.set()
                if stop.is_set():
                    it.cancel()
        except grpc.RpcError:
            pass

    th = threading.Thread(target=long_stream)
    th.start()
    started.wait(30)
    got, detail = call(srv, generate.UNLOAD_ADAPTER, 'good')
    t.ok(got == 'FAILED_PRECONDITION' and 'used by' in detail, 'UnloadAdapter while a stream uses it: %s: %s'
         % (got, detail))
    stop.set()
    th.join()
    for _ in range(50):
        got, detail = call(srv, generate.UNLOAD_ADAPTER, 'good')
        if got == 'OK':
            break
        time.sleep(0.1)
    t.ok(got == 'OK' and 'good' not in names(srv), 'UnloadAdapter once the stream ended: %s' % got)


def main():
    mpirun, binary, fixture = sys.argv[1:4]
    t = Tap()
    tmp, root = make_root(fixture)
    args = ['--model', os.path.join(fixture, 'base'), '--adapters', root]
    with Server(mpirun, binary, args, prefix='loraserve-adapters-api-') as srv:
        t.ok(srv.serving(), 'serving with --adapters %s' % root)
        t.ok(names(srv) == [], 'ListAdapters starts empty')
        got, info = call(srv, generate.LOAD_ADAPTER, 'good')
        t.ok(got == 'OK' and info['max_rank'] == 8 and info['target_modules'] == ['q_proj', 'v_proj'],
             'LoadAdapter good: rank 8 on q_proj, v_proj (%s)' % (info,))
        t.ok(call(srv, generate.LOAD_ADAPTER, 'good')[0] == 'OK' and names(srv) == ['good'], 'loading twice is fine')
        check_refusals(t, srv)
        r = generate.generate(srv.channel, {'prompt_token_ids': [1, 2, 3], 'max_new_tokens': 4,
                                            'adapter': 'org/nested'}, False, 60)[0]
        t.ok(len(r['token_ids']) == 4 and names(srv) == ['good', 'org/nested'], 'a nested adapter loads on first use')
        try:
            generate.generate(srv.channel, {'prompt_token_ids': [1], 'max_new_tokens': 2, 'adapter': '../x'}, False, 60)
            t.ok(False, 'Generate with adapter ../x refused')
        except Exception as e:
            t.ok('INVALID_ARGUMENT' in str(e.code()), 'Generate with adapter ../x: %s' % e.code().name)
        check_unload_in_use(t, srv)
        r = generate.generate(srv.channel, {'prompt_token_ids': [1, 2, 3], 'max_new_tokens': 4, 'adapter': 'good'},
                              False, 60)[0]
        t.ok(len(r['token_ids']) == 4, 'an unloaded adapter is loaded again on its next use')
        got, detail = call(srv, generate.UNLOAD_ADAPTER, 'never-loaded')
        t.ok(got == 'NOT_FOUND', 'UnloadAdapter of an unknown name: %s' % got)
    t.ok(srv.exit_status == 0, 'server stops with status 0 (got %s)' % srv.exit_status)
    if t.failed:
        srv.print_log_tail(40)
    shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
