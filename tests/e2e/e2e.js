#!/usr/bin/env node
// End-to-end test of loraserve through an independent gRPC client (@grpc/grpc-js + @grpc/proto-loader):
// it starts the built binary under `mpirun -np 3` (1 coordinator + 2 tensor-parallel workers, CPU
// backend, the built-in demo model), drives the public API over loopback and checks the contract of
// proto/loraserve.proto and proto/health.proto: statuses and messages, determinism whatever the batch,
// streaming equal to unary, cancel, deadlines, admission control and graceful shutdown. Prints TAP, one
// line per check. One phase per run, so that each meson test starts its own server:
//   api       health, Generate / GenerateStream, cancel, deadlines, bad input, idle graceful stop
//   queue     --max-waiting 4 --max-batch 2 and 40 concurrent requests: refused at once or completed
//   shutdown  SIGTERM to rank 0 while streams run: UNAVAILABLE or complete, mpirun exits 0
// Skips (TAP `1..0 # SKIP`) when the npm packages are not installed (npm install --prefix tests/e2e).
'use strict';

const assert = require('assert');
const cp = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

// ---------------------------------------------------------------------------------------------------
// Options

function parseArgs(argv) {
  const o = {
    phase: 'api',
    bin: path.resolve(__dirname, '../../build/launch/loraserve'),
    mpirun: 'mpirun',
    np: 3,
    protoDir: path.resolve(__dirname, '../../proto'),
    startTimeoutS: 180,       // demo model generation + load on a 2-core machine, with margin
    contextLen: 1024,         // max_position_embeddings of the built-in demo model
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i], v = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--phase') o.phase = v();
    else if (a === '--bin') o.bin = path.resolve(v());
    else if (a === '--mpirun') o.mpirun = v();
    else if (a === '--np') o.np = parseInt(v(), 10);
    else if (a === '--proto-dir') o.protoDir = path.resolve(v());
    else if (a === '--start-timeout') o.startTimeoutS = parseFloat(v());
    else if (a === '--context') o.contextLen = parseInt(v(), 10);
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

const opt = parseArgs(process.argv.slice(2));

let grpc, protoLoader;
try {
  grpc = require('@grpc/grpc-js');
  protoLoader = require('@grpc/proto-loader');
} catch (e) {
  console.log('1..0 # SKIP @grpc/grpc-js is not installed (npm install --prefix tests/e2e)');
  process.exit(0);
}

const Code = grpc.status;
const codeName = (c) => Object.keys(Code).find((k) => Code[k] === c) || String(c);

const pkgDef = protoLoader.loadSync(
  [path.join(opt.protoDir, 'loraserve.proto'), path.join(opt.protoDir, 'health.proto')],
  { keepCase: true, longs: String, enums: String, defaults: true, includeDirs: [opt.protoDir] });
const proto = grpc.loadPackageDefinition(pkgDef);
const Generation = proto.loraserve.v1.Generation;
const Health = proto.grpc.health.v1.Health;

// ---------------------------------------------------------------------------------------------------
// TAP

let testNo = 0, failures = 0;
const servers = new Set();      // jobs still running
const allServers = [];          // every job started, for logs and cleanup

function diag(text) {
  for (const line of String(text).split('\n')) console.log(`# ${line}`);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// One TAP check. `srv`, when given, must stay alive: its unexpected exit fails the check at once.
async function check(name, fn, { timeoutMs = 120000, srv = null } = {}) {
  testNo++;
  let err = null;
  try {
    const work = Promise.resolve().then(fn);
    const guards = [withTimeout(work, timeoutMs, name)];
    if (srv) guards.push(srv.exited.then((x) => { throw new Error(`server exited during the check (${x.desc})`); }));
    await Promise.race(guards);
  } catch (e) {
    err = e;
  }
  if (err) {
    failures++;
    console.log(`not ok ${testNo} - ${name}`);
    diag(err && err.stack ? err.stack : err);
  } else {
    console.log(`ok ${testNo} - ${name}`);
  }
  return !err;
}

// ---------------------------------------------------------------------------------------------------
// The server job

function mpiEnv(extra) {
  const env = { ...process.env };
  const defaults = {
    OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_rmaps_base_oversubscribe: '1',
    OMPI_MCA_btl_vader_single_copy_mechanism: 'none', OMPI_MCA_mpi_yield_when_idle: '1',
    OMPI_MCA_hwloc_base_binding_policy: 'none',
  };
  for (const [k, v] of Object.entries(defaults)) if (env[k] === undefined) env[k] = v;
  return { ...env, ...extra };
}

// Rank 0 among mpirun's children, when the pid file is missing: the process whose environment says
// OMPI_COMM_WORLD_RANK=0.
function rank0FromProc(mpirunPid) {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = parseInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1], 10);
      if (ppid !== mpirunPid) continue;
      const env = fs.readFileSync(`/proc/${d}/environ`, 'utf8').split('\0');
      if (env.includes('OMPI_COMM_WORLD_RANK=0')) return parseInt(d, 10);
    } catch (e) { /* gone, or not ours */ }
  }
  return null;
}

