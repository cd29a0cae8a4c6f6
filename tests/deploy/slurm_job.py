#!/usr/bin/python3
"""deploy/slurm/loraserve.sbatch under a real Slurm: brings up munged, slurmctld and slurmd from the
Debian packages on localhost (own key, own ports, configuration and state in a temporary directory, so
nothing on the machine is touched), submits the batch script with the CPU backend and the built-in demo
model, answers a Generate call over gRPC, stops the job the documented graceful way and checks that it
ends COMPLETED with exit code 0. Three jobs: srun + `scancel --signal=TERM`, srun + `scancel --batch
--signal=TERM` (the script forwards it to rank 0), mpirun through launch/loraserve-launch + `--batch`.
Skips (TAP "1..0 # SKIP") without the Slurm/munge programs or without root (slurmd must run as root).

usage: slurm_job.py SBATCH_SCRIPT LORASERVE LORASERVE_LAUNCH   (prints TAP)"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'e2e'))
from served import Tap, generate  # noqa: E402

PROGRAMS = ['munged', 'munge', 'slurmctld', 'slurmd', 'sbatch', 'scancel', 'scontrol', 'sinfo']

SLURM_CONF = """ClusterName=loraservetest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket={tmp}/munge.sock
CredType=cred/munge
StateSaveLocation={tmp}/ctld
SlurmdSpoolDir={tmp}/slurmd
TmpFS={tmp}/jobtmp
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/slurmctld.log
SlurmdLogFile={tmp}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs=8 Boards=1 SocketsPerBoard=1 CoresPerSocket=8 ThreadsPerCore=1 RealMemory=4000
PartitionName=test Nodes={host} Default=YES MaxTime=10 State=UP OverSubscribe=YES
"""


def check(t, cond, name):
    t.ok(cond, name)
    return bool(cond)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run(cmd, env, timeout=20):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


class Cluster:
    """munged + slurmctld + slurmd on localhost; stopped by their pid files (only what this started)."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix='loraserve-slurm-')
        self.env = dict(os.environ, SLURM_CONF=os.path.join(self.tmp, 'slurm.conf'))
        self.env.pop('SLURM_JOB_ID', None)

    def start(self):
        t = self.tmp
        for d in ('ctld', 'slurmd', 'jobtmp'):
            os.mkdir(os.path.join(t, d))
        key = os.path.join(t, 'munge.key')
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), 'wb') as f:
            f.write(os.urandom(1024))
        # munged refuses root unless forced; its socket lives in our 0700 directory.
        subprocess.run(['munged', '--force', '--socket=' + t + '/munge.sock', '--key-file=' + key,
                        '--log-file=' + t + '/munged.log', '--pid-file=' + t + '/munged.pid',
                        '--seed-file=' + t + '/munged.seed'], check=True, timeout=20)
        host = socket.gethostname().split('.')[0]
        with open(self.env['SLURM_CONF'], 'w') as f:
            f.write(SLURM_CONF.format(host=host, tmp=t, ctld_port=free_port(), slurmd_port=free_port()))
        for daemon in ('slurmctld', 'slurmd'):   # both daemonize once configured
            subprocess.run([daemon, '-f', self.env['SLURM_CONF']], env=self.env, check=True, timeout=30)
        state = ''
        for _ in range(100):
            state = run(['sinfo', '-h', '-o', '%T'], self.env).stdout.strip()
            if state == 'idle':
                break
            time.sleep(0.2)
        return state

    def job_state(self, job):
        out = run(['scontrol', '-o', 'show', 'job', job], self.env).stdout
        fields = dict(kv.split('=', 1) for kv in out.split() if '=' in kv)
        return fields.get('JobState', '?'), fields.get('ExitCode', '?')

    def wait_done(self, job, timeout_s):
        end = time.monotonic() + timeout_s
        state = ('?', '?')
        while time.monotonic() < end:
            state = self.job_state(job)
            if state[0] not in ('PENDING', 'CONFIGURING', 'RUNNING', 'COMPLETING', '?'):
                break
            time.sleep(0.3)
        return state

    def log(self, name, n=25):
        path = os.path.join(self.tmp, name)
        lines = open(path, errors='replace').read().splitlines(True) if os.path.exists(path) else []
        sys.stdout.write(''.join('# %s: %s' % (name, line) for line in lines[-n:]))

    def _kill(self, name):
        path = os.path.join(self.tmp, name + '.pid')
        try:
            pid = int(open(path).read())
        except (OSError, ValueError):
            return
        sig = signal.SIGTERM   # then up to 3 s to go, then SIGKILL
        for _ in range(11):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            sig = 0
            time.sleep(0.3)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self):
        if os.path.exists(self.env['SLURM_CONF']):
            run(['scancel', '--full', '--user=root', '--partition=test'], self.env)
            run(['scontrol', 'shutdown'], self.env)
            time.sleep(0.5)
        for name in ('slurmd', 'slurmctld', 'munged'):
            self._kill(name)
        shutil.rmtree(self.tmp, ignore_errors=True)


