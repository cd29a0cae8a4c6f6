#!/usr/bin/python3
"""Stop strings and stop token ids on the demo model, through gRPC (unary and streaming): a stop
string that straddles a token boundary ends the output right before it, with finish STOP, and a stream
never sends any part of it; a stop token id ends the output with that id last in token_ids and its
text left out.

usage: stops.py MPIRUN LORASERVE   (prints TAP)"""
import sys
import tempfile

from served import Server, Tap, generate


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


def run_checks(t, channel):
    base = {'prompt': 'Once upon a time, in a land far away,', 'max_new_tokens': 48, 'ignore_eos': True}
    full = generate.generate(channel, base, False, 60)[0]
    pieces = []
    generate.generate(channel, base, True, 60, on_delta=lambda m: pieces.append(m['text']) if m['token_ids'] else None)
    t.ok(''.join(pieces) == full['text'] and len(full['token_ids']) == 48, 'reference output: 48 tokens, stream == unary')
    pick = pick_straddling_stop(pieces)
    t.ok(pick is not None, 'found a stop string across a token boundary: %r' % (pick,))
    if pick:
        stop, at = pick
        want = full['text'][:at]
        for stream in (False, True):
            sent = []
            r = generate.generate(channel, dict(base, stop=[stop]), stream, 60,
                                  on_delta=lambda m: sent.append(m['text']))[0]
            mode = 'stream' if stream else 'unary'
            t.ok(r['finish_reason'] == 'STOP' and r['text'] == want,
                '%s: stop %r ends the text right before it (finish %s, %d chars)' % (mode, stop, r['finish_reason'],
                                                                                      len(r['text'])))
            if stream:
                # Anything sent past the cut (a held-back prefix of the stop string) would show here.
                t.ok(''.join(sent) == want, 'stream: the deltas sent are exactly the text before the stop string')
    k = 5
    stop_id = full['token_ids'][k]
    if stop_id in full['token_ids'][:k]:
        stop_id = None
    for stream in (False, True):
        if stop_id is None:
            t.ok(True, 'stop token id: skipped (the chosen id repeats earlier)')
            continue
        r = generate.generate(channel, dict(base, stop_token_ids=[stop_id]), stream, 60)[0]
        t.ok(r['finish_reason'] == 'STOP' and r['token_ids'] == full['token_ids'][:k + 1]
            and r['text'] == ''.join(pieces[:k]),
            '%s: stop_token_ids ends on that id, its text left out' % ('stream' if stream else 'unary'))


def main():
    mpirun, binary = sys.argv[1:3]
    t = Tap()
    with Server(mpirun, binary, ['--demo-dir', tempfile.mkdtemp(prefix='loraserve-demo-')]) as srv:
        t.ok(srv.serving(), 'demo server SERVING')
        if srv.channel:
            run_checks(t, srv.channel)
    if t.failed:
        srv.print_log_tail()
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
