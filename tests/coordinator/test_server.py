#!/usr/bin/python3
"""Drives test_server (the C gRPC front end behind a toy engine) with grpcio, a client that shares no code
with the server, and reports TAP. Messages are hand-encoded protobuf (there is no protoc for Python here),
which also keeps the check of our wire format independent of protobuf-c.

Usage: test_server.py [--valgrind VALGRIND] TEST_SERVER
The order matters: drain and SIGTERM come last because they end the server."""
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

try:
    import grpc
except ImportError:
    print("1..0 # SKIP python3 grpcio is not installed (apt-get install python3-grpcio)")
    sys.exit(0)

GEN = "/loraserve.v1.Generation/"
ADMIN = "/loraserve.v1.Adapters/"
HEALTH = "/grpc.health.v1.Health/"
SERVING, NOT_SERVING, SERVICE_UNKNOWN = 1, 2, 3
FINISH_LENGTH = 1


# ---- protobuf wire format, just the parts these messages use ----

def varint(n):
    n &= (1 << 64) - 1          # negative int32 goes out as 10 bytes of two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def enc_request(req):
    """req: a dict with any of request_id, ids (prompt_token_ids), adapter, prompt."""
    request_id, ids = req.get("request_id", ""), req.get("ids", ())
    adapter, prompt = req.get("adapter", ""), req.get("prompt", "")
    out = b""
    if request_id:
        out += field(1, 2, request_id.encode())
    if prompt:
        out += field(2, 2, prompt.encode())
    if ids:
        out += field(3, 2, b"".join(varint(i) for i in ids))
    if adapter:
        out += field(4, 2, adapter.encode())
    return out


def read_varint(buf, pos):
    n = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def fields(buf):
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = read_varint(buf, pos)
        elif wire == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            val, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("wire type %d" % wire)
        yield num, wire, val


def int32(n):
    n &= (1 << 32) - 1
    return n - (1 << 32) if n >= 1 << 31 else n


def dec_response(buf):
    r = {"request_id": "", "token_ids": [], "text": "", "finish_reason": 0, "completion_tokens": 0}
    for num, wire, val in fields(buf):
        if num == 1:
            r["request_id"] = val.decode()
        elif num == 2 and wire == 2:        # packed
            pos = 0
            while pos < len(val):
                v, pos = read_varint(val, pos)
                r["token_ids"].append(int32(v))
        elif num == 2:
            r["token_ids"].append(int32(val))
        elif num == 3:
            r["text"] = val.decode()
        elif num == 4:
            r["finish_reason"] = val
        elif num == 6:
            r["completion_tokens"] = val
    return r


def enc_name(name):
    """LoadAdapterRequest / UnloadAdapterRequest; ListAdaptersRequest is enc_name("")."""
    return field(1, 2, name.encode()) if name else b""


def dec_info(buf):
    r = {"name": "", "max_rank": 0, "target_modules": [], "resident": False, "pages": 0, "active_requests": 0,
         "loads": 0}
    keys = {2: "max_rank", 5: "pages", 6: "active_requests", 7: "loads"}
    for num, _, val in fields(buf):
        if num == 1:
            r["name"] = val.decode()
        elif num == 3:
            r["target_modules"].append(val.decode())
        elif num == 4:
            r["resident"] = bool(val)
        elif num in keys:
            r[keys[num]] = val
    return r


def dec_load(buf):
    """LoadAdapterResponse -> its AdapterInfo (None when absent)."""
    info = None
    for num, _, val in fields(buf):
        if num == 1:
            info = dec_info(val)
    return info


def dec_list(buf):
    return [dec_info(val) for num, _, val in fields(buf) if num == 1]


def enc_health(service):
    return field(1, 2, service.encode()) if service else b""


def dec_health(buf):
    status = 0
    for num, _, val in fields(buf):
        if num == 1:
            status = val
    return status


# ---- TAP ----

