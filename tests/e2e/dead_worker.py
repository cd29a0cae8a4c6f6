#!/usr/bin/python3
"""A worker rank that dies (SIGKILL) or hangs (SIGSTOP, past --step-timeout-s, or until a SIGTERM to rank
0 as mpirun sends when a rank on another node died) while streaming and unary calls are in flight: every call ends with UNAVAILABLE naming the worker, within seconds and well before
the client's deadline, and mpirun exits non-zero (so that Slurm --requeue or a Kubernetes restart acts).
The rank pids come from the coordinator's start-up line "ranks: 0 pid P on H, 1 pid ...".

usage: dead_worker.py MPIRUN LORASERVE   (prints TAP)"""
import os
import re
import signal
import sys
import threading
import time

from served import Server, Tap, generate

CLIENT_DEADLINE_S = 20
N_CALLS = 6


def rank_pids(srv):
    m = re.search(r'ranks: (.*)', srv.log_text())
    return {int(r): int(p) for r, p in re.findall(r'(\d+) pid (\d+) on', m.group(1))} if m else {}


class Load:
    """N_CALLS clients, half streaming, each calling again as soon as its call ends, until one fails:
    so a call is in flight on every client when the worker goes."""

    def __init__(self, srv):
        self.srv, self.t_fault = srv, None
        self.ended = [None] * N_CALLS        # (code name, details, seconds after the fault)
        self.done = [0] * N_CALLS
        self.threads = [threading.Thread(target=self.client, args=(i,)) for i in range(N_CALLS)]
        for th in self.threads:
            th.start()

    def client(self, i):
        import grpc
        req = {'prompt': 'The worker ranks', 'max_new_tokens': 900, 'ignore_eos': True, 'seed': i}
        while True:
            try:
                generate.generate(self.srv.channel, req, i % 2 == 0, CLIENT_DEADLINE_S)
                self.done[i] += 1
            except grpc.RpcError as e:
                t = time.time() - self.t_fault if self.t_fault else -1
                self.ended[i] = (e.code().name, e.details() or '', t)
                return

    def join(self):
        for th in self.threads:
            th.join(CLIENT_DEADLINE_S + 10)
        return not any(th.is_alive() for th in self.threads)



def check_new_call(srv):
    """A call made after the fault: UNAVAILABLE (from the draining server, or no server any more)."""
    import grpc
    try:
        generate.generate(srv.channel, {'prompt': 'x', 'max_new_tokens': 2}, False, CLIENT_DEADLINE_S)
        return 'OK'
    except grpc.RpcError as e:
        return e.code().name


def scenario(t, mpirun, binary, name, sig, rank, args, within_s, then_term=False):
    with Server(mpirun, binary, ['--backend', 'cpu'] + args, prefix='loraserve-dead-worker-') as srv:
        if not srv.serving():
            t.ok(False, '%s: server did not come up' % name)
            srv.print_log_tail()
            return
        pids = rank_pids(srv)
        t.ok(sorted(pids) == [0, 1, 2], '%s: the log names the pid of every rank (%s)' % (name, pids))
        load = Load(srv)
        time.sleep(1.0)
        load.t_fault = time.time()
        os.kill(pids[rank], sig)
        if then_term:
            time.sleep(0.2)
            os.kill(pids[0], signal.SIGTERM)
        t.ok(load.join(), '%s: every client returned (no hang)' % name)
        codes = [e[0] if e else None for e in load.ended]
        t.ok(all(c == 'UNAVAILABLE' for c in codes), '%s: every in-flight call ended UNAVAILABLE: %s' % (name, codes))
        worst = max((e[2] for e in load.ended if e), default=-1)
        t.ok(0 <= worst <= within_s, '%s: within %.1f s of the fault (slowest %.2f s)' % (name, within_s, worst))
        named = [e[1] for e in load.ended if e and 'worker' in e[1]]
        t.ok(len(named) == N_CALLS, '%s: the status names the worker (%r)' % (name, load.ended[0] and load.ended[0][1]))
        t.ok(check_new_call(srv) == 'UNAVAILABLE', '%s: a new call gets UNAVAILABLE' % name)
        rc = srv.wait_exit(30)
        t.ok(rc is not None and rc != 0, '%s: mpirun exits non-zero (%s)' % (name, rc))
        if rc is None:
            os.killpg(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait()
        srv.pid_file = os.devnull + '.absent'       # nothing left to stop gracefully
        if t.failed:
            srv.print_log_tail(40)


def main():
    mpirun, binary = sys.argv[1:3]
    t = Tap()
    scenario(t, mpirun, binary, 'SIGKILL rank 2', signal.SIGKILL, 2, [], 5.0)
    scenario(t, mpirun, binary, 'SIGKILL rank 1', signal.SIGKILL, 1, [], 5.0)
    # A stopped rank is alive to the process table: only the step timeout can tell.
    scenario(t, mpirun, binary, 'SIGSTOP rank 2', signal.SIGSTOP, 2, ['--step-timeout-s', '2'], 8.0)
    # What mpirun does after a rank dies on another node: SIGTERM to the others, SIGKILL a second later.
    # With no step timeout, the step still in flight after the stop signal marks the worker lost.
    scenario(t, mpirun, binary, 'SIGSTOP rank 1 + SIGTERM rank 0', signal.SIGSTOP, 1, ['--step-timeout-s', '0'], 3.0,
             then_term=True)
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
