"""Shared by the Python end-to-end tests: TAP output, and a loraserve job under mpirun that is started
on a free port, waited for until SERVING, and always stopped the graceful way (SIGTERM to rank 0) or
killed with its whole session when it hangs. The tests use the project's own client codec
(scripts/generate.py) over Debian's python3-grpcio."""
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'scripts'))
import generate  # noqa: E402,F401  (re-exported for the tests)


class Tap:
    def __init__(self):
        self.n, self.failed = 0, 0

    def ok(self, cond, name):
        self.n += 1
        self.failed += 0 if cond else 1
        print('%s %d - %s' % ('ok' if cond else 'not ok', self.n, name), flush=True)

    def done(self):
        print('1..%d' % self.n)
        return 1 if self.failed else 0


class Watch:
    """A grpc.health.v1 Watch on "", recording (status, time) pairs in a thread."""

    def __init__(self, channel):
        call = channel.unary_stream('/grpc.health.v1.Health/Watch', request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        self.seen, self.stream = [], call(generate.encode_health_request(''), timeout=120)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            for raw in self.stream:
                self.seen.append((generate.decode_health_response(raw), time.time()))
        except Exception:  # noqa: BLE001  (the stream ends with the server)
            pass

    def first(self, status, timeout_s, after=0.0):
        """The time of the first `status` seen later than `after`, waiting up to timeout_s; None if none."""
        end = time.time() + timeout_s
        while time.time() < end:
            for st, t in list(self.seen):
                if st == status and t > after:
                    return t
            time.sleep(0.02)
        return None

    def statuses(self):
        return [st for st, _ in self.seen]


class Server:
    """mpirun -np 1+tp LORASERVE --listen 127.0.0.1:0 ... ; use as a context manager."""

    def __init__(self, mpirun, binary, args, tp=2, prefix='loraserve-test-'):
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.port_file, self.pid_file = os.path.join(self.tmp, 'port'), os.path.join(self.tmp, 'pid')
        self.log_path = os.path.join(self.tmp, 'log')
        self.cmd = [mpirun, '-np', str(tp + 1), binary, '--listen', '127.0.0.1:0', '--port-file', self.port_file,
                    '--pid-file', self.pid_file] + list(args)
        self.exit_status = None

    def __enter__(self):
        import grpc
        self.log = open(self.log_path, 'w+')
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(600):
            if os.path.exists(self.port_file) or self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.channel = None
        if os.path.exists(self.port_file):
            self.channel = grpc.insecure_channel('127.0.0.1:' + open(self.port_file).read().strip())
        return self

    def serving(self, timeout_s=30):
        return self.channel is not None and generate.wait_serving(self.channel, timeout_s) == 'SERVING'

    def wait_exit(self, timeout_s):
        """mpirun's exit status, or None while it still runs after timeout_s (__exit__ then stops it)."""
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def log_text(self):
        self.log.flush()
        return open(self.log_path).read()

    def __exit__(self, *exc):
        if self.channel:
            self.channel.close()
        if os.path.exists(self.pid_file):
            os.kill(int(open(self.pid_file).read()), signal.SIGTERM)
        try:
            self.exit_status = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.exit_status = self.proc.wait()
        return False

    def print_log_tail(self, n=30):
        sys.stdout.write(''.join('# ' + line for line in self.log_text().splitlines(True)[-n:]))