function sessionPids(sid) {
  const pids = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');   // state ppid pgrp session ...
      if (parseInt(f[3], 10) === sid) pids.push(parseInt(d, 10));
    } catch (e) { /* gone */ }
  }
  return pids;
}

class Server {
  constructor(label, extraArgs = []) {
    this.label = label;
    this.extraArgs = extraArgs;
    this.log = '';
    this.clients = [];
  }

  start() {
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), `loraserve-e2e-${this.label}-`));
    this.portFile = path.join(this.tmp, 'port');
    this.pidFile = path.join(this.tmp, 'pid');
    const args = ['-np', String(opt.np), opt.bin,
      '--listen', '127.0.0.1:0', '--port-file', this.portFile, '--pid-file', this.pidFile,
      '--demo-dir', path.join(this.tmp, 'demo'), ...this.extraArgs];
    this.cmd = [opt.mpirun, ...args].join(' ');
    // detached: its own session, so that the whole job can be killed as a group on failure.
    this.proc = cp.spawn(opt.mpirun, args, { env: mpiEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    servers.add(this);
    allServers.push(this);
    const keep = (chunk) => {
      this.log += chunk.toString();
      if (this.log.length > 2e6) this.log = this.log.slice(-1e6);
    };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.exitInfo = null;
    this.exited = new Promise((resolve) => {
      const done = (code, signal, error) => {
        if (this.exitInfo) return;
        const desc = error ? `spawn failed: ${error.message}` : signal ? `signal ${signal}` : `status ${code}`;
        this.exitInfo = { code, signal, desc };
        resolve(this.exitInfo);
      };
      this.proc.on('exit', (code, signal) => done(code, signal, null));
      this.proc.on('error', (e) => done(null, null, e));
    });
    this.exited.then(() => servers.delete(this));
  }

  // Resolves once the port file holds a port, the rank-0 pid is known and health says SERVING.
  async ready() {
    const deadline = Date.now() + opt.startTimeoutS * 1000;
    const alive = () => {
      if (this.exitInfo) throw new Error(`mpirun exited before serving (${this.exitInfo.desc})`);
      if (Date.now() > deadline) throw new Error(`not serving after ${opt.startTimeoutS} s`);
    };
    for (;;) {
      alive();
      try {
        const s = fs.readFileSync(this.portFile, 'utf8').trim();
        if (/^\d+$/.test(s) && +s > 0) { this.port = +s; break; }
      } catch (e) { /* not yet */ }
      await sleep(100);
    }
    this.addr = `127.0.0.1:${this.port}`;
    // The pid file is due by the time the port file is written; give it 5 s, then look in /proc.
    const pidDeadline = Date.now() + 5000;
    for (;;) {
      alive();
      try {
        const s = fs.readFileSync(this.pidFile, 'utf8').trim();
        if (/^\d+$/.test(s)) { this.pid = +s; break; }
      } catch (e) { /* not yet */ }
      if (Date.now() > pidDeadline) {
        const p = rank0FromProc(this.proc.pid);
        if (p) { this.pid = p; this.pidFromProc = true; break; }
      }
      await sleep(100);
    }
    this.health = new Health(this.addr, grpc.credentials.createInsecure());
    for (;;) {
      alive();
      const r = await healthCheck(this.health, '', 2000);
      if (r.res && r.res.status === 'SERVING') break;
      await sleep(200);
    }
  }

  // A client on its own connection (the local subchannel pool keeps channels from sharing one).
  client(ownConnection = false) {
    const options = ownConnection ? { 'grpc.use_local_subchannel_pool': 1 } : {};
    const c = new Generation(this.addr, grpc.credentials.createInsecure(), options);
    this.clients.push(c);
    return c;
  }

  // SIGTERM to rank 0 only (never to mpirun: it would tear the job down). Resolves mpirun's exit, or
  // kills the job and throws when it does not exit within graceMs.
  async stop(graceMs) {
    if (this.exitInfo) return this.exitInfo;
    process.kill(this.pid, 'SIGTERM');
    try {
      return await withTimeout(this.exited, graceMs, 'mpirun exit after SIGTERM to rank 0');
    } catch (e) {
      this.kill();
      throw e;
    }
  }

  // SIGKILL to the whole job: mpirun started it in its own session, and Open MPI puts each rank in a
  // process group of its own, so every process of that session (ranks outlive a killed mpirun).
  kill() {
    if (!this.proc || !this.proc.pid) return;
    for (const pid of sessionPids(this.proc.pid)) {
      try { process.kill(pid, 'SIGKILL'); } catch (e) { /* already gone */ }
    }
  }

  close() {
    for (const c of this.clients) c.close();
    if (this.health) this.health.close();
    this.clients = [];
  }

  cleanup() {
    this.close();
    this.kill();
    try { fs.rmSync(this.tmp, { recursive: true, force: true }); } catch (e) { /* best effort */ }
  }

  dumpLog() {
    if (this.logShown || !this.proc) return;
    this.logShown = true;
    const lines = this.log.split('\n');
    const tail = lines.slice(-400).join('\n');
    process.stderr.write(`\n----- server log (${this.label}): ${this.cmd}\n` +
      (lines.length > 400 ? `[... ${lines.length - 400} earlier lines]\n` : '') + tail +
      `\n----- end of server log (${this.label}); exit: ${this.exitInfo ? this.exitInfo.desc : 'still running'}\n`);
  }
}