class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, name, diag=""):
        self.n += 1
        if not cond:
            self.failed += 1
        print("%s %d - %s" % ("ok" if cond else "not ok", self.n, name))
        if not cond and diag:
            for line in str(diag).splitlines():
                print("#   " + line)
        sys.stdout.flush()

    def done(self):
        print("1..%d" % self.n)
        return 1 if self.failed else 0


def rpc_error(fn):
    """Runs fn; returns (None, its result) or (the RpcError it raised, None)."""
    try:
        return None, fn()
    except grpc.RpcError as e:
        return e, None


class Client:
    def __init__(self, port, slow):
        self.ch = grpc.insecure_channel("127.0.0.1:%d" % port)
        self.timeout = 60 if slow else 10     # no call may hang the test
        self.unary = self.ch.unary_unary(GEN + "Generate", request_serializer=enc_request,
                                         response_deserializer=dec_response)
        self.stream = self.ch.unary_stream(GEN + "GenerateStream", request_serializer=enc_request,
                                           response_deserializer=dec_response)
        self.check = self.ch.unary_unary(HEALTH + "Check", request_serializer=enc_health,
                                         response_deserializer=dec_health)
        self.watch = self.ch.unary_stream(HEALTH + "Watch", request_serializer=enc_health,
                                          response_deserializer=dec_health)
        self.load = self.ch.unary_unary(ADMIN + "LoadAdapter", request_serializer=enc_name,
                                        response_deserializer=dec_load)
        self.unload = self.ch.unary_unary(ADMIN + "UnloadAdapter", request_serializer=enc_name,
                                          response_deserializer=bytes)
        self.list = self.ch.unary_unary(ADMIN + "ListAdapters", request_serializer=enc_name,
                                        response_deserializer=dec_list)

    def admin_calls(self):
        """One call per Adapters method with a valid request, as (name, thunk)."""
        return [("LoadAdapter", lambda: self.load("a1", timeout=self.timeout)),
                ("UnloadAdapter", lambda: self.unload("a1", timeout=self.timeout)),
                ("ListAdapters", lambda: self.list("", timeout=self.timeout))]

    def raw(self, method, payload):
        return self.ch.unary_unary(method)(payload, timeout=self.timeout)

    def ctl(self, cmd):
        return self.unary(dict(adapter="ctl:" + cmd), timeout=self.timeout)["text"]

    def stats(self):
        return dict(kv.split("=") for kv in self.ctl("stats").split())

    def wait_idle(self, timeout):
        """Waits until the engine holds no job and the server no call; returns the last stats."""
        end = time.time() + timeout
        while True:
            st = self.stats()
            if (st["jobs"] == "0" and st["live"] == "0") or time.time() > end:
                return st
            time.sleep(0.02)


def t_unary(tap, c):
    r = c.unary(dict(request_id="u1", ids=[5, 6, -7]), timeout=c.timeout)
    tap.ok(r["token_ids"] == [5, 6, -7] and r["request_id"] == "u1" and r["finish_reason"] == FINISH_LENGTH,
           "unary Generate echoes the prompt ids", r)


def read_stream(c, req, timeout=None):
    return [m for m in c.stream(req, timeout=timeout or c.timeout)]


def t_stream(tap, c):
    msgs = read_stream(c, dict(request_id="s1", ids=list(range(10))))
    toks = [t for m in msgs for t in m["token_ids"]]
    tap.ok(len(msgs) == 10 and toks == list(range(10)), "stream: one message per token, in order", msgs)
    tap.ok(all(m["finish_reason"] == 0 for m in msgs[:-1]) and msgs[-1]["finish_reason"] == FINISH_LENGTH
           and msgs[-1]["completion_tokens"] == 10, "stream: only the last message carries the finish")


def t_concurrent(tap, c):
    def one(i):
        ids = [i * 1000 + k for k in range(20)]
        msgs = read_stream(c, dict(request_id="c%d" % i, ids=ids))
        return [t for m in msgs for t in m["token_ids"]] == ids and all(m["request_id"] == "c%d" % i for m in msgs)
    t0 = time.time()
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    tap.ok(all(results), "32 concurrent streams x 20 tokens arrive complete and in order (%.2f s)"
           % (time.time() - t0), results)


