#!/usr/bin/python3
"""A small command-line client of loraserve (loraserve.v1.Generation, grpc.health.v1.Health).

It uses Debian's python3-grpcio with no generated code: the few messages of proto/loraserve.proto and
proto/health.proto are encoded and decoded here by a tiny protobuf wire codec, so the client needs no
protoc and stays independent of the server's protobuf-c code (an oracle the server did not write).
scripts/demo.sh uses it for the sample request; it is also handy by hand:

  scripts/generate.py --addr 127.0.0.1:50051 --prompt "Hello" --max-new-tokens 16
  scripts/generate.py --token-ids 1,2,3 --stream --temperature 0.8 --seed 7
  scripts/generate.py --health

Exit status: 0 on success, 1 when the call failed (the gRPC status and message are printed), 2 on bad
arguments. --json prints the response as one JSON object instead of text.
"""
import argparse
import json
import math
import struct
import sys
import time

GENERATE = '/loraserve.v1.Generation/Generate'
GENERATE_STREAM = '/loraserve.v1.Generation/GenerateStream'
HEALTH_CHECK = '/grpc.health.v1.Health/Check'
FINISH_REASONS = ['UNSPECIFIED', 'LENGTH', 'STOP', 'CANCELLED', 'ERROR']
SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN']

# ---------------------------------------------------------------------------------------------------
# Protobuf wire format: varint (0), 64-bit (1), length-delimited (2), 32-bit (5).


def _varint(n):
    n &= (1 << 64) - 1           # negative int32/int64 are sent as 10-byte two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field, wire_type):
    return _varint(field << 3 | wire_type)


def _len_field(field, data):
    return _key(field, 2) + _varint(len(data)) + data


def encode_generate_request(r):
    """r: dict with the GenerateRequest fields; zero values are left out as proto3 does."""
    out = bytearray()
    if r.get('request_id'):
        out += _len_field(1, r['request_id'].encode())
    if r.get('prompt'):
        out += _len_field(2, r['prompt'].encode())
    if r.get('prompt_token_ids'):
        out += _len_field(3, b''.join(_varint(t) for t in r['prompt_token_ids']))   # packed
    if r.get('adapter'):
        out += _len_field(4, r['adapter'].encode())
    if r.get('max_new_tokens'):
        out += _key(5, 0) + _varint(r['max_new_tokens'])
    for field, name in ((6, 'temperature'), (7, 'top_p')):
        v = r.get(name, 0.0)
        if v != 0.0 or math.isnan(v):
            out += _key(field, 5) + struct.pack('<f', v)
    if r.get('top_k'):
        out += _key(8, 0) + _varint(r['top_k'])
    if r.get('seed'):
        out += _key(9, 0) + _varint(r['seed'])
    for s in r.get('stop', []):
        out += _len_field(10, s.encode())
    if r.get('stop_token_ids'):
        out += _len_field(11, b''.join(_varint(t) for t in r['stop_token_ids']))
    if r.get('ignore_eos'):
        out += _key(12, 0) + _varint(1)
    return bytes(out)


def _read_varint(buf, i):
    n = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError('truncated varint')
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7
        if shift >= 70:
            raise ValueError('varint too long')


def _int32(n):
    n &= 0xFFFFFFFF
    return n - (1 << 32) if n & 0x80000000 else n


def _fields(buf):
    """Yields (field, wire_type, value): ints for varint, bytes for the others."""
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _read_varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = _read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError('unsupported wire type %d' % wt)
        if i > len(buf):
            raise ValueError('truncated field %d' % field)
        yield field, wt, v


def decode_generate_response(buf):
    m = {'request_id': '', 'token_ids': [], 'text': '', 'finish_reason': 'UNSPECIFIED',
         'prompt_tokens': 0, 'completion_tokens': 0, 'queue_time_s': 0.0, 'first_token_time_s': 0.0,
         'total_time_s': 0.0}
    for field, wt, v in _fields(buf):
        if field == 1 and wt == 2:
            m['request_id'] = v.decode('utf-8', 'replace')
        elif field == 2 and wt == 2:                        # packed repeated int32
            j = 0
            while j < len(v):
                t, j = _read_varint(v, j)
                m['token_ids'].append(_int32(t))
        elif field == 2 and wt == 0:                        # unpacked form is legal too
            m['token_ids'].append(_int32(v))
        elif field == 3 and wt == 2:
            m['text'] = v.decode('utf-8', 'replace')
        elif field == 4 and wt == 0:
            m['finish_reason'] = FINISH_REASONS[v] if v < len(FINISH_REASONS) else str(v)
        elif field == 5 and wt == 0:
            m['prompt_tokens'] = v
        elif field == 6 and wt == 0:
            m['completion_tokens'] = v
        elif field in (7, 8, 9) and wt == 1:
            m[('queue_time_s', 'first_token_time_s', 'total_time_s')[field - 7]] = struct.unpack('<d', v)[0]
    return m


