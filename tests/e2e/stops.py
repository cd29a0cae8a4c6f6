#!/usr/bin/python3
"""Stop strings and stop token ids on the demo model, through gRPC (unary and streaming): a stop
string that straddles a token boundary ends the output right before it, with finish STOP, and a stream
never sends any part of it; a stop token id ends the output with that id last in token_ids and its
text left out.

usage: stops.py MPIRUN LORASERVE   (prints TAP)"""
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'scripts'))
import generate  # noqa: E402

n_tests, failed = 0, 0


def tap(ok, name):
    global n_tests, failed
    n_tests += 1
    failed += 0 if ok else 1
    print('%s %d - %s' % ('ok' if ok else 'not ok', n_tests, name), flush=True)


def pick_straddling_stop(pieces):
    """A short string made of the end of one token's text and the start of the next, whose first
    occurrence in the whole text is exactly there; returns (stop, offset) or None."""
    text = ''.join(pieces)
    at = 0
    for k in range(len(pieces) - 1):
        at += len(pieces[k])
        a, b = pieces[k], pieces[k + 1]
        if k < 2 or len(a) < 2 or len(b) < 2:
            continue
        stop = a[-2:] + b[:2]
        if text.find(stop) == at - 2:
            return stop, at - 2
    return None


def run_checks(channel):
    base = {'prompt': 'Once upon a time, in a land far away,', 'max_new_tokens': 48, 'ignore_eos': True}
    full = generate.generate(channel, base, False, 60)[0]
    pieces = []
    generate.generate(channel, base, True, 60, on_delta=lambda m: pieces.append(m['text']) if m['token_ids'] else None)
    tap(''.join(pieces) == full['text'] and len(full['token_ids']) == 48, 'reference output: 48 tokens, stream == unary')
    pick = pick_straddling_stop(pieces)
    tap(pick is not None, 'found a stop string across a token boundary: %r' % (pick,))
    if pick:
        stop, at = pick
        want = full['text'][:at]
        for stream in (False, True):
            sent = []
            r = generate.generate(channel, dict(base, stop=[stop]), stream, 60,
                                  on_delta=lambda m: sent.append(m['text']))[0]
            mode = 'stream' if stream else 'unary'
            tap(r['finish_reason'] == 'STOP' and r['text'] == want,
                '%s: stop %r ends the text right before it (finish %s, %d chars)' % (mode, stop, r['finish_reason'],
                                                                                      len(r['text'])))
            if stream:
                # Anything sent past the cut (a held-back prefix of the stop string) would show here.
                tap(''.join(sent) == want, 'stream: the deltas sent are exactly the text before the stop string')
    k = 5
    stop_id = full['token_ids'][k]
    if stop_id in full['token_ids'][:k]:
        stop_id = None
    for stream in (False, True):
        if stop_id is None:
            tap(True, 'stop token id: skipped (the chosen id repeats earlier)')
            continue
        r = generate.generate(channel, dict(base, stop_token_ids=[stop_id]), stream, 60)[0]
        tap(r['finish_reason'] == 'STOP' and r['token_ids'] == full['token_ids'][:k + 1]
            and r['text'] == ''.join(pieces[:k]),
            '%s: stop_token_ids ends on that id, its text left out' % ('stream' if stream else 'unary'))


def main():
    mpirun, binary = sys.argv[1:3]
    import grpc
    tmp = tempfile.mkdtemp(prefix='loraserve-stops-')
    port_file, pid_file = os.path.join(tmp, 'port'), os.path.join(tmp, 'pid')
    cmd = [mpirun, '-np', '3', binary, '--listen', '127.0.0.1:0', '--port-file', port_file, '--pid-file', pid_file,
           '--demo-dir', os.path.join(tmp, 'demo')]
    log = open(os.path.join(tmp, 'log'), 'w+')
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(300):
            if os.path.exists(port_file) or proc.poll() is not None:
                break
            time.sleep(0.1)
        channel = grpc.insecure_channel('127.0.0.1:' + open(port_file).read().strip())
        tap(generate.wait_serving(channel, 30) == 'SERVING', 'demo server SERVING')
        run_checks(channel)
    finally:
        if os.path.exists(pid_file):
            os.kill(int(open(pid_file).read()), signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    print('1..%d' % n_tests)


if __name__ == '__main__':
    main()
    sys.exit(1 if failed else 0)