def t_burst(tap, c):
    ids = list(range(3000))
    msgs = read_stream(c, dict(ids=ids, adapter="burst"))
    tap.ok([t for m in msgs for t in m["token_ids"]] == ids and msgs[-1]["finish_reason"] == FINISH_LENGTH,
           "3000 messages queued in one engine step arrive in order, the finish last")
    it = c.stream(dict(ids=list(range(15000)), adapter="burst"), timeout=c.timeout)
    next(it)
    time.sleep(0.05)    # let the engine queue all 15 MB; flow control holds most of it in the server
    it.cancel()
    st = c.wait_idle(c.timeout)
    tap.ok(st["live"] == "0", "cancelling with thousands of messages queued releases the call", st)


def t_mixed(tap, c):
    def one(i):
        if i % 2:
            it = c.stream(dict(ids=[i, i], adapter="hold"), timeout=c.timeout)
            ok = next(it)["token_ids"] == [i]
            it.cancel()
            return ok
        ids = [i * 1000 + k for k in range(20)]
        return [t for m in read_stream(c, dict(ids=ids)) for t in m["token_ids"]] == ids
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    st = c.wait_idle(c.timeout)
    tap.ok(all(results) and st["live"] == "0" and st["jobs"] == "0",
           "16 streams cancelled while 16 others complete: all right, all released", (results, st))


def t_disconnect(tap, c, port):
    before = c.stats()
    ch = grpc.insecure_channel("127.0.0.1:%d" % port)
    it = ch.unary_stream(GEN + "GenerateStream", request_serializer=enc_request,
                         response_deserializer=dec_response)(dict(ids=[1, 2], adapter="hold"), timeout=c.timeout)
    next(it)
    ch.close()      # the connection goes away under a stream the engine still holds
    st = c.wait_idle(c.timeout)
    tap.ok(int(st["cancels"]) == int(before["cancels"]) + 1 and st["live"] == "0",
           "a client that drops its connection mid-stream: on_cancel, call released", (before, st))


def t_cancel(tap, c):
    before = c.stats()
    it = c.stream(dict(ids=list(range(5)), adapter="hold"), timeout=c.timeout)
    got = [next(it)["token_ids"][0] for _ in range(3)]
    it.cancel()
    err, _ = rpc_error(lambda: list(it))
    tap.ok(got == [0, 1, 2] and err is not None and err.code() == grpc.StatusCode.CANCELLED,
           "client cancel mid-stream ends the stream CANCELLED", got)
    st = c.wait_idle(c.timeout)
    tap.ok(int(st["cancels"]) == int(before["cancels"]) + 1, "the engine got on_cancel", (before, st))
    tap.ok(st["jobs"] == "0" and st["live"] == "0", "the cancelled call is released", st)


def t_deadline(tap, c):
    before = c.stats()
    it = c.stream(dict(ids=[1, 2], adapter="hold"), timeout=0.1)
    got = []
    err, _ = rpc_error(lambda: [got.append(m) for m in it])
    tap.ok(err is not None and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED,
           "100 ms deadline on a stream -> DEADLINE_EXCEEDED", err)
    err, _ = rpc_error(lambda: c.unary(dict(ids=[1], adapter="hold"), timeout=0.1))
    tap.ok(err is not None and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED,
           "100 ms deadline on a unary call -> DEADLINE_EXCEEDED", err)
    # 2 ms deadlines expire around the arrival: before it (the server answers), or in the engine.
    codes = set()
    for _ in range(20):
        err, _ = rpc_error(lambda: c.unary(dict(ids=[1], adapter="hold"), timeout=0.002))
        codes.add(err.code() if err else None)
    tap.ok(codes == {grpc.StatusCode.DEADLINE_EXCEEDED}, "2 ms deadlines -> DEADLINE_EXCEEDED", codes)
    st = c.wait_idle(c.timeout)
    tap.ok(st["jobs"] == "0" and st["live"] == "0" and int(st["cancels"]) >= int(before["cancels"]) + (1 if got else 0),
           "expired calls are cancelled in the engine and released", (before, st))


