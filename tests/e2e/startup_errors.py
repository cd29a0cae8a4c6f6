#!/usr/bin/python3
"""Start-up refuses bad model directories and flags: each case must exit non-zero within a bounded
time, print a message naming the cause, and never write the port file (it never listened).

usage: startup_errors.py MPIRUN LORASERVE GOOD_FIXTURE_DIR   (prints TAP)"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

n_tests, failed = 0, 0


def tap(ok, name):
    global n_tests, failed
    n_tests += 1
    failed += 0 if ok else 1
    print('%s %d - %s' % ('ok' if ok else 'not ok', n_tests, name), flush=True)


def run(mpirun, binary, args, tmp):
    port_file = os.path.join(tmp, 'port')
    cmd = [mpirun, '-np', '3', binary, '--listen', '127.0.0.1:0', '--port-file', port_file] + args
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout + p.stderr, os.path.exists(port_file)
    except subprocess.TimeoutExpired:
        return None, 'timed out', os.path.exists(port_file)


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

    cases = [
        ('missing model directory', ['--model', os.path.join(tmp, 'nope')], 'config.json'),
        ('config.json is not JSON', ['--model', model('badjson', lambda d: open(os.path.join(d, 'config.json'), 'w').write('{"a": '))], 'config.json'),
        ('unsupported architecture', ['--model', model('arch', lambda d: set_config(d, architectures=['GPT2LMHeadModel']))], 'architecture'),
        ('missing safetensors', ['--model', model('noweights', lambda d: os.remove(os.path.join(d, 'model.safetensors')))], 'safetensors'),
        ('truncated safetensors', ['--model', model('trunc', truncate)], 'model.safetensors'),
        ('shape mismatch with config', ['--model', model('shape', lambda d: set_config(d, intermediate_size=200))], 'shape'),
        ('tensor-parallel split that does not divide', ['--model', model('heads', lambda d: set_config(d, num_key_value_heads=1, num_attention_heads=3, head_dim=16))], 'divisible'),
        ('unknown flag', ['--frobnicate', '1'], 'unknown flag'),
        ('bad flag value', ['--max-batch', 'many'], 'max-batch'),
    ]
    for name, args, needle in cases:
        rc, out, listened = run(mpirun, binary, args, tmp)
        ok = rc not in (0, None) and needle.lower() in out.lower() and not listened
        tap(ok, '%s: exit %s, message names "%s", never listened%s' % (name, rc, needle,
            '' if ok else '\n# ' + out.strip().replace('\n', '\n# ')[-1500:]))
    shutil.rmtree(tmp, ignore_errors=True)
    print('1..%d' % n_tests)


if __name__ == '__main__':
    main()
    sys.exit(1 if failed else 0)
