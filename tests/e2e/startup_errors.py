#!/usr/bin/python3
"""Start-up refuses bad model directories and flags: each case must exit non-zero within a bounded
time, print a message naming the cause, and never report SERVING.

Rank 0 opens its gRPC port (health NOT_SERVING) once its own config and tokenizer are loaded, before the
workers report. So a cause rank 0 finds itself (no directory, a bad config.json, a port in use, a bad
flag) must leave the port closed, while a cause only the workers find (weights, shapes, the
tensor-parallel split) may show a listening server: there the workers are slowed with
--test-load-delay-s so that the probe does meet it, and it must answer NOT_SERVING until the job exits,
having closed its port first.

usage: startup_errors.py MPIRUN LORASERVE GOOD_FIXTURE_DIR   (prints TAP)"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from served import generate

n_tests, failed = 0, 0
# Long enough for the probe below to connect and ask at least once on a busy two-core machine.
WORKER_DELAY = ['--test-load-delay-s', '1.5']


def tap(ok, name):
    global n_tests, failed
    n_tests += 1
    failed += 0 if ok else 1
    print('%s %d - %s' % ('ok' if ok else 'not ok', n_tests, name), flush=True)


def probe(proc, port_file, timeout_s):
    """Asks health Check every 50 ms while the job runs; returns (statuses seen, exit code or None)."""
    import grpc
    seen, channel, end = [], None, time.time() + timeout_s
    while proc.poll() is None and time.time() < end:
        if channel is None and os.path.exists(port_file) and open(port_file).read().strip():
            channel = grpc.insecure_channel('127.0.0.1:' + open(port_file).read().strip())
        if channel is not None:
            try:
                raw = channel.unary_unary(generate.HEALTH_CHECK)(generate.encode_health_request(''), timeout=1)
                seen.append(generate.decode_health_response(raw))
            except grpc.RpcError:
                pass            # not up yet, or already gone
        time.sleep(0.05)
    if channel is not None:
        channel.close()
    return seen, proc.poll()


def run(mpirun, binary, args, tmp):
    """Returns (exit code or None on a hang, output, listened, health statuses seen)."""
    port_file = os.path.join(tmp, 'port')
    if os.path.exists(port_file):
        os.remove(port_file)
    out_path = os.path.join(tmp, 'out')
    cmd = [mpirun, '-np', '3', binary, '--listen', '127.0.0.1:0', '--port-file', port_file] + args
    with open(out_path, 'w') as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        seen, rc = probe(proc, port_file, 60)
        if rc is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    return rc, open(out_path).read(), os.path.exists(port_file), seen


def main():
    mpirun, binary, good = sys.argv[1:4]
    tmp = tempfile.mkdtemp(prefix='loraserve-startup-')

    def model(name, edit):
        d = os.path.join(tmp, name)
        shutil.copytree(good, d)
        edit(d)
        return d

    def set_config(d, **kv):
        path = os.path.join(d, 'config.json')
        cfg = json.load(open(path))
        cfg.update(kv)
        json.dump(cfg, open(path, 'w'))

    def truncate(d):
        path = os.path.join(d, 'model.safetensors')
        size = os.path.getsize(path)
        with open(path, 'r+b') as f:
            f.truncate(size // 2)

    busy = socket.socket()
    busy.bind(('127.0.0.1', 0))
    busy.listen()
    busy_addr = '127.0.0.1:%d' % busy.getsockname()[1]
    # (name, flags, what the message must name, found by the workers: the port may open meanwhile)
    cases = [
        ('missing model directory', ['--model', os.path.join(tmp, 'nope')], 'config.json', False),
        ('config.json is not JSON', ['--model', model('badjson', lambda d: open(os.path.join(d, 'config.json'), 'w').write('{"a": '))], 'config.json', False),
        ('unsupported architecture', ['--model', model('arch', lambda d: set_config(d, architectures=['GPT2LMHeadModel']))], 'architecture', False),
        ('missing safetensors', ['--model', model('noweights', lambda d: os.remove(os.path.join(d, 'model.safetensors')))], 'safetensors', True),
        ('truncated safetensors', ['--model', model('trunc', truncate)], 'model.safetensors', True),
        ('shape mismatch with config', ['--model', model('shape', lambda d: set_config(d, intermediate_size=200))], 'shape', True),
        ('tensor-parallel split that does not divide', ['--model', model('heads', lambda d: set_config(d, num_key_value_heads=1, num_attention_heads=3, head_dim=16))], 'divisible', True),
        ('gRPC port in use', ['--model', good, '--listen', busy_addr], 'cannot listen on ' + busy_addr, False),
        ('metrics port in use', ['--model', good, '--metrics-listen', busy_addr], 'cannot serve metrics on ' + busy_addr, False),
        ('unknown flag', ['--frobnicate', '1'], 'unknown flag', False),
        ('bad flag value', ['--max-batch', 'many'], 'max-batch', False),
    ]
    for name, args, needle, by_workers in cases:
        rc, out, listened, seen = run(mpirun, binary, args + (WORKER_DELAY if by_workers else []), tmp)
        ok = rc not in (0, None) and needle.lower() in out.lower() and 'SERVING' not in seen
        if by_workers:
            ok &= listened and 'NOT_SERVING' in seen and 'closing port' in out
            what = 'listened NOT_SERVING, closed the port'
        else:
            ok &= not listened and not seen
            what = 'never listened'
        detail = '' if ok else '\n# ' + out.strip().replace('\n', '\n# ')[-1500:]
        tap(ok, '%s: exit %s, message names "%s", never SERVING, %s (health seen: %s)%s' % (
            name, rc, needle, what, sorted(set(seen)), detail))
    busy.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print('1..%d' % n_tests)


if __name__ == '__main__':
    main()
    sys.exit(1 if failed else 0)