def serve_and_stop(t, c, name, sbatch, exports, stop_cmd):
    """Submits one job, calls it, stops it; returns True when everything held."""
    t0 = time.monotonic()
    port = free_port()
    ex = dict(exports, LORASERVE_PORT=str(port), LORASERVE_BACKEND='cpu',
              LORASERVE_DEMO_DIR=os.path.join(c.tmp, 'demo'))
    out = os.path.join(c.tmp, name + '.out')
    r = run(['sbatch', '--parsable', '--job-name=' + name, '--gres=none', '--cpus-per-task=1', '--time=5',
             '--chdir=' + c.tmp, '--output=' + out, '--export=ALL,' + ','.join('%s=%s' % kv for kv in ex.items()),
             sbatch], c.env)
    job = r.stdout.strip().split(';')[0]
    ok = check(t, r.returncode == 0 and job.isdigit(), '%s: sbatch accepted the script (job %s)' % (name, job or r.stderr))
    if not ok:
        return False
    import grpc
    # Short reconnect backoff: the port opens a few seconds after submission, not 10 s later.
    fast = [('grpc.initial_reconnect_backoff_ms', 100), ('grpc.min_reconnect_backoff_ms', 100),
            ('grpc.max_reconnect_backoff_ms', 300)]
    with grpc.insecure_channel('127.0.0.1:%d' % port, options=fast) as ch:
        health = generate.wait_serving(ch, 60)
        t_up = time.monotonic() - t0
        ok &= check(t, health == 'SERVING', '%s: the job serves gRPC on port %d (health: %s)' % (name, port, health))
        reply = None
        if health == 'SERVING':
            try:
                reply = generate.generate(ch, {'prompt': 'Hello', 'max_new_tokens': 8, 'ignore_eos': True}, False, 60)[0]
            except grpc.RpcError as e:
                reply = {'error': '%s %s' % (e.code(), e.details())}
        ok &= check(t, reply is not None and reply.get('completion_tokens') == 8 and len(reply.get('token_ids', [])) == 8,
                   '%s: Generate answers 8 tokens (%s)' % (name, reply and reply.get('error', 'ok')))
    r = run(stop_cmd + [job], c.env)
    ok &= check(t, r.returncode == 0, '%s: %s accepted %s' % (name, ' '.join(stop_cmd), r.stderr.strip()))
    t_stop = time.monotonic()
    state, code = c.wait_done(job, 40)
    print('# %s: serving after %.1f s, ended %.1f s after the stop' % (name, t_up, time.monotonic() - t_stop))
    ok &= check(t, state == 'COMPLETED' and code == '0:0', '%s: the job ends COMPLETED, exit 0 (%s, %s)' % (name, state, code))
    text = open(out, errors='replace').read() if os.path.exists(out) else ''
    ok &= check(t, 'served 1 requests' in text, '%s: rank 0 drained and reported its requests' % name)
    if not ok:
        sys.stdout.write(''.join('# ' + line for line in text.splitlines(True)[-30:]))
    return ok


def main():
    sbatch, binary, launch = (os.path.abspath(a) for a in sys.argv[1:4])
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        print('1..0 # SKIP Slurm/munge not installed (%s)' % ' '.join(missing))
        return 0
    if os.geteuid() != 0:
        print('1..0 # SKIP slurmd and munged must run as root')
        return 0
    t = Tap()
    c = Cluster()
    start = time.monotonic()
    try:
        state = c.start()
        if not check(t, state == 'idle', 'single-node Slurm is up (node state: %s)' % (state or 'none')):
            c.log('slurmctld.log')
            c.log('slurmd.log')
            return t.done()
        base = {'LORASERVE_BIN': binary}
        all_ok = serve_and_stop(t, c, 'srun-term', sbatch, base, ['scancel', '--signal=TERM'])
        all_ok &= serve_and_stop(t, c, 'srun-batch', sbatch, base, ['scancel', '--batch', '--signal=TERM'])
        all_ok &= serve_and_stop(t, c, 'mpirun-batch', sbatch,
                                 dict(base, LORASERVE_LAUNCHER='mpirun', LORASERVE_LAUNCH=launch),
                                 ['scancel', '--batch', '--signal=TERM'])
        if not all_ok:
            c.log('slurmd.log')
    finally:
        c.stop()
        print('# %.1f s' % (time.monotonic() - start))
    return t.done()


if __name__ == '__main__':
    sys.exit(main())
