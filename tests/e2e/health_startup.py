#!/usr/bin/python3
"""Health while the model loads. Rank 0 opens its gRPC port as soon as its own config and tokenizer are
ready and the workers are still loading (slowed here by --test-load-delay-s, so that the phase lasts
seconds): health Check and Watch say NOT_SERVING, Generate, GenerateStream and the Adapters calls get
UNAVAILABLE "model is loading"; once every rank has reported, SERVING and Generate works; on SIGTERM
NOT_SERVING again. Also a stop during the load (never SERVING, calls told the server is shutting down,
exit 0 once the workers have reported) and a worker killed during the load (the job ends non-zero,
never SERVING).

usage: health_startup.py MPIRUN LORASERVE   (prints TAP)"""
import os
import re
import signal
import sys
import tempfile
import time

from served import Server, Tap, Watch, generate

# The workers' extra load time: the checks made during it take well under a second, this leaves room
# for a slow, shared two-core machine.
LOAD_DELAY_S = 5


def call_status(fn):
    """(code name, details) of a call expected to fail; ('OK', '') when it succeeded."""
    import grpc
    try:
        fn()
        return 'OK', ''
    except grpc.RpcError as e:
        return e.code().name, e.details() or ''


def check_health(srv, service=''):
    raw = srv.channel.unary_unary(generate.HEALTH_CHECK)(generate.encode_health_request(service), timeout=5)
    return generate.decode_health_response(raw)


def loading_calls(srv):
    """The status of each engine call made now: Generate, GenerateStream, ListAdapters."""
    req = {'prompt': 'Hello', 'max_new_tokens': 4}
    return [call_status(lambda: generate.generate(srv.channel, req, False, 10)),
            call_status(lambda: generate.generate(srv.channel, req, True, 10)),
            call_status(lambda: generate.adapter_call(srv.channel, generate.LIST_ADAPTERS, timeout_s=10))]


def sigterm_rank0(srv):
    os.kill(int(open(srv.pid_file).read()), signal.SIGTERM)
    srv.pid_file = os.devnull + '.absent'       # the job ends by itself; __exit__ must not signal again



def args(delay_s):
    return ['--backend', 'cpu', '--test-load-delay-s', str(delay_s),
            '--demo-dir', tempfile.mkdtemp(prefix='loraserve-demo-')]


def slow_load(t, mpirun, binary):
    name = 'slow load'
    with Server(mpirun, binary, args(LOAD_DELAY_S), prefix='loraserve-health-start-') as srv:
        t_port = time.time()
        t.ok(srv.channel is not None, '%s: the port file is written while the workers load' % name)
        if srv.channel is None:
            srv.print_log_tail()
            return
        watch = Watch(srv.channel)
        t.ok(watch.first('NOT_SERVING', 5) is not None, '%s: Watch starts with NOT_SERVING' % name)
        got = (check_health(srv), check_health(srv, 'loraserve.v1.Generation'))
        t.ok(got == ('NOT_SERVING', 'NOT_SERVING'), '%s: Check "" and the service say NOT_SERVING: %s' % (name, got))
        calls = loading_calls(srv)
        t.ok(all(c == ('UNAVAILABLE', 'model is loading') for c in calls),
             '%s: Generate, GenerateStream, ListAdapters get UNAVAILABLE "model is loading": %s' % (name, calls))
        log = srv.log_text()
        t.ok('loraserve: listening on 127.0.0.1:' in log and not re.search(r' r0 I \S+ model \S+: ', log),
             '%s: "listening on" is printed before the workers have reported' % name)
        serving = srv.serving(60)
        t_serving = watch.first('SERVING', 5)
        t.ok(serving and t_serving is not None and t_serving - t_port > LOAD_DELAY_S / 2,
             '%s: SERVING once the workers report, %.1f s after the port opened' % (name, (t_serving or 0) - t_port))
        r = call_status(lambda: generate.generate(srv.channel, {'prompt': 'Hello', 'max_new_tokens': 4,
                                                                'ignore_eos': True}, False, 30))
        t.ok(r == ('OK', ''), '%s: then Generate works: %s' % (name, r))
        sigterm_rank0(srv)
        t.ok(watch.first('NOT_SERVING', 5, after=t_serving or 0) is not None,
             '%s: Watch turns NOT_SERVING again on the stop' % name)
        t.ok(srv.wait_exit(30) == 0, '%s: mpirun exits 0' % name)
        seen = watch.statuses()
        t.ok(seen == ['NOT_SERVING', 'SERVING', 'NOT_SERVING'], '%s: Watch saw exactly %s' % (name, seen))
        if t.failed:
            srv.print_log_tail()


def stop_while_loading(t, mpirun, binary):
    name = 'stop while loading'
    with Server(mpirun, binary, args(3), prefix='loraserve-health-start-') as srv:
        t.ok(srv.channel is not None and check_health(srv) == 'NOT_SERVING', '%s: NOT_SERVING at first' % name)
        sigterm_rank0(srv)
        time.sleep(0.3)
        calls = loading_calls(srv)
        t.ok(all(c == ('UNAVAILABLE', 'server is shutting down') for c in calls),
             '%s: calls after the stop get UNAVAILABLE "server is shutting down": %s' % (name, calls))
        seen = set()
        while srv.proc.poll() is None:
            call_status(lambda: seen.add(check_health(srv)))
            time.sleep(0.1)
        t.ok('SERVING' not in seen and 'NOT_SERVING' in seen, '%s: never SERVING: %s' % (name, sorted(seen)))
        t.ok(srv.wait_exit(30) == 0, '%s: mpirun exits 0 once the workers have reported' % name)
        if t.failed:
            srv.print_log_tail()


def worker_dies_while_loading(t, mpirun, binary):
    name = 'worker killed while loading'
    with Server(mpirun, binary, args(60), prefix='loraserve-health-start-') as srv:
        m = re.search(r' 2 pid (\d+) on', srv.log_text())
        t.ok(srv.channel is not None and m is not None and check_health(srv) == 'NOT_SERVING',
             '%s: NOT_SERVING, rank 2 pid known' % name)
        if not m:
            return
        t_kill = time.time()
        os.kill(int(m.group(1)), signal.SIGKILL)
        seen = set()
        while srv.proc.poll() is None and time.time() - t_kill < 20:
            call_status(lambda: seen.add(check_health(srv)))
            time.sleep(0.1)
        rc = srv.wait_exit(1)
        t.ok(rc not in (0, None) and time.time() - t_kill < 20,
             '%s: mpirun exits non-zero (%s) %.1f s after the kill' % (name, rc, time.time() - t_kill))
        t.ok('SERVING' not in seen, '%s: never SERVING: %s' % (name, sorted(seen)))
        t.ok(re.search(r' r0 E \S+ worker rank 2 exited during start-up', srv.log_text()) is not None,
             '%s: rank 0 logs which worker it lost' % name)
        if t.failed:
            srv.print_log_tail()


def main():
    mpirun, binary = sys.argv[1:3]
    t = Tap()
    slow_load(t, mpirun, binary)
    stop_while_loading(t, mpirun, binary)
    worker_dies_while_loading(t, mpirun, binary)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
