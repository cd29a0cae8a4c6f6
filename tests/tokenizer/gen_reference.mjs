// The oracle: runs the real Hugging Face tokenizers library (Rust, through its Node binding) over the
// corpus and writes, per corpus line, the ids and texts the C tokenizer must reproduce exactly:
//   ids  encode(s, add_special_tokens=False) with special-token matching OFF (user text)
//   bos  the same with add_special_tokens=True, as transformers adds bos/eos: the post-processor's
//        template, except for the Llama/Gemma tokenizer classes, whose fast tokenizers rebuild that
//        template from tokenizer_config.json's add_bos_token/add_eos_token (DeepSeek V3 relies on it)
//   tpl  encode(s, add_special_tokens=False) with special tokens matched (the server's own template)
//   dec  decode(ids, skip_special_tokens=True);  dtpl  decode(tpl, skip_special_tokens=True)
// Usage: node gen_reference.mjs <dir with tokenizer.json> <corpus.jsonl> <out.jsonl>
//
// Special-token matching off is the library's encode_special_tokens=True (transformers:
// split_special_tokens=True): special added tokens are skipped by the matcher and their text goes
// through the model. The Node binding does not expose that flag, so the "user" tokenizer is loaded from
// a copy of tokenizer.json whose special added tokens are renamed to text no corpus line contains
// (private-use characters). The ids of every token that can appear are unchanged (added tokens keep
// their list order), non-special added tokens still match, and the model sees the special token's
// characters as plain text: the same result.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(join(dirname(fileURLToPath(import.meta.url)), 'package.json'));
const { Tokenizer } = require('@anush008/tokenizers');

const [dir, corpusPath, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error('usage: node gen_reference.mjs <tokenizer dir> <corpus.jsonl> <out.jsonl>');
  process.exit(2);
}
const text = readFileSync(join(dir, 'tokenizer.json'), 'utf8');
const full = Tokenizer.fromString(text);
const spec = JSON.parse(text);
// A special token the model vocab also holds is dropped instead: it keeps the vocab's id either way,
// and renaming it would make the library number it anew, shifting every later added token.
const inVocab = (t) => Object.hasOwn(spec.model?.vocab ?? {}, t.content);
spec.added_tokens = (spec.added_tokens ?? []).filter((t) => !(t.special && inVocab(t)));
for (const t of spec.added_tokens) if (t.special) t.content = `\ue000special ${t.id}\ue001`;
const user = Tokenizer.fromString(JSON.stringify(spec));

const cfgPath = join(dir, 'tokenizer_config.json');
const cfg = existsSync(cfgPath) ? JSON.parse(readFileSync(cfgPath, 'utf8')) : {};
const content = (t) => (typeof t === 'object' && t !== null ? t.content : t);
const fromConfig = /^(Llama|CodeLlama|Gemma)Tokenizer(Fast)?$/.test(cfg.tokenizer_class ?? '');
const around = (ids) => [
  ...((cfg.add_bos_token ?? true) ? [full.tokenToId(content(cfg.bos_token))] : []),
  ...ids,
  ...(cfg.add_eos_token ? [full.tokenToId(content(cfg.eos_token))] : []),
];

const lines = readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l.length);
const out = [];
for (const line of lines) {
  const { s } = JSON.parse(line);
  const ids = (await user.encode(s, null, { addSpecialTokens: false })).getIds();
  const bos = fromConfig ? around(ids) : (await user.encode(s, null, { addSpecialTokens: true })).getIds();
  const tpl = (await full.encode(s, null, { addSpecialTokens: false })).getIds();
  const dec = await full.decode(ids, true);
  const dtpl = await full.decode(tpl, true);
  out.push(JSON.stringify({ ids, bos, tpl, dec, dtpl }));
}
writeFileSync(outPath, out.join('\n') + '\n');