// Starts a server as one check; returns it or null (and the phase stops) when it never serves.
async function startServer(label, extraArgs) {
  const srv = new Server(label, extraArgs);
  let ok = false;
  await check(`server starts and serves (${['mpirun -np', opt.np, 'loraserve', ...extraArgs].join(' ')})`, async () => {
    srv.start();
    await srv.ready();
    ok = true;
  }, { timeoutMs: opt.startTimeoutS * 1000 + 30000 });
  if (!ok) {
    srv.dumpLog();
    srv.cleanup();
    return null;
  }
  return srv;
}

// ---------------------------------------------------------------------------------------------------
// Calls: each resolves to {err, res|msgs, ms}, never rejects, and always has a deadline.

function deadlineIn(ms) {
  return new Date(Date.now() + ms);
}

function healthCheck(client, service, timeoutMs = 10000) {
  return new Promise((resolve) => {
    client.Check({ service }, { deadline: deadlineIn(timeoutMs) }, (err, res) => resolve({ err, res }));
  });
}

function unary(client, req, { timeoutMs = 120000 } = {}) {
  const t0 = Date.now();
  return new Promise((resolve) => {
    client.Generate(req, { deadline: deadlineIn(timeoutMs) }, (err, res) => resolve({ err, res, ms: Date.now() - t0 }));
  });
}

// onData(msg, call) may cancel. Settles on the final status (after the last message was delivered).
function stream(client, req, { timeoutMs = 120000, onData = null } = {}) {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const msgs = [];
    let err = null, status = null, ended = false, settled = false;
    const call = client.GenerateStream(req, { deadline: deadlineIn(timeoutMs) });
    const settle = () => {
      if (settled) return;
      settled = true;
      resolve({ err, msgs, status, ms: Date.now() - t0 });
    };
    const maybeSettle = () => {
      if (status && (ended || status.code !== Code.OK)) settle();
    };
    call.on('data', (m) => {
      msgs.push(m);
      if (onData) onData(m, call, msgs);
    });
    call.on('error', (e) => { err = e; maybeSettle(); });
    call.on('end', () => { ended = true; maybeSettle(); });
    call.on('status', (s) => {
      status = s;
      maybeSettle();
      setTimeout(settle, 2000);   // a status without 'end' still settles
    });
  });
}

// The stream's messages merged the way a client would: ids and text concatenated, the last message's
// finish fields.
function mergeStream(msgs) {
  const last = msgs.length ? msgs[msgs.length - 1] : {};
  return {
    token_ids: msgs.flatMap((m) => m.token_ids),
    text: msgs.map((m) => m.text).join(''),
    finish_reason: last.finish_reason,
    completion_tokens: last.completion_tokens,
    prompt_tokens: last.prompt_tokens,
  };
}

