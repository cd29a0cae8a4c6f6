#!/usr/bin/env node
// Checks the hand-written protobuf codec of scripts/generate.py (the Python demo client) against an
// independent implementation, protobufjs (installed with @grpc/proto-loader), on proto/loraserve.proto:
// requests the Python side encodes must decode to the same fields here, and responses encoded here must
// decode to the same fields there. Needs no server. Prints TAP; skips when node_modules is absent.
// usage: codec_check.js PYTHON GENERATE_PY PROTO_DIR
'use strict';

const assert = require('assert');
const cp = require('child_process');
const path = require('path');

const [python, generatePy, protoDir] = process.argv.slice(2);
let protobuf;
try {
  protobuf = require('protobufjs');
} catch (e) {
  console.log('1..0 # SKIP protobufjs is not installed (npm install --prefix tests/e2e)');
  process.exit(0);
}

const root = new protobuf.Root().loadSync(path.join(protoDir, 'loraserve.proto'), { keepCase: true });
const Request = root.lookupType('loraserve.v1.GenerateRequest');
const Response = root.lookupType('loraserve.v1.GenerateResponse');
const toObj = (T, msg) => T.toObject(msg, { longs: String, enums: String, defaults: true, arrays: true });
const py = (...args) => cp.execFileSync(python, [generatePy, ...args], { encoding: 'utf8' }).trim();

let n = 0;
function check(name, fn) {
  n++;
  try {
    fn();
    console.log(`ok ${n} - ${name}`);
  } catch (e) {
    console.log(`not ok ${n} - ${name}`);
    for (const l of String(e.stack || e).split('\n')) console.log(`# ${l}`);
  }
}

// JSON has no NaN; Python's json reads the bare token NaN, so write it by hand.
const toPyJson = (o) => JSON.stringify(o, (k, v) => (Number.isNaN(v) ? '__NaN__' : v)).replace(/"__NaN__"/g, 'NaN');

const requests = [
  { prompt: 'Hello, world' },
  { request_id: 'r-1', prompt_token_ids: [1, 2, 300, 70000, 2147483647], max_new_tokens: 17, ignore_eos: true },
  { prompt: 'héllo ✓ 中文', adapter: 'sql-lora', temperature: 0.7, top_p: 0.9, top_k: 40, seed: '18446744073709551615',
    stop: ['\n\n', 'END'], stop_token_ids: [2, 128001] },
  { prompt_token_ids: [-1, 5], temperature: NaN, top_p: -0.5, seed: '1' },
];
requests.forEach((r, i) => {
  check(`python-encoded request ${i} decodes to the same fields in protobufjs`, () => {
    const json = toPyJson(r).replace(/"seed":"(\d+)"/, '"seed":$1');   // seed as a JSON integer
    const bytes = Buffer.from(py('--codec-encode', json), 'hex');
    const got = toObj(Request, Request.decode(bytes));
    const want = toObj(Request, Request.fromObject({ ...r, temperature: 0, top_p: 0 }));
    for (const f of ['temperature', 'top_p']) {
      const v = r[f] === undefined ? 0 : r[f];
      if (Number.isNaN(v)) assert.ok(Number.isNaN(got[f]), `${f}: ${got[f]} is not NaN`);
      else assert.strictEqual(got[f], Math.fround(v), f);
      delete got[f];
      delete want[f];
    }
    assert.deepStrictEqual(got, want);
  });
});

const responses = [
  {},
  { request_id: 'abc', token_ids: [1, 2, 3, 128000, -7], text: 'Hi ✓ there', finish_reason: 'FINISH_REASON_LENGTH',
    prompt_tokens: 12, completion_tokens: 3, queue_time_s: 0.001, first_token_time_s: 0.25, total_time_s: 1.5 },
  { token_ids: [42], text: '', finish_reason: 'FINISH_REASON_STOP' },
];
responses.forEach((r, i) => {
  check(`protobufjs-encoded response ${i} decodes to the same fields in python`, () => {
    const hex = Buffer.from(Response.encode(Response.fromObject(r)).finish()).toString('hex');
    const got = JSON.parse(py('--codec-decode', hex));
    const want = toObj(Response, Response.fromObject(r));
    want.finish_reason = want.finish_reason.replace('FINISH_REASON_', '');
    assert.deepStrictEqual(got, want);
  });
});

console.log(`1..${n}`);
