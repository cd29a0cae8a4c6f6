/* Internals shared by the tokenizer's translation units, kept out of tokenizer.h so that the public
 * contract stays small. The split follows the Hugging Face pipeline, one concept per file:
 *   tokenizer.c        loading tokenizer.json / tokenizer_config.json, added tokens, the encode driver
 *   tokenizer_pretok.c normalizers and pre-tokenizers (ICU for NFC)
 *   tokenizer_regex.c  the split regexes: Oniguruma syntax as tokenizer.json writes it, run with PCRE2
 *   tokenizer_bpe.c    the BPE model: vocab, merges by rank with a heap, byte fallback, byte-level alphabet
 *   detok.c            decoders, decode and streaming (one engine, so both always agree)
 *   tokenizer_util.c   the string map, byte buffers, piece lists and UTF-8 helpers they all use */
#ifndef LORASERVE_COORDINATOR_TOKENIZER_IMPL_H
#define LORASERVE_COORDINATOR_TOKENIZER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/json.h"
#include "coordinator/tokenizer.h"

/* ---- tokenizer_util.c ---------------------------------------------------------------------------- */

typedef struct tok_buf {
    char *p;                // owned; not NUL-terminated unless tok_buf_cstr was called
    size_t n, cap;          // bytes used / allocated
} tok_buf;
void tok_buf_put(tok_buf *b, const void *s, size_t n);
void tok_buf_putc(tok_buf *b, char c);
char *tok_buf_cstr(tok_buf *b);     // NUL-terminates (not counted in n) and returns b->p
void tok_buf_free(tok_buf *b);

typedef struct tok_ids {
    int32_t *v;             // owned
    size_t n, cap;
} tok_ids;
void tok_ids_push(tok_ids *a, int32_t id);

/* String -> id map with open addressing; keys are copied into one arena, so a 150k-entry vocab is two
 * allocations. Not thread-safe for writes; lookups on a built map are. */
typedef struct tok_map_entry {
    size_t off;             // key offset in keys
    uint32_t len;           // key bytes
    uint32_t hash;
    int32_t val;
} tok_map_entry;
typedef struct tok_map {
    tok_map_entry *e;       // owned, n used
    size_t n, cap;
    uint32_t *slot;         // owned; entry index + 1, 0 = empty; size mask + 1
    size_t mask;
    tok_buf keys;
} tok_map;
void tok_map_put(tok_map *m, const char *k, size_t n, int32_t val);   // replaces an existing value
int32_t tok_map_get(const tok_map *m, const char *k, size_t n);       // -1 when absent
const char *tok_map_key(const tok_map *m, size_t i, size_t *len);     // i-th inserted key
void tok_map_free(tok_map *m);

/* Offset of the first byte that is not part of well-formed UTF-8 (overlongs, surrogates and code
 * points past U+10FFFF are ill-formed), or n when all of s is valid. */
size_t tok_utf8_invalid_at(const char *s, size_t n);
/* Length of the well-formed sequence starting at s[0] (1 for a lone invalid byte). */
size_t tok_utf8_seq_len(const char *s, size_t n);
uint32_t tok_utf8_decode(const char *s, size_t n, size_t *len);  // input known valid
size_t tok_utf8_encode(uint32_t cp, char out[4]);
/* Unicode White_Space, the property both Rust's char::is_whitespace and the reference regex use. */
bool tok_is_white_space(uint32_t cp);

/* The pieces a text is cut into on its way to the model: either text (id < 0) or an added token. */
typedef struct tok_piece {
    size_t off, len;        // bytes in the owning list's text
    int32_t id;             // added token id, or -1 for text still to be tokenized
    bool first;             // starts at byte 0 of the original input (Metaspace prepend_scheme "first")
} tok_piece;
typedef struct tok_pieces {
    tok_piece *v;           // owned
    size_t n, cap;
    tok_buf text;           // owned bytes the pieces point into
} tok_pieces;
void tok_pieces_add(tok_pieces *p, const char *s, size_t n, int32_t id, bool first);
void tok_pieces_free(tok_pieces *p);

/* ---- tokenizer_bpe.c ----------------------------------------------------------------------------- */

typedef struct tok_merge_slot {
    uint64_t key;           // (left id << 32) | right id; UINT64_MAX = empty
    uint32_t rank;          // index in the merges list: lower merges first
    int32_t new_id;
} tok_merge_slot;

typedef struct tok_bpe {
    tok_map vocab;              // model vocab: token text -> id
    tok_merge_slot *merges;     // owned hash table, mask + 1 slots
    size_t merge_mask;
    int32_t unk_id;             // -1 when the model has no unk_token
    bool byte_fallback, fuse_unk, ignore_merges;
    char *prefix, *suffix;      // continuing_subword_prefix, end_of_word_suffix (owned, may be NULL)
    size_t prefix_len, suffix_len;
    int32_t byte_ids[256];      // ids of <0xNN>, -1 when absent
} tok_bpe;