function expectOk(r, what) {
  if (r.err) throw new Error(`${what}: ${codeName(r.err.code)}: ${r.err.details}`);
  return r.res;
}

function expectCode(r, code, what) {
  if (!r.err) throw new Error(`${what}: expected ${codeName(code)}, got OK`);
  assert.strictEqual(codeName(r.err.code), codeName(code), `${what}: status (details: ${r.err.details})`);
  assert.ok(r.err.details && r.err.details.length > 0, `${what}: the status has no message`);
}

function checkComplete(res, req, what) {
  assert.strictEqual(res.finish_reason, 'FINISH_REASON_LENGTH', `${what}: finish_reason`);
  assert.strictEqual(res.token_ids.length, req.max_new_tokens, `${what}: number of token ids`);
  assert.strictEqual(res.completion_tokens, req.max_new_tokens, `${what}: completion_tokens`);
}

const PROMPT_IDS = [1, 15, 27, 3, 99, 42, 7, 64];
const TEXT_PROMPT = 'The quick brown fox jumps over the lazy dog. Hello, world!';

// ---------------------------------------------------------------------------------------------------
// Phase api

async function phaseApi() {
  const srv = await startServer('api', []);
  if (!srv) return;
  const c = srv.client();
  const on = { srv };

  await check('stdout announces "loraserve: listening on 127.0.0.1:PORT" with the bound port', () => {
    const m = srv.log.match(/loraserve: listening on (\S+)/);
    assert.ok(m, 'no "loraserve: listening on" line in the output');
    assert.strictEqual(m[1], srv.addr);
  }, on);

  await check('rank 0 pid file names a live process (not mpirun)', () => {
    assert.ok(!srv.pidFromProc, 'the --pid-file was never written (found rank 0 through /proc instead)');
    assert.notStrictEqual(srv.pid, srv.proc.pid);
    process.kill(srv.pid, 0);
  }, on);

  await check('health Check "" is SERVING', async () => {
    const r = await healthCheck(srv.health, '');
    assert.strictEqual(expectOk(r, 'Check').status, 'SERVING');
  }, on);

  await check('health Check "loraserve.v1.Generation" is SERVING', async () => {
    const r = await healthCheck(srv.health, 'loraserve.v1.Generation');
    assert.strictEqual(expectOk(r, 'Check').status, 'SERVING');
  }, on);

  const idsReq = { request_id: 'e2e-ids', prompt_token_ids: PROMPT_IDS, max_new_tokens: 16, ignore_eos: true };
  await check('unary Generate by prompt_token_ids (greedy): complete and deterministic', async () => {
    const a = expectOk(await unary(c, idsReq), 'first');
    const b = expectOk(await unary(c, idsReq), 'second');
    checkComplete(a, idsReq, 'first');
    assert.strictEqual(a.request_id, 'e2e-ids', 'request_id echoed');
    assert.strictEqual(a.prompt_tokens, PROMPT_IDS.length, 'prompt_tokens');
    assert.deepStrictEqual(b.token_ids, a.token_ids, 'same tokens twice');
    assert.strictEqual(b.text, a.text, 'same text twice');
  }, on);

  await check('unary Generate assigns a request_id when none is given', async () => {
    const r = expectOk(await unary(c, { prompt_token_ids: PROMPT_IDS, max_new_tokens: 2, ignore_eos: true }), 'Generate');
    assert.ok(r.request_id.length > 0, 'empty request_id');
  }, on);

  const textReq = { prompt: TEXT_PROMPT, max_new_tokens: 12, ignore_eos: true };
  await check('unary Generate by text prompt: complete and deterministic', async () => {
    const a = expectOk(await unary(c, textReq), 'first');
    const b = expectOk(await unary(c, textReq), 'second');
    checkComplete(a, textReq, 'first');
    assert.ok(a.prompt_tokens > 0, 'prompt_tokens > 0');
    assert.strictEqual(typeof a.text, 'string');
    assert.deepStrictEqual(b.token_ids, a.token_ids, 'same tokens twice');
    assert.strictEqual(b.text, a.text, 'same text twice');
  }, on);

  await check('timing fields: 0 <= queue_time_s <= first_token_time_s <= total_time_s', async () => {
    const r = expectOk(await unary(c, { prompt_token_ids: PROMPT_IDS, max_new_tokens: 4, ignore_eos: true }), 'Generate');
    assert.ok(r.queue_time_s >= 0, `queue_time_s ${r.queue_time_s}`);
    assert.ok(r.first_token_time_s >= r.queue_time_s, `first_token_time_s ${r.first_token_time_s} < queue_time_s`);
    assert.ok(r.total_time_s >= r.first_token_time_s, `total_time_s ${r.total_time_s} < first_token_time_s`);
    assert.ok(r.total_time_s > 0, 'total_time_s is 0');
  }, on);

  // 40 streams at once, each its own sampling settings; then each request alone as unary.
  const N = 40;
  const temps = [0, 0.7, 1.0, 1.3];
  const reqs = [];
  for (let i = 0; i < N; i++) {
    const r = {
      request_id: `s${i}`, max_new_tokens: 8 + (i % 5) * 4, ignore_eos: true,
      temperature: temps[i % temps.length], top_p: i % 3 === 0 ? 0.9 : 0, top_k: i % 4 === 1 ? 40 : 0,
      seed: String(1000003 * (i + 1)),
    };
    if (i % 2) r.prompt = `${TEXT_PROMPT} #${i}`;
    else r.prompt_token_ids = PROMPT_IDS.slice(0, 3 + (i % 5)).map((t) => t + i);
    reqs.push(r);
  }
  let streamed = null, unaries = null;
  await check(`${N} concurrent GenerateStream calls all end OK`, async () => {
    const clients = [c, srv.client(true), srv.client(true), srv.client(true)];
    streamed = await Promise.all(reqs.map((r, i) => stream(clients[i % clients.length], r)));
    const bad = streamed.map((s, i) => s.err && `s${i}: ${codeName(s.err.code)} ${s.err.details}`).filter(Boolean);
    assert.deepStrictEqual(bad, [], 'failed streams');
  }, { ...on, timeoutMs: 300000 });

  await check('each stream: one message at least, finish_reason only on the last, LENGTH and completion_tokens', () => {
    assert.ok(streamed, 'no streams');
    for (let i = 0; i < N; i++) {
      const { msgs } = streamed[i];
      assert.ok(msgs.length >= 1, `s${i}: no messages`);
      msgs.slice(0, -1).forEach((m, j) =>
        assert.strictEqual(m.finish_reason, 'FINISH_REASON_UNSPECIFIED', `s${i} message ${j}: finish_reason before the end`));
      checkComplete(mergeStream(msgs), reqs[i], `s${i}`);
    }
  }, on);

  await check('each stream equals a unary Generate of the same request (same seed, other batch)', async () => {
    assert.ok(streamed, 'no streams');
    unaries = [];
    for (const r of reqs) unaries.push(expectOk(await unary(c, r), r.request_id));
    const diffs = [];
    for (let i = 0; i < N; i++) {
      const s = mergeStream(streamed[i].msgs);
      if (JSON.stringify(s.token_ids) !== JSON.stringify(unaries[i].token_ids)) {
        diffs.push(`s${i} (temperature ${reqs[i].temperature}): stream ${JSON.stringify(s.token_ids)} unary ${JSON.stringify(unaries[i].token_ids)}`);
      }
    }
    assert.deepStrictEqual(diffs, [], 'token ids differ');
  }, { ...on, timeoutMs: 300000 });

  await check('stream text deltas concatenate to the unary text', () => {
    assert.ok(streamed && unaries, 'no results');
    for (let i = 0; i < N; i++) {
      assert.strictEqual(mergeStream(streamed[i].msgs).text, unaries[i].text, `s${i}: text`);
    }
  }, on);

  // Long enough that no test machine finishes it within the checks below.
  const longReq = { prompt_token_ids: PROMPT_IDS, max_new_tokens: opt.contextLen - PROMPT_IDS.length - 16, ignore_eos: true };
  await check('client cancel mid-stream gives CANCELLED', async () => {
    const r = await stream(c, longReq, { onData: (m, call, msgs) => { if (msgs.length === 1) call.cancel(); } });
    assert.ok(r.msgs.length >= 1, 'no message before the end');
    assert.ok(r.err, `stream ended OK after ${r.msgs.length} messages (too fast to cancel?)`);
    assert.strictEqual(codeName(r.err.code), 'CANCELLED');
  }, on);

  await check(`prompt + max_new_tokens == context (${opt.contextLen}) is accepted (stream started, then cancelled)`, async () => {
    const edge = { ...longReq, max_new_tokens: opt.contextLen - PROMPT_IDS.length };
    const r = await stream(c, edge, { onData: (m, call, msgs) => { if (msgs.length === 1) call.cancel(); } });
    if (r.err && r.err.code !== Code.CANCELLED) throw new Error(`${codeName(r.err.code)}: ${r.err.details}`);
    assert.ok(r.msgs.length >= 1, 'no message');
  }, on);

  await check('server keeps serving after a cancel', async () => {
    const r = expectOk(await unary(c, idsReq, { timeoutMs: 60000 }), 'Generate after cancel');
    checkComplete(r, idsReq, 'after cancel');
  }, on);

  await check('50 ms deadline on a long unary request gives DEADLINE_EXCEEDED', async () => {
    const r = await unary(c, longReq, { timeoutMs: 50 });
    assert.ok(r.err, 'finished within 50 ms');
    assert.strictEqual(codeName(r.err.code), 'DEADLINE_EXCEEDED');
  }, on);

  await check('50 ms deadline on a long stream gives DEADLINE_EXCEEDED', async () => {
    const r = await stream(c, longReq, { timeoutMs: 50 });
    assert.ok(r.err, 'finished within 50 ms');
    assert.strictEqual(codeName(r.err.code), 'DEADLINE_EXCEEDED');
  }, on);

  await check('server keeps serving after deadlines', async () => {
    const r = expectOk(await unary(c, idsReq, { timeoutMs: 60000 }), 'Generate after deadlines');
    checkComplete(r, idsReq, 'after deadlines');
  }, on);

  const ctx = opt.contextLen;
  const bad = [
    ['empty prompt', { max_new_tokens: 4 }, Code.INVALID_ARGUMENT],
    ['both prompt and prompt_token_ids', { prompt: 'hi', prompt_token_ids: [1, 2], max_new_tokens: 4 }, Code.INVALID_ARGUMENT],
    ['token id out of range (2^30)', { prompt_token_ids: [1, 1 << 30], max_new_tokens: 4 }, Code.INVALID_ARGUMENT],
    ['negative token id', { prompt_token_ids: [1, -5], max_new_tokens: 4 }, Code.INVALID_ARGUMENT],
    [`prompt + max_new_tokens over the context (${ctx})`,
      { prompt_token_ids: PROMPT_IDS, max_new_tokens: ctx - PROMPT_IDS.length + 1 }, Code.INVALID_ARGUMENT],
    [`prompt longer than the context (${ctx + 8} ids)`,
      { prompt_token_ids: Array.from({ length: ctx + 8 }, (_, i) => 1 + (i % 50)), max_new_tokens: 1 }, Code.INVALID_ARGUMENT],
    ['NaN temperature', { prompt_token_ids: PROMPT_IDS, max_new_tokens: 4, temperature: NaN }, Code.INVALID_ARGUMENT],
    ['negative top_p', { prompt_token_ids: PROMPT_IDS, max_new_tokens: 4, top_p: -0.5 }, Code.INVALID_ARGUMENT],
    ['top_p > 1', { prompt_token_ids: PROMPT_IDS, max_new_tokens: 4, top_p: 1.5 }, Code.INVALID_ARGUMENT],
    ['unknown adapter', { prompt_token_ids: PROMPT_IDS, max_new_tokens: 4, adapter: 'no-such-adapter-e2e' }, Code.NOT_FOUND],
    ['oversized message (5 MiB prompt)', { prompt: 'a'.repeat(5 << 20), max_new_tokens: 4 }, Code.RESOURCE_EXHAUSTED],
  ];
  for (const [what, req, code] of bad) {
    await check(`unary: ${what} gives ${codeName(code)} with a message`, async () => {
      expectCode(await unary(c, req, { timeoutMs: 30000 }), code, what);
    }, on);
  }
  for (const [what, req, code] of bad.filter((b) => ['empty prompt', 'unknown adapter', 'top_p > 1'].includes(b[0]))) {
    await check(`stream: ${what} gives ${codeName(code)} with a message`, async () => {
      const r = await stream(c, req, { timeoutMs: 30000 });
      assert.strictEqual(r.msgs.length, 0, 'messages before the error');
      expectCode(r, code, what);
    }, on);
  }

  for (const method of ['/loraserve.v1.Generation/NoSuchMethod', '/loraserve.v1.NoSuchService/Generate']) {
    await check(`unknown method ${method} gives UNIMPLEMENTED`, async () => {
      const r = await new Promise((resolve) => {
        c.makeUnaryRequest(method, (b) => b, (b) => b, Buffer.alloc(0), { deadline: deadlineIn(30000) },
          (err, res) => resolve({ err, res }));
      });
      assert.ok(r.err, 'unknown method answered OK');
      assert.strictEqual(codeName(r.err.code), 'UNIMPLEMENTED');
    }, on);
  }

  await check('still serving after the bad requests (health and a Generate)', async () => {
    assert.strictEqual(expectOk(await healthCheck(srv.health, ''), 'Check').status, 'SERVING');
    checkComplete(expectOk(await unary(c, idsReq), 'Generate'), idsReq, 'after bad input');
  }, on);

  srv.close();
  await check('idle graceful stop: SIGTERM to rank 0, mpirun exits 0', async () => {
    const x = await srv.stop(60000);
    assert.strictEqual(x.desc, 'status 0');
  });
  return srv;
}

