// Writes corpus.jsonl: the strings the C tokenizer must encode and decode exactly as the Hugging Face
// library does. Deterministic (seeded PRNG), so the committed corpus can be regenerated bit for bit:
//   node tests/tokenizer/gen_corpus.mjs > tests/tokenizer/corpus.jsonl
// A different seed gives a fresh corpus of the same shape, for ad-hoc fuzzing against the oracle:
//   node tests/tokenizer/gen_corpus.mjs 7 > /tmp/fuzz.jsonl
//   build/tests/tokenizer/test_tokenizer_oracle qwen3 <dir> /tmp/fuzz.jsonl tests/tokenizer/gen_reference.mjs
// The categories are the ways tokenizers differ in practice: scripts and Unicode classes the split regex
// reads (\p{L}, \p{N}, \s), byte fallback (emoji, rare CJK), normalization (NFC), whitespace runs,
// digits, code, control characters, words long enough to stress merging, and text that looks like
// special tokens (which user text must never turn into).

let seed = Number(process.argv[2] ?? 0x5eed1234) | 0;
function rnd() { // mulberry32
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const ri = (n) => Math.floor(rnd() * n);
const pick = (a) => a[ri(a.length)];
const cp = (c) => String.fromCodePoint(c);
const rangeChar = ([a, b]) => cp(a + ri(b - a + 1));

const words = `the of and to in is was he for it with as his on be at by had are but from or have an they which
one you were her all she there would their we him been has when who will more no if out so said what up its
about into than them can only other new some could time these two may then do first any my now such like our
over man me even most made after also did many before must through back years where much your way well down
should because each just those people how too little state good very make world still own see men work long
get here between both life being under never day same another know while last might us great old year off
come since against go came right used take three server model token adapter request batch kernel memory`.split(/\s+/);

const phrases = {
  ru: ['Привет, мир', 'Как дела?', 'Москва — столица России', 'ёлка и Ёж', 'съешь же ещё этих мягких булок'],
  el: ['Γειά σου κόσμε', 'Καλημέρα', 'ΑΘΗΝΑ και Θεσσαλονίκη', 'ς σ Σ'],
  ar: ['مرحبا بالعالم', 'كيف حالك؟', 'اللغة العربية جميلة', 'السلام عليكم'],
  he: ['שלום עולם', 'מה שלומך?', 'עברית'],
  hi: ['नमस्ते दुनिया', 'आप कैसे हैं?', 'हिन्दी भाषा', 'क्षत्रिय'],
  th: ['สวัสดีชาวโลก', 'ภาษาไทย', 'ขอบคุณครับ'],
  ko: ['안녕하세요 세계', '한국어는 재미있어요', '감사합니다'],
  ja: ['こんにちは世界', '日本語のテキスト', 'カタカナとひらがな', '東京都渋谷区', 'ｶﾀｶﾅ半角'],
  zh: ['你好，世界', '我们今天去北京。', '机器学习模型', '繁體中文測試', '「引号」和《书名号》'],
  vi: ['Xin chào thế giới', 'Tiếng Việt có dấu', 'Nguyễn Văn Ánh'],
  tr: ['İstanbul ışık', 'Çok güzel', 'ĞÜŞİÖÇ ğüşıöç'],
  de: ['Grüße aus München', 'Straße', 'ÄÖÜ äöü ß ẞ'],
  fr: ['Ça va très bien', 'Œuvre cœur', 'à l’été'],
  misc: ['Ελληνικά and English', 'ქართული ენა', 'Հայերեն', 'አማርኛ', 'ᚠᚢᚦᚨᚱᚲ', 'ꦗꦮ', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢', '𝐁𝐨𝐥𝐝'],
};
const allPhrases = Object.values(phrases).flat();

const emoji = ['😀', '😂', '🥲', '👍', '👍🏽', '❤️', '❤', '🔥', '🎉', '🤖', '🧠', '🦀', '🐍', '🌍', '🇺🇸', '🇯🇵',
  '🇩🇪', '👨‍👩‍👧‍👦', '👩🏾‍💻', '🏳️‍🌈', '🧑‍🤝‍🧑', '1️⃣', '#️⃣', '✌🏻', '🙏', '💯', '☕', '⚡', '™', '©', '®', '🫠',
  '👁️‍🗨️', '🤷‍♂️', '🧔🏻‍♀️', '😶‍🌫️'];

const specials = ['<s>', '</s>', '<unk>', '<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>',
  '<|start_header_id|>', '<|end_header_id|>', '<|reserved_special_token_0|>', '<|reserved_special_token_250|>',
  '<|python_tag|>', '<|finetune_right_pad_id|>', '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|fim_prefix|>',
  '<|fim_pad|>', '<|vision_start|>', '<|box_end|>', '<think>', '</think>', '<tool_call>', '</tool_call>',
  '<tool_response>', '<|file_sep|>', '[INST]', '[/INST]', '<<SYS>>', '<0x41>', '<0x0A>', '<0xFF>', '▁', '▁▁hello',
  'Ġhello', 'Ċ', '<|', '|>', '<|eot_id', 'eot_id|>', '<|im_end', '</s', '<s', '<|begin_of_text|', '<||>',
  '<｜begin▁of▁sentence｜>', '<｜end▁of▁sentence｜>', '<｜fim▁hole｜>', '<｜User｜>', '<｜Assistant｜>', '<bos>', '<eos>',
  '<start_of_turn>', '<end_of_turn>', '<mask>', '<unused0>', '<unused99>', '<image_soft_token>', '<pad>'];

const codeSnippets = [
  'int main(int argc, char **argv) {\n    printf("%d\\n", argc);\n    return 0;\n}\n',
  'def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n',
  'const xs = [1, 2, 3].map((x) => x * 2);\nconsole.log(`got ${xs.length}`);\n',
  '{"name": "loraserve", "version": "0.1.0", "tags": ["a", "b"], "n": null, "ok": true}',
  '<div class="row"><span id=\'x\'>Hello &amp; bye</span></div>',
  'SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC LIMIT 10;',
  'for f in *.txt; do\n\techo "$f" | tr a-z A-Z >> out.log 2>&1\ndone',
  '#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))\n',
  'fn main() -> Result<(), Box<dyn Error>> {\n    let v: Vec<u8> = vec![0xff; 16];\n    Ok(())\n}',
  '    if (x != NULL && *x == \'\\0\') { x++; }\r\n',
  '^(?:[a-z0-9!#$%&\'*+/=?^_`{|}~-]+)@example\\.com$',
  'a_b_c = __init__.__dict__["__name__"]  # dunder',
  'matrix[i][j] += alpha * A[i][k] * B[k][j];',
  '$ git commit -m "fix: handle \\"quotes\\"" && git push origin main',
  'x = {"k": [1.5e-10, -2E+3, 0x1F, 0b1010, 0o777]}',
  '\t\t\treturn;\n\t\t}\n\t}\n}',
  '// TODO(#123): don\'t forget\n/* block */ /** doc */',
  '<?xml version="1.0" encoding="UTF-8"?>\n<root attr="v"/>',
];

const wsPieces = [' ', '  ', '   ', '    ', '        ', '\t', '\t\t', '\n', '\n\n', '\n\n\n', '\r\n', '\r',
  '\v', '\f', '\u00a0', '\u3000', '\u2028', '\u2029', '\u0085', '\u200b', '\u2003', '\u202f', '\u205f',
  '\u1680', ' \n ', '\t \n', '\n \t  \n'];

const ctrl = () => cp(pick([ri(32), 0x7f, 0x80 + ri(32), 0x200b, 0x200c, 0x200d, 0x200e, 0x200f, 0xfeff,
  0x2060, 0x061c, 0x00ad, 0xfe0f, 0x034f]));
const combining = ['e\u0301', 'a\u0308', 'n\u0303', 'o\u0302\u0323', '\u1100\u1161\u11a8', 'A\u030a', '\u212b',
  '\u2126', 'ﬁ', 'ﬀ', '①', '㎏', 'ｶﾞ', 'Å', 'é', 'ñ', 'q\u0307\u0323', '\u0915\u093c', 'ǅ'];

const unicodeRanges = [[0xa1, 0x24f], [0x370, 0x3ff], [0x400, 0x4ff], [0x531, 0x556], [0x5d0, 0x5ea],
  [0x620, 0x64a], [0x660, 0x669], [0x905, 0x939], [0x966, 0x96f], [0xe01, 0xe30], [0x10a0, 0x10c5],
  [0x1100, 0x1112], [0x2010, 0x2027], [0x2030, 0x205e], [0x20a0, 0x20bf], [0x2100, 0x214f], [0x2150, 0x2188],
  [0x2190, 0x21ff], [0x2200, 0x22ff], [0x2500, 0x257f], [0x2600, 0x26ff], [0x3041, 0x3096], [0x30a1, 0x30fa],
  [0x4e00, 0x9fff], [0xac00, 0xd7a3], [0xff01, 0xff5e], [0x1f300, 0x1f5ff], [0x1f600, 0x1f64f],
  [0x1f900, 0x1f9ff], [0x20000, 0x2a6df], [0x1d400, 0x1d4ff], [0x10000, 0x1004d]];

const num = () => {
  const k = ri(9);
  if (k === 0) return String(ri(10));
  if (k === 1) return String(ri(1e6));
  if (k === 2) return Array.from({ length: 5 + ri(40) }, () => ri(10)).join('');
  if (k === 3) return (rnd() * 1e4).toFixed(ri(6));
  if (k === 4) return (ri(2) ? '-' : '') + ri(1e9).toLocaleString('en-US');
  if (k === 5) return `${1900 + ri(200)}-${1 + ri(12)}-${1 + ri(28)}`;
  if (k === 6) return `+1 (${100 + ri(900)}) ${100 + ri(900)}-${1000 + ri(9000)}`;
  if (k === 7) return pick(['٣٤٥', '१२३', '１２３', '²³', '½', 'Ⅻ', '⅔', '੫', '໑໒', '𝟘𝟙', '①②', '0x' + ri(1e8).toString(16)]);
  return `${ri(100)}.${ri(100)}.${ri(100)}.${ri(256)}`;
};

const sentence = () => {
  const n = 3 + ri(14);
  const w = Array.from({ length: n }, () => pick(words));
  if (ri(2)) w[0] = w[0][0].toUpperCase() + w[0].slice(1);
  if (ri(4) === 0) w[ri(n)] = w[ri(n)].toUpperCase();
  return w.join(' ') + pick(['.', '!', '?', ',', '', '...', ';', ':']);
};
const contraction = () => pick(["I'm", "you're", "they've", "we'll", "he'd", "it's", "don't", "CAN'T", "She'S",
  "they'RE", "we'VE", "I'D", "'s", "'t", "'ll", "'ſ", "'ſs", "o'clock", "rock'n'roll", "'quoted'", "''", "'",
  "Bob's", "dogs'", "’s", "it’s"]);
const randUnicode = (n) => Array.from({ length: n }, () => rangeChar(pick(unicodeRanges))).join('');
const longWord = () => {
  const n = 50 + ri(3000);
  const k = ri(10);
  if (k === 0) return 'a'.repeat(n);
  if (k === 1) return '_'.repeat(n);
  if (k === 2) return Array.from({ length: n }, () => String.fromCharCode(97 + ri(26))).join('');
  if (k === 3) return 'ab'.repeat(n >> 1);
  if (k === 4) return Array.from({ length: n >> 2 }, () => pick(emoji)).join('');
  if (k === 5) return randUnicode(n >> 3).replace(/\s/g, '');
  if (k === 6) return Array.from({ length: n }, () => String(ri(10))).join('');
  if (k === 7) return Buffer.from(Array.from({ length: n }, () => ri(256))).toString('base64');
  if (k === 8) return 'https://example.com/' + Array.from({ length: n >> 3 }, () => pick(words)).join('/') + '?q=1&x=%20';
  return '漢'.repeat(n >> 2);
};
const mixed = () => {
  const parts = [];
  const n = 2 + ri(8);
  for (let i = 0; i < n; i++) {
    const k = ri(12);
    if (k === 0) parts.push(sentence());
    else if (k === 1) parts.push(pick(allPhrases));
    else if (k === 2) parts.push(pick(emoji));
    else if (k === 3) parts.push(pick(wsPieces));
    else if (k === 4) parts.push(num());
    else if (k === 5) parts.push(pick(specials));
    else if (k === 6) parts.push(contraction());
    else if (k === 7) parts.push(ctrl());
    else if (k === 8) parts.push(pick(combining));
    else if (k === 9) parts.push(randUnicode(1 + ri(6)));
    else if (k === 10) parts.push(pick(codeSnippets).slice(0, 1 + ri(40)));
    else parts.push(pick(words));
  }
  return parts.join(ri(3) ? ' ' : '');
};

const out = [];
const add = (category, s, n) => { for (let i = 0; i < n; i++) out.push([category, typeof s === 'function' ? s() : s]); };

// Edges first: the empty string, single characters, lone whitespace.
for (const s of ['', ' ', '  ', '\n', '\t', 'a', 'A', '0', '.', "'", "'s", 's', '▁', ' a', 'a ', ' a ', 'Hello',
  ' Hello', 'Hello world', 'hello  world', '\u0000', '\u0000a\u0000', '\u00a0', '\ufeffBOM',
  // for the added_flags variant (make_variant.mjs): single_word, lstrip/rstrip, normalized tokens
  'say hello, world!', 'xhello helloy hello', 'a <lst> b', 'a   <lst>b', 'a <rst>   b', '  <both>  x',
  'ab abc cab ab.', 'WORLD world Ｗｏｒｌｄ', 'a  b   c    ', '<sp> x  <sp>y', 'helloworld', 'ﬁ ① ㎏ hello',
  'a\t<lst>\n b', '<lst><rst><both>', '   ', 'x <sp>'])
  out.push(['edge', s]);
add('english', sentence, 250);
add('english', () => Array.from({ length: 2 + ri(5) }, sentence).join(pick([' ', '\n', '\n\n', '  '])), 100);
add('contraction', () => `${sentence()} ${contraction()} ${contraction()} ${pick(words)}`, 80);
add('scripts', () => pick(allPhrases), 120);
add('scripts', () => `${pick(allPhrases)} ${sentence()} ${pick(allPhrases)}`, 150);
add('cjk', () => pick([...phrases.zh, ...phrases.ja, ...phrases.ko]) + pick(['', '。', '！', ' ', '\n']) +
  randUnicode(1 + ri(10)).replace(/[^\u3041-\u30fa\u4e00-\u9fff\uac00-\ud7a3\u{20000}-\u{2a6df}]/gu, ''), 150);
add('emoji', () => Array.from({ length: 1 + ri(8) }, () => pick(emoji)).join(pick(['', ' ', '\n'])), 120);
add('emoji', () => `${sentence()} ${pick(emoji)}${pick(emoji)} ${pick(allPhrases)}`, 80);
add('whitespace', () => Array.from({ length: 1 + ri(6) }, () => (ri(2) ? pick(wsPieces) : pick(words))).join(''), 150);
add('whitespace', () => pick(wsPieces).repeat(1 + ri(20)), 40);
add('digits', () => Array.from({ length: 1 + ri(4) }, num).join(pick([' ', ', ', '', '\n', 'x'])), 170);
add('code', () => pick(codeSnippets), 60);
add('code', () => Array.from({ length: 2 + ri(3) }, () => pick(codeSnippets)).join('\n'), 140);
add('control', () => Array.from({ length: 1 + ri(8) }, () => (ri(2) ? ctrl() : pick(words))).join(''), 80);
add('normalization', () => Array.from({ length: 1 + ri(6) }, () => (ri(2) ? pick(combining) : pick(words))).join(pick(['', ' '])), 60);
add('long', longWord, 70);
add('specials', () => pick(specials), 60);
add('specials', () => Array.from({ length: 1 + ri(5) }, () => (ri(2) ? pick(specials) : pick(words))).join(pick(['', ' ', '\n'])), 200);
add('specials', () => `<|im_start|>user\n${sentence()}<|im_end|>\n<|im_start|>assistant\n`, 20);
add('specials', () => `<|start_header_id|>user<|end_header_id|>\n\n${sentence()}<|eot_id|>`, 20);
add('specials', () => `<s>[INST] ${sentence()} [/INST] ${sentence()}</s>`, 20);
add('unicode', () => randUnicode(1 + ri(40)), 250);
add('mixed', mixed, 300);

process.stdout.write(out.map(([c, s]) => JSON.stringify({ c, s })).join('\n') + '\n');