ls_status tok_bpe_load(tok_bpe *m, const json *model, ls_error *err);
void tok_bpe_free(tok_bpe *m);

/* Per-call scratch reused across the words of one encode, so a prompt costs O(1) allocations. */
typedef struct tok_bpe_scratch {
    struct tok_symbol *sym;
    size_t sym_cap;
    struct tok_heap_item *heap;
    size_t heap_cap;
} tok_bpe_scratch;
void tok_bpe_scratch_free(tok_bpe_scratch *s);

/* Appends the ids for one pre-token. Fails (INVALID_ARGUMENT) only when a character is in neither the
 * vocab nor the byte fallback and the model has no unk token, as the reference library does. */
ls_status tok_bpe_word(const tok_bpe *m, const char *w, size_t n, tok_bpe_scratch *s, tok_ids *out,
                       ls_error *err);

/* The byte-level alphabet: byte b is written as code point tok_bytelevel_cp(b); the inverse is -1 for
 * code points outside the alphabet. */
uint32_t tok_bytelevel_cp(uint8_t b);
int tok_bytelevel_byte(uint32_t cp);

/* ---- tokenizer_regex.c -------------------------------------------------------------------------- */

typedef struct tok_regex tok_regex;         // a compiled pattern, shared by all threads
typedef struct tok_matcher tok_matcher;     // the match state of one call (PCRE2 match data, JIT stack)
/* `what` names the component in the error ("pre_tokenizer Split: regex ...: missing )"). */
ls_status tok_regex_compile(tok_regex **out, const char *pat, size_t n, const char *what, ls_error *err);
void tok_regex_free(tok_regex *re);
/* Next match of re in s[0..n) at or after `from`: 1 with [*ms, *me), 0 when there is none, -1 on a
 * matching error. *m is created on first use; the caller frees it with tok_matcher_free. */
int tok_regex_next(tok_matcher **m, const tok_regex *re, const char *s, size_t n, size_t from, size_t *ms,
                   size_t *me);
void tok_matcher_free(tok_matcher *m);

/* ---- tokenizer_pretok.c -------------------------------------------------------------------------- */

typedef struct tok_pipeline tok_pipeline;   // normalizers + pre-tokenizers, opaque outside pretok.c

ls_status tok_pipeline_load(tok_pipeline **out, const json *normalizer, const json *pre_tokenizer,
                            ls_error *err);
void tok_pipeline_free(tok_pipeline *p);
bool tok_pipeline_has_normalizer(const tok_pipeline *p);
/* Runs the normalizers over one piece of text; out receives the normalized bytes. */
ls_status tok_normalize(const tok_pipeline *p, const char *s, size_t n, tok_buf *out, ls_error *err);
/* Runs the pre-tokenizers over every text piece of in (added-token pieces pass through) into out. */
ls_status tok_pretokenize(const tok_pipeline *p, const tok_pieces *in, tok_pieces *out, ls_error *err);

/* ---- detok.c ------------------------------------------------------------------------------------- */

typedef struct tok_decoder tok_decoder;     // decoder chain, opaque outside detok.c
ls_status tok_decoder_load(tok_decoder **out, const json *decoder, ls_error *err);
void tok_decoder_free(tok_decoder *d);

/* ---- tokenizer.c: the loaded tokenizer ----------------------------------------------------------- */

typedef struct tok_added {
    char *content;          // owned
    size_t len;
    int32_t id;
    bool special, single_word, lstrip, rstrip, normalized;
} tok_added;

/* Byte trie over added-token contents for leftmost-longest matching. */
typedef struct tok_trie_node {
    int32_t child, sibling;     // first child / next sibling node index, -1 = none
    int32_t added;              // index into tokenizer.added ending here, -1 = none
    uint8_t byte;
} tok_trie_node;
typedef struct tok_trie {
    tok_trie_node *node;        // owned; node 0 is the root
    size_t n, cap;
} tok_trie;

struct tokenizer {
    tok_bpe model;
    tok_pipeline *pipe;
    tok_decoder *dec;
    tok_added *added;           // owned, n_added of them, in tokenizer.json order
    size_t n_added;
    tok_trie raw_trie;          // added tokens with normalized=false: matched in the raw text
    tok_trie norm_trie;         // normalized=true: matched in normalized text
    const char **id_text;       // id -> token text (added tokens win over the model), NULL = hole
    uint32_t *id_len;
    uint8_t *id_special;        // 1 for special added tokens (skipped by decode)
    int32_t n_ids;              // highest id + 1
    int32_t bos_id, eos_id;     // -1 when none
    bool add_bos, add_eos;
};

#endif