// ---------------------------------------------------------------------------------------------------
// Phase queue: admission control

async function phaseQueue() {
  const maxWaiting = 4, maxBatch = 2, N = 40;
  const srv = await startServer('queue', ['--max-waiting', String(maxWaiting), '--max-batch', String(maxBatch)]);
  if (!srv) return;
  const on = { srv };
  const req = (i) => ({ request_id: `q${i}`, prompt_token_ids: PROMPT_IDS, max_new_tokens: 200, ignore_eos: true,
    temperature: 0.8, seed: String(i + 1) });
  let results = null;
  await check(`${N} concurrent long requests all end (OK or RESOURCE_EXHAUSTED only)`, async () => {
    const clients = [0, 1, 2, 3].map(() => srv.client(true));
    results = await Promise.all(Array.from({ length: N }, (_, i) => unary(clients[i % clients.length], req(i), { timeoutMs: 600000 })));
    const other = results.map((r, i) => r.err && r.err.code !== Code.RESOURCE_EXHAUSTED && `q${i}: ${codeName(r.err.code)} ${r.err.details}`)
      .filter(Boolean);
    assert.deepStrictEqual(other, [], 'unexpected statuses');
  }, { ...on, timeoutMs: 600000 });

  const refused = () => results.filter((r) => r.err);
  const done = () => results.filter((r) => !r.err);
  await check('some are refused with RESOURCE_EXHAUSTED and a message', () => {
    assert.ok(results, 'no results');
    assert.ok(refused().length >= 1, 'none refused');
    for (const r of refused()) assert.ok(r.err.details, 'refusal without a message');
  }, on);

  await check(`at least --max-waiting (${maxWaiting}) complete, each in full`, () => {
    assert.ok(results, 'no results');
    assert.ok(done().length >= maxWaiting, `${done().length} completed`);
    for (const r of done()) checkComplete(r.res, req(0), r.res.request_id);
  }, on);

  await check('refusals come at once, not after queueing (each before the last completion)', () => {
    assert.ok(results, 'no results');
    const lastDone = Math.max(...done().map((r) => r.ms));
    const late = refused().filter((r) => r.ms >= lastDone).map((r) => r.ms);
    assert.deepStrictEqual(late, [], `refusals after the last completion at ${lastDone} ms`);
  }, on);

  await check('serves a new request after the burst', async () => {
    const r = expectOk(await unary(srv.client(), { prompt_token_ids: PROMPT_IDS, max_new_tokens: 4, ignore_eos: true }), 'Generate');
    assert.strictEqual(r.token_ids.length, 4);
  }, on);

  srv.close();
  await check('graceful stop: SIGTERM to rank 0, mpirun exits 0', async () => {
    assert.strictEqual((await srv.stop(60000)).desc, 'status 0');
  });
}