def t_deadline_value(tap, c):
    c.unary(dict(ids=[1]), timeout=5)
    left = int(c.stats()["deadline_left_ms"])
    # gRPC rounds the grpc-timeout header up to a few significant digits, so a little over 5000 is right.
    tap.ok(3000 < left <= 5200, "the engine sees a 5 s deadline as ~5000 ms of CLOCK_MONOTONIC ahead", left)
    c.unary(dict(ids=[1]))
    left = int(c.stats()["deadline_left_ms"])
    tap.ok(left == -1, "no deadline reaches the engine as INT64_MAX", left)


def t_errors(tap, c):
    err, _ = rpc_error(lambda: c.raw(GEN + "Nope", b""))
    tap.ok(err is not None and err.code() == grpc.StatusCode.UNIMPLEMENTED and "/loraserve.v1.Generation/Nope"
           in (err.details() or ""), "unknown method -> UNIMPLEMENTED naming it", err)
    err, _ = rpc_error(lambda: c.raw("/other.Svc/Thing", b"x"))
    tap.ok(err is not None and err.code() == grpc.StatusCode.UNIMPLEMENTED, "unknown service -> UNIMPLEMENTED")
    err, _ = rpc_error(lambda: c.unary(dict(prompt="x" * 70000), timeout=c.timeout))
    tap.ok(err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED,
           "a 70 kB request over the 64 KiB cap -> RESOURCE_EXHAUSTED", err)
    err, _ = rpc_error(lambda: c.raw(GEN + "Generate", b"\xff\xff\xff"))
    tap.ok(err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details() == "malformed request",
           "undecodable request -> INVALID_ARGUMENT 'malformed request'", err)
    err, _ = rpc_error(lambda: c.raw(HEALTH + "Check", b"\xff\xff\xff"))
    tap.ok(err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, "undecodable health request -> INVALID_ARGUMENT")
    err, _ = rpc_error(lambda: c.unary(dict(ids=[1], adapter="reject"), timeout=c.timeout))
    tap.ok(err is not None and err.code() == grpc.StatusCode.NOT_FOUND and err.details() == "adapter 'reject' not found",
           "engine rejection -> its status and message", err)
    got = []
    err, _ = rpc_error(lambda: [got.append(m["token_ids"][0]) for m in c.stream(dict(ids=[4, 5, 6], adapter="fail"),
                                                                                 timeout=c.timeout)])
    tap.ok(got == [4, 5, 6] and err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
           and err.details() == "kv cache full", "stream error after messages: messages, then the status", (got, err))
    r = c.unary(dict(ids=[9]), timeout=c.timeout)
    st = c.wait_idle(c.timeout)
    tap.ok(r["token_ids"] == [9] and st["live"] == "0", "the server still serves and holds nothing afterwards", st)


def t_health(tap, c):
    tap.ok(c.check("", timeout=c.timeout) == SERVING, "health Check '' -> SERVING")
    tap.ok(c.check("loraserve.v1.Generation", timeout=c.timeout) == SERVING, "health Check of the service -> SERVING")
    err, _ = rpc_error(lambda: c.check("nope", timeout=c.timeout))
    tap.ok(err is not None and err.code() == grpc.StatusCode.NOT_FOUND, "health Check of another service -> NOT_FOUND", err)
    w = c.watch("", timeout=c.timeout)
    first = next(w)
    c.ctl("not_serving")
    second = next(w)
    now = c.check("", timeout=c.timeout)
    c.ctl("serving")
    third = next(w)
    tap.ok((first, second, third) == (SERVING, NOT_SERVING, SERVING),
           "Watch sends the status, then each change", (first, second, third))
    tap.ok(now == NOT_SERVING, "health Check follows server_set_serving", now)
    w.cancel()
    u = c.watch("nope", timeout=c.timeout)
    tap.ok(next(u) == SERVICE_UNKNOWN, "Watch of another service -> SERVICE_UNKNOWN")
    u.cancel()
    st = c.wait_idle(c.timeout)
    tap.ok(st["live"] == "0", "cancelled Watch calls are released", st)


