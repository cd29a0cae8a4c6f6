#!/usr/bin/python3
"""launch/loraserve-launch, the one-node mpirun wrapper, driven as a user would: --help, refused flags,
then a TP=2 job (CPU backend) with --model and --adapters from the LoRA golden fixture on port 0. It must
print where it serves, answer Generate with and without an adapter, and on SIGTERM forward the stop to
rank 0 (which drains and reports its requests) and exit 0 with every rank gone. Then the same from a
relocatable bundle (launch/make-bundle.sh): its own loraserve-launch finds the binary beside it and the
ranks load gRPC from the bundle's lib/.

usage: launch_wrapper.py LORASERVE_LAUNCH LORASERVE GOLDEN_LORA_DIR   (prints TAP)"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'e2e'))
from served import Tap, generate  # noqa: E402


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent, mpirun, has not reaped it yet).
    try:
        return open('/proc/%d/stat' % pid).read().split(')')[-1].split()[0] != 'Z'
    except OSError:
        return False


def main():
    launch, binary, fixture = sys.argv[1:4]
    t = Tap()
    r = subprocess.run([launch, '--help'], capture_output=True, text=True, timeout=30)
    t.ok(r.returncode == 0 and '--tp N' in r.stdout and 'forwarded' in r.stdout, '--help prints the usage, exit 0')
    for bad in (['--tp', '0'], ['--tp', 'two'], ['--grace', '-1'], ['--model']):
        r = subprocess.run([launch, '--bin', binary] + bad, capture_output=True, text=True, timeout=30)
        t.ok(r.returncode == 2 and 'loraserve-launch:' in r.stderr, '%s refused with exit 2 (%s)'
             % (' '.join(bad), (r.stderr.strip().splitlines() or [r.returncode])[-1]))

    log_path = os.path.join(tempfile.mkdtemp(prefix='loraserve-launch-test-'), 'log')
    log = open(log_path, 'w+')
    cmd = [launch, '--tp', '2', '--model', os.path.join(fixture, 'base'), '--adapters',
           os.path.join(fixture, 'adapters'), '--listen', '127.0.0.1:0', '--bin', binary, '--backend', 'cpu']
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def text():
        log.flush()
        return open(log_path).read()

    m = None
    for _ in range(600):
        m = re.search(r'serving on 127\.0\.0\.1:(\d+) \(rank 0 pid (\d+)\)', text())
        if m or proc.poll() is not None:
            break
        time.sleep(0.1)
    t.ok(m is not None, 'prints where it serves (%s)' % (m.group(0) if m else 'nothing'))
    ranks = []
    if m:
        import grpc
        rank0 = int(m.group(2))
        mpirun_pid = open('/proc/%d/stat' % rank0).read().split(')')[-1].split()[1]
        ranks = [int(p) for p in subprocess.run(['pgrep', '-P', mpirun_pid], capture_output=True,
                                                text=True).stdout.split()]
        with grpc.insecure_channel('127.0.0.1:' + m.group(1)) as ch:
            t.ok(generate.wait_serving(ch, 60) == 'SERVING', 'health says SERVING')
            for adapter in ('', 'a_r8_qv'):
                try:
                    reply = generate.generate(ch, {'prompt_token_ids': [1, 5, 9], 'max_new_tokens': 6,
                                                   'ignore_eos': True, 'adapter': adapter}, False, 60)[0]
                    n = len(reply['token_ids'])
                except grpc.RpcError as e:
                    n = '%s %s' % (e.code().name, e.details())
                t.ok(n == 6, 'Generate %s: 6 tokens (%s)' % ('adapter ' + adapter if adapter else 'base model', n))
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    out = text()
    t.ok(rc == 0, 'SIGTERM: the wrapper exits 0 (got %s)' % rc)
    t.ok('SIGTERM to rank 0' in out and 'served 2 requests' in out, 'the stop went to rank 0, which drained')
    time.sleep(0.2)
    left = [p for p in ranks if alive(p)]
    t.ok(ranks and not left, 'no rank is left running (%s of %s)' % (left, ranks))
    if t.failed:
        sys.stdout.write(''.join('# ' + line for line in out.splitlines(True)[-30:]))
    log.close()
    shutil.rmtree(os.path.dirname(log_path), ignore_errors=True)
    check_bundle(t, launch, binary)
    return t.done()


def check_bundle(t, launch, binary):
    tmp = tempfile.mkdtemp(prefix='loraserve-bundle-test-')
    bundle = os.path.join(tmp, 'bundle')
    r = subprocess.run(['bash', os.path.join(os.path.dirname(launch), 'make-bundle.sh'), bundle, binary],
                       capture_output=True, text=True, timeout=120)
    lib = os.path.join(bundle, 'lib')
    t.ok(r.returncode == 0 and os.path.exists(os.path.join(bundle, 'bin', 'loraserve-launch'))
         and any(f.startswith('libgrpc') for f in os.listdir(lib)) and
         not any(f.startswith(('libc.', 'libmpi', 'libcuda', 'libnccl')) for f in os.listdir(lib)),
         'make-bundle.sh: binary, launcher and gRPC libraries, no libc/MPI/CUDA (%s)' % r.stderr.strip()[-200:])
    if r.returncode != 0:
        return
    proc = subprocess.Popen([os.path.join(bundle, 'bin', 'loraserve-launch'), '--tp', '1', '--listen', '127.0.0.1:0',
                             '--backend', 'cpu', '--demo-dir', os.path.join(tmp, 'demo')],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    m, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r'serving on 127\.0\.0\.1:\d+ \(rank 0 pid (\d+)\)', line)
        if m:
            break
    maps = open('/proc/%s/maps' % m.group(1)).read() if m else ''
    t.ok(re.search(re.escape(lib) + r'/libgrpc', maps) is not None,
         'the bundle serves, its ranks loading gRPC from %s' % lib)
    proc.send_signal(signal.SIGTERM)
    try:
        rest, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate()
    t.ok(proc.returncode == 0, 'the bundle stops gracefully with status 0 (got %s)' % proc.returncode)
    if t.failed:
        sys.stdout.write(''.join('# ' + line for line in (''.join(lines) + rest).splitlines(True)[-20:]))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