def encode_health_request(service):
    return _len_field(1, service.encode()) if service else b''


def decode_health_response(buf):
    status = 0
    for field, wt, v in _fields(buf):
        if field == 1 and wt == 0:
            status = v
    return SERVING_STATUS[status] if status < len(SERVING_STATUS) else str(status)


# ---------------------------------------------------------------------------------------------------

def _identity(b):
    return b


def wait_serving(channel, timeout_s):
    """Polls Health/Check until SERVING or timeout; returns the last status seen."""
    import grpc
    check = channel.unary_unary(HEALTH_CHECK, request_serializer=_identity, response_deserializer=_identity)
    end = time.monotonic() + timeout_s
    last = 'no answer'
    while True:
        try:
            last = decode_health_response(check(encode_health_request(''), timeout=5))
            if last == 'SERVING':
                return last
        except grpc.RpcError as e:
            last = '%s: %s' % (e.code().name, e.details())
        if time.monotonic() >= end:
            return last
        time.sleep(0.2)


def generate(channel, req, stream, timeout_s, on_delta=None):
    """Returns the merged response dict (stream deltas concatenated) and the number of messages."""
    payload = encode_generate_request(req)
    if not stream:
        call = channel.unary_unary(GENERATE, request_serializer=_identity, response_deserializer=_identity)
        return decode_generate_response(call(payload, timeout=timeout_s)), 1
    call = channel.unary_stream(GENERATE_STREAM, request_serializer=_identity, response_deserializer=_identity)
    merged, n = None, 0
    for raw in call(payload, timeout=timeout_s):
        msg = decode_generate_response(raw)
        n += 1
        if on_delta:
            on_delta(msg)
        if merged is None:
            merged = msg
        else:
            merged['token_ids'] += msg['token_ids']
            merged['text'] += msg['text']
            for k in ('request_id', 'finish_reason', 'prompt_tokens', 'completion_tokens', 'queue_time_s',
                      'first_token_time_s', 'total_time_s'):
                if msg[k]:
                    merged[k] = msg[k]
    return merged or decode_generate_response(b''), n


LOAD_ADAPTER = '/loraserve.v1.Adapters/LoadAdapter'
UNLOAD_ADAPTER = '/loraserve.v1.Adapters/UnloadAdapter'
LIST_ADAPTERS = '/loraserve.v1.Adapters/ListAdapters'


def decode_adapter_info(buf):
    m = {'name': '', 'max_rank': 0, 'target_modules': [], 'resident': False, 'pages': 0, 'active_requests': 0,
         'loads': 0}
    for field, wt, v in _fields(buf):
        if field == 1 and wt == 2:
            m['name'] = v.decode('utf-8', 'replace')
        elif field == 3 and wt == 2:
            m['target_modules'].append(v.decode('utf-8', 'replace'))
        elif wt == 0 and field in (2, 4, 5, 6, 7):
            key = {2: 'max_rank', 4: 'resident', 5: 'pages', 6: 'active_requests', 7: 'loads'}[field]
            m[key] = bool(v) if key == 'resident' else v
    return m


def adapter_call(channel, method, name=None, timeout_s=60):
    """LoadAdapter / UnloadAdapter (name) or ListAdapters (no name): returns the decoded answer, an
    AdapterInfo dict for Load, {} for Unload, a list of AdapterInfo dicts for List."""
    call = channel.unary_unary(method, request_serializer=_identity, response_deserializer=_identity)
    raw = call(_len_field(1, name.encode()) if name else b'', timeout=timeout_s)
    if method == LIST_ADAPTERS:
        return [decode_adapter_info(v) for f, wt, v in _fields(raw) if f == 1 and wt == 2]
    if method == LOAD_ADAPTER:
        return next((decode_adapter_info(v) for f, wt, v in _fields(raw) if f == 1 and wt == 2), {})
    return {}


def codec_tool(argv):
    """For tests that check this codec against another protobuf implementation:
    --codec-encode JSON (a GenerateRequest) prints hex; --codec-decode HEX prints a GenerateResponse as JSON."""
    if argv[0] == '--codec-encode':
        print(encode_generate_request(json.loads(argv[1])).hex())
    else:
        print(json.dumps(decode_generate_response(bytes.fromhex(argv[1]))))
    return 0


