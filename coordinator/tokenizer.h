/* Hugging Face tokenizer.json in C: the ids the Hugging Face tokenizers library produces, for
 * SentencePiece-style BPE with byte fallback (Llama 2, Mistral, Gemma) and byte-level BPE with a regex
 * pre-tokenizer (Llama 3, Qwen2/3, DeepSeek V3); tests/tokenizer checks it id for id against the library.
 * User text never becomes control tokens: special tokens are matched only in the server's own template
 * (tokenizer_encode_template), never inside a prompt. A loaded tokenizer is immutable and may be shared
 * by threads. */
#ifndef LORASERVE_COORDINATOR_TOKENIZER_H
#define LORASERVE_COORDINATOR_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct tokenizer tokenizer;

/* Reads dir/tokenizer.json and dir/tokenizer_config.json (optional: add_bos_token, bos/eos names).
 * A malformed or unsupported file fails naming the component (model type, pre-tokenizer, normalizer). */
ls_status tokenizer_load(tokenizer **out, const char *dir, ls_error *err);
void tokenizer_free(tokenizer *t);

int tokenizer_vocab_size(const tokenizer *t);   // highest id + 1, added tokens included
int tokenizer_bos_id(const tokenizer *t);       // -1 when none
int tokenizer_eos_id(const tokenizer *t);       // -1 when none
int tokenizer_add_bos(const tokenizer *t);      // whether encode prepends bos for a prompt
/* Id of an exact token text (added tokens first, then the model vocab), -1 when none: how the server
 * finds its template's control tokens ("<|eot_id|>") and stop ids. */
int32_t tokenizer_token_id(const tokenizer *t, const char *token);
/* The token text of an id as tokenizer.json spells it (byte-level alphabet, "\u2581"), not decoded;
 * NULL for an id outside the vocab. Not NUL-safe: use *len. */
const char *tokenizer_id_text(const tokenizer *t, int32_t id, size_t *len);

/* Encodes user text: special tokens written in it are plain text (the reference's
 * split_special_tokens=True); bos prepended when add_bos says so (eos appended on add_eos_token).
 * Invalid UTF-8 -> INVALID_ARGUMENT naming the byte offset. Thread-safe on a shared tokenizer.
 * *ids is malloc'ed, owned by the caller. Cost is O(n log n) in the longest word. */
ls_status tokenizer_encode(const tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n,
                           ls_error *err);
/* As tokenizer_encode without bos/eos: exactly the reference library's encode(text,
 * add_special_tokens=False) with special-token matching off. */
ls_status tokenizer_encode_text(const tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n,
                                ls_error *err);
/* For the server's own chat template only: special tokens written in text ARE matched and become
 * control tokens; nothing is prepended (templates spell bos themselves). Never pass user text here. */
ls_status tokenizer_encode_template(const tokenizer *t, const char *text, size_t len, int32_t **ids,
                                    size_t *n, ls_error *err);
/* Decodes ids to text as the library's decode(skip_special_tokens=True) does; malloc'ed, NUL-terminated. */
char *tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n);
/* The same, with the byte length: decoded text can hold NUL (a <0x00> byte token, a NUL in the prompt). */
char *tokenizer_decode_len(const tokenizer *t, const int32_t *ids, size_t n, size_t *len);

/* Incremental detokenization for streaming: push one id at a time, get the bytes that are final
 * (never a partial UTF-8 sequence); flush at the end returns what is left. The concatenation of all
 * pushes and the flush equals tokenizer_decode of all ids. */
typedef struct detok detok;
detok *detok_new(const tokenizer *t);
/* For text that continues earlier output (generated tokens after a prompt): the start-of-text rules
 * (SentencePiece's dropped leading space, Metaspace's first token) are not applied, so "\u2581world"
 * streams as " world", as vLLM/TGI output reads. (detok_new instead matches decode(output ids) alone,
 * which drops that space.) Its deltas equal decode(prefix + ids) minus decode(prefix) whenever the
 * prefix decodes completely (no byte-fallback run or partial UTF-8 left open at its end). */
detok *detok_new_continuation(const tokenizer *t);
void detok_free(detok *d);
/* Appends the new final text to *out (malloc'ed string, may be empty ""); returns its length. */
size_t detok_push(detok *d, int32_t id, char **out);
size_t detok_flush(detok *d, char **out);

#endif
