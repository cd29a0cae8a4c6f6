#!/usr/bin/python3
"""Health and graceful stop through gRPC: a health Watch sees SERVING, then NOT_SERVING as soon as rank 0
gets SIGTERM; calls made after it get UNAVAILABLE; calls in flight finish when --shutdown-grace-s
allows it and end UNAVAILABLE (promptly, never hanging) when it does not; every rank exits 0 either
way. Also the log lines operators grep for: one admitted and one finished line per request with its
status, the stop, and the workers' weights-loaded line.

usage: lifecycle.py MPIRUN LORASERVE   (prints TAP)"""
import os
import re
import signal
import sys
import threading
import time

from served import Server, Tap, Watch, generate


def start_calls(srv, n, max_new_tokens):
    """n calls, half streaming; returns (threads, results, started) where started is set at the first delta."""
    import grpc
    results, started = [None] * n, threading.Event()

    def one(i):
        req = {'prompt': 'A long story about serving', 'max_new_tokens': max_new_tokens, 'ignore_eos': True, 'seed': i}
        try:
            r = generate.generate(srv.channel, req, i % 2 == 0, 120, on_delta=lambda m: started.set())[0]
            results[i] = ('OK', r['completion_tokens'], time.time())
        except grpc.RpcError as e:
            results[i] = (e.code().name, e.details(), time.time())
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    return threads, results, started


def admitted(srv, n, timeout_s=30):
    """Waits until the log shows n admitted requests (every call in flight before the stop)."""
    end = time.time() + timeout_s
    while time.time() < end:
        if len(re.findall(r' request \S+ admitted: ', srv.log_text())) >= n:
            return True
        time.sleep(0.02)
    return False


def new_call_code(srv):
    import grpc
    try:
        generate.generate(srv.channel, {'prompt': 'late', 'max_new_tokens': 2}, False, 20)
        return 'OK'
    except grpc.RpcError as e:
        return e.code().name


def sigterm_rank0(srv):
    """SIGTERM to rank 0 (the graceful stop); returns when it was sent. The job then ends by itself."""
    t_term = time.time()
    os.kill(int(open(srv.pid_file).read()), signal.SIGTERM)
    srv.pid_file = os.devnull + '.absent'
    return t_term


def drain_finishes(t, mpirun, binary):
    name = 'grace 30 s'
    with Server(mpirun, binary, ['--backend', 'cpu', '--shutdown-grace-s', '30'], prefix='loraserve-life-') as srv:
        t.ok(srv.serving(), '%s: health Check says SERVING' % name)
        watch = Watch(srv.channel)
        t.ok(watch.first('SERVING', 10) is not None, '%s: Watch starts with SERVING' % name)
        threads, results, started = start_calls(srv, 6, 700)
        t.ok(started.wait(30) and admitted(srv, 6), '%s: all 6 calls admitted, streaming' % name)
        t_term = sigterm_rank0(srv)
        t_not = watch.first('NOT_SERVING', 5)
        t.ok(t_not is not None and t_not - t_term < 2, '%s: Watch turns NOT_SERVING after SIGTERM' % name)
        t.ok(new_call_code(srv) == 'UNAVAILABLE', '%s: a call after SIGTERM gets UNAVAILABLE' % name)
        for th in threads:
            th.join(60)
        t.ok(all(r and r[0] == 'OK' and r[1] == 700 for r in results),
             '%s: every call in flight finished with all its tokens: %s' % (name, [r and r[:2] for r in results]))
        rc = srv.wait_exit(40)
        t.ok(rc == 0, '%s: mpirun exits 0 (%s)' % (name, rc))
        log = srv.log_text()
        ids = re.findall(r' r0 I \S+ request (\S+) admitted: ', log)
        done = re.findall(r' r0 I \S+ request (\S+) finished: status=OK finish=LENGTH .*completion_tokens=700 ', log)
        t.ok(len(ids) == 6 and sorted(ids) == sorted(done), '%s: log: admitted and finished lines for all 6 calls' % name)
        t.ok(re.search(r' r0 I \S+ stopping: draining', log) is not None, '%s: log: the stop is logged' % name)
        t.ok(re.search(r' r1 I \S+ weights loaded: \d+ tensors', log) is not None,
             '%s: log: the first worker reports its weights loaded' % name)
        if t.failed:
            srv.print_log_tail()


def drain_cancels(t, mpirun, binary):
    name = 'grace 0.5 s'
    with Server(mpirun, binary, ['--backend', 'cpu', '--shutdown-grace-s', '0.5', '--max-batch', '2'],
                prefix='loraserve-life-') as srv:
        t.ok(srv.serving(), '%s: serving' % name)
        threads, results, started = start_calls(srv, 6, 1000)
        t.ok(started.wait(30) and admitted(srv, 6), '%s: all 6 calls admitted, streaming' % name)
        t_term = sigterm_rank0(srv)
        for th in threads:
            th.join(60)
        codes = [r and r[0] for r in results]
        t.ok(all(c in ('OK', 'UNAVAILABLE') for c in codes) and 'UNAVAILABLE' in codes,
             '%s: calls that cannot finish in time end UNAVAILABLE: %s' % (name, codes))
        last = max((r[2] for r in results if r), default=t_term + 99)
        t.ok(last - t_term < 3.5, '%s: all calls ended %.2f s after SIGTERM' % (name, last - t_term))
        rc = srv.wait_exit(30)
        t.ok(rc == 0, '%s: mpirun exits 0 (%s)' % (name, rc))
        log = srv.log_text()
        t.ok(len(re.findall(r' request \S+ finished: status=UNAVAILABLE .*why="server is shutting down"', log)) ==
             codes.count('UNAVAILABLE'), '%s: log: one finished line with status=UNAVAILABLE per cut call' % name)
        if t.failed:
            srv.print_log_tail()


def main():
    mpirun, binary = sys.argv[1:3]
    t = Tap()
    drain_finishes(t, mpirun, binary)
    drain_cancels(t, mpirun, binary)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
