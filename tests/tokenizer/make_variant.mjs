// Writes a variant of a real tokenizer.json, for pipeline features that the shipped tokenizers do not
// use but that served models do: the newer SentencePiece conversion (a Metaspace pre-tokenizer instead
// of the Prepend/Replace normalizer, as in Mistral v0.3 and recent Llama 2 exports), the Metaspace
// decoder, and added tokens with single_word/lstrip/rstrip/normalized flags under NFKC, Replace(Regex)
// and Strip normalizers. The oracle test then holds the C tokenizer to the library on the variant.
// Usage: node make_variant.mjs <variant> <demo tokenizer dir> <out dir>
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [variant, demoDir, outDir] = process.argv.slice(2);
const here = dirname(fileURLToPath(import.meta.url));
const mistral = join(here, 'node_modules', '@lenml', 'tokenizer-llama2', 'models');
const read = (dir, name) => JSON.parse(readFileSync(join(dir, name), 'utf8'));
const metaspace = (split) => ({ type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split });

let t;
let cfg;
if (variant === 'sp_metaspace' || variant === 'sp_metaspace_split') {
  t = read(mistral, 'tokenizer.json');
  cfg = read(mistral, 'tokenizer_config.json');
  t.normalizer = null;
  t.pre_tokenizer = metaspace(variant === 'sp_metaspace_split');
  if (variant === 'sp_metaspace_split') {
    t.decoder = { type: 'Sequence', decoders: [{ type: 'ByteFallback' }, metaspace(true)] };
  }
} else if (variant === 'added_flags') {
  t = read(demoDir, 'tokenizer.json');
  cfg = read(demoDir, 'tokenizer_config.json');
  let id = Math.max(...t.added_tokens.map((a) => a.id)) + 1;
  const add = (content, flags) => t.added_tokens.push({
    id: id++, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false, ...flags,
  });
  add('hello', { single_word: true });
  add('<lst>', { lstrip: true });
  add('<rst>', { rstrip: true });
  add('<both>', { lstrip: true, rstrip: true });
  add('world', { normalized: true });
  add('ab', { single_word: true, normalized: true });
  add('<sp>', { special: true, lstrip: true });
  t.normalizer = { type: 'Sequence', normalizers: [
    { type: 'NFKC' },
    { type: 'Replace', pattern: { Regex: ' {2,}' }, content: ' ' },
    { type: 'Strip', strip_left: false, strip_right: true },
  ] };
} else {
  console.error(`unknown variant ${variant}`);
  process.exit(2);
}
writeFileSync(join(outDir, 'tokenizer.json'), JSON.stringify(t));
writeFileSync(join(outDir, 'tokenizer_config.json'), JSON.stringify(cfg));