def main(argv):
    if len(argv) == 2 and argv[0] in ('--codec-encode', '--codec-decode'):
        return codec_tool(argv)
    ap = argparse.ArgumentParser(description='loraserve gRPC client (Generate, GenerateStream, health, adapters)')
    ap.add_argument('--addr', default='127.0.0.1:50051', help='server host:port')
    ap.add_argument('--prompt', default='', help='text prompt')
    ap.add_argument('--token-ids', default='', help='prompt as comma-separated token ids instead of text')
    ap.add_argument('--adapter', default='', help='LoRA adapter name (empty: the base model)')
    ap.add_argument('--max-new-tokens', type=int, default=32)
    ap.add_argument('--temperature', type=float, default=0.0, help='0 = greedy')
    ap.add_argument('--top-p', type=float, default=0.0)
    ap.add_argument('--top-k', type=int, default=0)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--stop', action='append', default=[], help='stop string (repeatable)')
    ap.add_argument('--ignore-eos', action='store_true')
    ap.add_argument('--request-id', default='')
    ap.add_argument('--stream', action='store_true', help='use GenerateStream and print deltas as they come')
    ap.add_argument('--timeout', type=float, default=120.0, help='call deadline in seconds')
    ap.add_argument('--wait-ready', type=float, default=0.0, metavar='S',
                    help='first wait up to S seconds for health SERVING (the port opens, NOT_SERVING, '
                         'before the model has loaded)')
    ap.add_argument('--health', action='store_true', help='only print the health status')
    ap.add_argument('--load-adapter', metavar='NAME', help='only load an adapter (LoadAdapter) and print it')
    ap.add_argument('--unload-adapter', metavar='NAME', help='only unload an adapter (UnloadAdapter)')
    ap.add_argument('--list-adapters', action='store_true', help='only list the loaded adapters')
    ap.add_argument('--json', action='store_true', help='print the response as JSON')
    args = ap.parse_args(argv)

    try:
        import grpc
    except ImportError:
        print('generate.py: python3-grpcio is missing (apt-get install python3-grpcio)', file=sys.stderr)
        return 2

    req = {'request_id': args.request_id, 'prompt': args.prompt, 'adapter': args.adapter,
           'max_new_tokens': args.max_new_tokens, 'temperature': args.temperature, 'top_p': args.top_p,
           'top_k': args.top_k, 'seed': args.seed, 'stop': args.stop, 'ignore_eos': args.ignore_eos}
    if args.token_ids:
        try:
            req['prompt_token_ids'] = [int(t) for t in args.token_ids.split(',') if t.strip()]
        except ValueError:
            ap.error('--token-ids: comma-separated integers expected')

    with grpc.insecure_channel(args.addr) as channel:
        if args.health or args.wait_ready > 0:
            status = wait_serving(channel, args.wait_ready)
            if args.health:
                print(json.dumps({'status': status}) if args.json else status)
                return 0 if status == 'SERVING' else 1
            if status != 'SERVING':
                print('generate.py: %s not serving after %g s (%s)' % (args.addr, args.wait_ready, status),
                      file=sys.stderr)
                return 1

        if args.load_adapter or args.unload_adapter or args.list_adapters:
            method, name = ((LOAD_ADAPTER, args.load_adapter) if args.load_adapter else
                            (UNLOAD_ADAPTER, args.unload_adapter) if args.unload_adapter else (LIST_ADAPTERS, None))
            try:
                print(json.dumps(adapter_call(channel, method, name, args.timeout), indent=None if args.json else 1))
            except grpc.RpcError as e:
                print('error: %s: %s' % (e.code().name, e.details()), file=sys.stderr)
                return 1
            return 0

        def show_delta(msg):
            if not args.json and msg['text']:
                sys.stdout.write(msg['text'])
                sys.stdout.flush()

        t0 = time.monotonic()
        try:
            res, n = generate(channel, req, args.stream, args.timeout, show_delta if args.stream else None)
        except grpc.RpcError as e:
            print('error: %s: %s' % (e.code().name, e.details()), file=sys.stderr)
            return 1
        wall = time.monotonic() - t0

    if args.json:
        res['messages'] = n
        print(json.dumps(res))
        return 0
    if args.stream:
        sys.stdout.write('\n')
    print('text:      %r' % res['text'])
    print('token_ids: %s' % res['token_ids'])
    print('finish:    %s  (prompt %d tokens, %d generated, %.3f s%s)' % (
        res['finish_reason'], res['prompt_tokens'], res['completion_tokens'], wall,
        ', %d messages' % n if args.stream else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
