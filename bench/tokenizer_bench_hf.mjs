// The Hugging Face side of bench/tokenizer_bench: the real tokenizers library (Rust, Node binding)
// timed on the same corpus and the same 1 MB words as the C tokenizer. Writes one JSON object.
// Usage: node tokenizer_bench_hf.mjs <tokenizer dir> <corpus.jsonl> <seconds> <out.json>
//   encode_mb_s        one encode() per string, awaited in turn: one string at a time, like the C loop
//                      (includes the binding's per-call cost: a promise and a thread-pool hop)
//   batch_encode_mb_s  encodeBatch() over the whole corpus: the library's own parallel path, all cores
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', 'tests', 'tokenizer', 'package.json'));
const { Tokenizer } = require('@anush008/tokenizers');

const [dir, corpusPath, secondsArg, outPath] = process.argv.slice(2);
const seconds = Number(secondsArg);
const tok = Tokenizer.fromFile(join(dir, 'tokenizer.json'));
const corpus = readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l).map((l) => JSON.parse(l).s);
const bytes = corpus.reduce((n, s) => n + Buffer.byteLength(s), 0);
const opts = { addSpecialTokens: false };
const now = () => Number(process.hrtime.bigint()) / 1e9;

async function timed(fn) {
  let reps = 0;
  const t0 = now();
  do { await fn(); reps++; } while (now() - t0 < seconds);
  return { reps, elapsed: now() - t0 };
}

let tokens = 0;
const seq = await timed(async () => {
  tokens = 0;
  for (const s of corpus) tokens += (await tok.encode(s, null, opts)).getLength();
});
const batch = await timed(async () => { await tok.encodeBatch(corpus, opts); });

const words = {};
let r = 1;
const rand = () => { r = (Math.imul(r, 1103515245) + 12345) >>> 0; return String.fromCharCode(97 + ((r >>> 16) % 26)); };
for (const [name, word] of [['a', 'a'.repeat(1 << 20)], ['random_letters', Array.from({ length: 1 << 20 }, rand).join('')]]) {
  const t0 = now();
  await tok.encode(word, null, opts);
  words[name] = now() - t0;
}

writeFileSync(outPath, JSON.stringify({
  library: 'Hugging Face tokenizers (Rust) via @anush008/tokenizers Node binding',
  encode_mb_s: (bytes * seq.reps) / seq.elapsed / 1e6,
  tokens_per_s: (tokens * seq.reps) / seq.elapsed,
  batch_encode_mb_s: (bytes * batch.reps) / batch.elapsed / 1e6,
  word_1mb_s: words,
}));