// ---------------------------------------------------------------------------------------------------
// Phase shutdown: SIGTERM with calls in flight

async function phaseShutdown() {
  const graceS = 5;
  const srv = await startServer('shutdown', ['--shutdown-grace-s', String(graceS)]);
  if (!srv) return;
  const c = srv.client();
  const N = 8;
  const req = (i) => ({ request_id: `d${i}`, prompt_token_ids: PROMPT_IDS, max_new_tokens: opt.contextLen - PROMPT_IDS.length - 16,
    ignore_eos: true, temperature: 0.5, seed: String(i + 1) });
  let pending = null, results = null, t0 = 0, exitInfo = null;

  await check(`${N} long streams are running`, async () => {
    let started = 0;
    let allStarted;
    const gate = new Promise((r) => { allStarted = r; });
    pending = Array.from({ length: N }, (_, i) => stream(c, req(i), {
      timeoutMs: 300000,
      onData: (m, call, msgs) => { if (msgs.length === 1 && ++started === N) allStarted(); },
    }));
    await Promise.race([gate, Promise.all(pending).then(() => { throw new Error('streams ended before SIGTERM'); })]);
  }, { srv, timeoutMs: 120000 });
  if (!pending) return;

  await check('SIGTERM to rank 0 only', () => {
    t0 = Date.now();
    process.kill(srv.pid, 'SIGTERM');
  });

  await check('a new call after SIGTERM gets UNAVAILABLE', async () => {
    await sleep(300);
    const r = await unary(srv.client(true), { prompt_token_ids: PROMPT_IDS, max_new_tokens: 2 }, { timeoutMs: 30000 });
    assert.ok(r.err, 'a new call was served during shutdown');
    assert.strictEqual(codeName(r.err.code), 'UNAVAILABLE');
  });

  await check('in-flight streams end with UNAVAILABLE, or OK and complete', async () => {
    results = await withTimeout(Promise.all(pending), (graceS + 60) * 1000, 'streams after SIGTERM');
    const bad = [];
    results.forEach((r, i) => {
      if (r.err) {
        if (r.err.code !== Code.UNAVAILABLE) bad.push(`d${i}: ${codeName(r.err.code)} ${r.err.details}`);
      } else {
        const m = mergeStream(r.msgs);
        if (m.finish_reason !== 'FINISH_REASON_LENGTH' || m.token_ids.length !== req(i).max_new_tokens) {
          bad.push(`d${i}: OK but ${m.token_ids.length} tokens, ${m.finish_reason}`);
        }
      }
    });
    assert.deepStrictEqual(bad, []);
    diag(`${results.filter((r) => r.err).length} UNAVAILABLE, ${results.filter((r) => !r.err).length} complete`);
  }, { timeoutMs: (graceS + 90) * 1000 });

  await check(`mpirun exits 0 within the grace period (${graceS} s + 30 s)`, async () => {
    try {
      exitInfo = await withTimeout(srv.exited, Math.max(1000, t0 + (graceS + 30) * 1000 - Date.now()), 'mpirun exit');
    } catch (e) {
      srv.kill();
      throw e;
    }
    assert.strictEqual(exitInfo.desc, 'status 0');
    diag(`mpirun exited ${((Date.now() - t0) / 1000).toFixed(1)} s after SIGTERM`);
  });
  srv.close();
}