def t_admin(tap, c):
    before = c.stats()
    got = c.list("", timeout=c.timeout)
    want = [dict(name="alpha", max_rank=8, target_modules=["q_proj", "v_proj"], resident=True, pages=12,
                 active_requests=0, loads=5000000000),
            dict(name="beta", max_rank=16, target_modules=["q_proj", "v_proj", "o_proj"], resident=False,
                 pages=24, active_requests=2, loads=1)]
    tap.ok(got == want, "ListAdapters answered inside the hook: both adapters, every field", got)
    info = c.load("lora-7", timeout=c.timeout)
    want = dict(name="lora-7", max_rank=4, target_modules=["q_proj"], resident=True, pages=3, active_requests=0,
                loads=1)
    tap.ok(info == want, "LoadAdapter answered at the next tick echoes the name", info)
    err, _ = rpc_error(lambda: c.load("missing", timeout=c.timeout))
    tap.ok(err is not None and err.code() == grpc.StatusCode.NOT_FOUND
           and err.details() == "adapter 'missing' not found",
           "LoadAdapter failed by the engine later -> its status and message", err)
    r = c.unload("lora-7", timeout=c.timeout)
    tap.ok(r == b"", "UnloadAdapter finished with no message -> an empty response", r)
    err, _ = rpc_error(lambda: c.unload("busy", timeout=c.timeout))
    tap.ok(err is not None and err.code() == grpc.StatusCode.FAILED_PRECONDITION
           and err.details() == "adapter 'busy' is used by 2 requests",
           "UnloadAdapter refused by the hook -> its status and message", err)
    bad = {}
    for name in ("LoadAdapter", "UnloadAdapter", "ListAdapters"):
        err, _ = rpc_error(lambda: c.raw(ADMIN + name, b"\xff\xff\xff"))
        bad[name] = (err.code(), err.details()) if err else None
    tap.ok(all(v == (grpc.StatusCode.INVALID_ARGUMENT, "malformed request") for v in bad.values()),
           "undecodable admin requests -> INVALID_ARGUMENT 'malformed request'", bad)
    st = c.wait_idle(c.timeout)
    tap.ok(int(st["accepted"]) - int(before["accepted"]) == 4 and st["live"] == "0" and st["jobs"] == "0",
           "admin calls: only the accepted ones reach the engine, all are released", (before, st))


def t_admin_cancel(tap, c):
    before = c.stats()
    err, _ = rpc_error(lambda: c.load("hold", timeout=0.1))
    tap.ok(err is not None and err.code() == grpc.StatusCode.DEADLINE_EXCEEDED,
           "a LoadAdapter the engine never answers -> DEADLINE_EXCEEDED", err)
    fut = c.load.future("hold", timeout=c.timeout)
    time.sleep(0.05)
    fut.cancel()
    st = c.wait_idle(c.timeout)
    tap.ok(int(st["cancels"]) == int(before["cancels"]) + 2 and st["live"] == "0" and st["jobs"] == "0",
           "deadline and client cancel of admin calls: on_cancel, calls released", (before, st))


def t_no_admin(tap, wrap, exe, slow):
    proc, port = start_server(wrap + [exe, "--no-admin"])
    c = Client(port, slow)
    try:
        codes = {}
        for name, call in c.admin_calls():
            err, _ = rpc_error(call)
            codes[name] = (err.code(), err.details()) if err else None
        unimpl = [v is not None and v[0] == grpc.StatusCode.UNIMPLEMENTED and k in v[1] for k, v in codes.items()]
        tap.ok(all(unimpl), "without on_admin every Adapters method -> UNIMPLEMENTED naming it", codes)
        r = c.unary(dict(ids=[3]), timeout=c.timeout)
        tap.ok(r["token_ids"] == [3], "without on_admin Generate still works", r)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=c.timeout)
        tap.ok(rc == 0, "the server without on_admin exits 0%s" % (", valgrind clean" if slow else ""), rc)
    finally:
        if proc.poll() is None:
            proc.kill()
        c.ch.close()


def start_server(argv):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("port "):
        proc.kill()
        raise SystemExit("Bail out! test_server did not print its port: %r" % line)
    return proc, int(line.split()[1])


def t_drain_and_stop(tap, c, proc):
    watch = c.watch("", timeout=c.timeout)
    tap.ok(next(watch) == SERVING, "a Watch open before the drain sees SERVING")
    echo = c.stream(dict(ids=list(range(40))), timeout=c.timeout)
    first = next(echo)
    holds = [c.stream(dict(ids=[7], adapter="hold"), timeout=c.timeout) for _ in range(3)]
    tap.ok(all(next(h)["token_ids"] == [7] for h in holds), "three held streams are in flight")
    c.ctl("drain")
    err, _ = rpc_error(lambda: c.unary(dict(ids=[1]), timeout=c.timeout))
    tap.ok(err is not None and err.code() == grpc.StatusCode.UNAVAILABLE and err.details() == "server is shutting down",
           "after drain a new Generate -> UNAVAILABLE 'server is shutting down'", err)
    err, _ = rpc_error(lambda: read_stream(c, dict(ids=[1])))
    tap.ok(err is not None and err.code() == grpc.StatusCode.UNAVAILABLE, "after drain a new GenerateStream -> UNAVAILABLE")
    codes = {}
    for name, call in c.admin_calls():
        err, _ = rpc_error(call)
        codes[name] = (err.code(), err.details()) if err else None
    tap.ok(all(v == (grpc.StatusCode.UNAVAILABLE, "server is shutting down") for v in codes.values()),
           "after drain every Adapters method -> UNAVAILABLE 'server is shutting down'", codes)
    tap.ok(c.check("", timeout=c.timeout) == NOT_SERVING, "after drain health Check -> NOT_SERVING")
    tap.ok(next(watch) == NOT_SERVING, "the open Watch receives NOT_SERVING")
    rest = [t for m in echo for t in m["token_ids"]]
    tap.ok(first["token_ids"] + rest == list(range(40)), "a stream in flight at the drain completes")
    proc.send_signal(signal.SIGTERM)
    codes = []
    for h in holds + [watch]:
        err, _ = rpc_error(lambda: list(h))
        codes.append(err.code() if err else None)
    tap.ok(all(code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) for code in codes),
           "SIGTERM: calls in flight end UNAVAILABLE or CANCELLED", codes)
    try:
        rc = proc.wait(timeout=c.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = "hung"
    tap.ok(rc == 0, "the server exits 0 (engine told of every cancel%s)"
           % (", valgrind clean" if c.timeout > 10 else ""), rc)


def main():
    args = sys.argv[1:]
    wrap = []
    if args[0] == "--valgrind":
        # "possibly lost" is left out: grpc_shutdown() finishes its own cleanup on a gRPC thread, and a
        # process that exits right after it can still hold gRPC's internal vectors through interior
        # pointers (seen once in ~30 runs on a loaded machine). Our leaks show as definite or indirect.
        wrap = [args[1], "--quiet", "--leak-check=full", "--show-leak-kinds=definite,indirect",
                "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99"]
        args = args[2:]
    exe = args[0]
    tap = Tap()
    rc = subprocess.run(wrap + [exe, "--bad-addr"], stderr=subprocess.DEVNULL).returncode
    tap.ok(rc == 0, "server_create reports a listen failure as UNAVAILABLE and frees everything", rc)
    proc, port = start_server(wrap + [exe])
    c = Client(port, slow=bool(wrap))
    try:
        tests = (t_unary, t_stream, t_concurrent, t_burst, t_cancel, t_mixed, lambda tap, c: t_disconnect(tap, c, port),
                 t_deadline, t_deadline_value, t_errors, t_health, t_admin, t_admin_cancel)
        for t in tests:
            try:
                t(tap, c)
            except Exception as e:      # one broken case must not hide the others
                tap.ok(False, t.__name__ + " raised", repr(e))
        t_drain_and_stop(tap, c, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        c.ch.close()
    t_no_admin(tap, wrap, exe, slow=bool(wrap))
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