// ---------------------------------------------------------------------------------------------------

function cleanupAll(showLogs) {
  for (const s of [...servers]) {
    if (showLogs) s.dumpLog();
    s.cleanup();
  }
}

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(sig, () => {
    console.log(`Bail out! e2e test interrupted by ${sig}`);
    for (const s of allServers) s.dumpLog();
    cleanupAll(false);
    process.exit(1);
  });
}
process.on('exit', () => { for (const s of allServers) s.kill(); });

async function main() {
  const phases = { api: phaseApi, queue: phaseQueue, shutdown: phaseShutdown };
  const run = phases[opt.phase];
  if (!run) throw new Error(`unknown phase ${opt.phase} (api, queue, shutdown)`);
  if (!fs.existsSync(opt.bin)) throw new Error(`no server binary at ${opt.bin}`);
  diag(`phase ${opt.phase}: ${opt.bin}`);
  try {
    await run();
  } catch (e) {
    await check(`phase ${opt.phase} ran to its end`, () => { throw e; });
  }
  if (failures) for (const s of allServers) s.dumpLog();
  cleanupAll(false);
  for (const s of allServers) {
    try { fs.rmSync(s.tmp, { recursive: true, force: true }); } catch (e) { /* best effort */ }
  }
  console.log(`1..${testNo}`);
}

main().then(() => process.exit(0), (e) => {
  console.log(`not ok ${++testNo} - e2e driver`);
  diag(e.stack || e);
  console.log(`1..${testNo}`);
  cleanupAll(true);
  process.exit(0);
});
