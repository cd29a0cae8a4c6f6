/* Hugging Face tokenizer.json in C: the ids the Hugging Face tokenizers library produces, for
 * SentencePiece-style BPE with byte fallback (Llama 2, Mistral) and byte-level BPE with a regex
 * pre-tokenizer (Llama 3, Qwen2/3). User text never becomes control tokens: added/special tokens are
 * matched only by the server's own template, never inside a prompt. */
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
int tokenizer_add_bos(const tokenizer *t);      // whether encode prepends bos for a prompt

/* Encodes user text (bos prepended when add_bos says so). Invalid UTF-8 -> INVALID_ARGUMENT naming the
 * byte offset. *ids is malloc'ed, owned by the caller. */
ls_status tokenizer_encode(const tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n,
                           ls_error *err);
/* Decodes ids to text as the library's decode(skip_special_tokens=True) does; malloc'ed, NUL-terminated. */
char *tokenizer_decode(const tokenizer *t, const int32_t *ids, size_t n);

/* Incremental detokenization for streaming: push one id at a time, get the bytes that are final
 * (never a partial UTF-8 sequence); flush at the end returns what is left. The concatenation of all
 * pushes and the flush equals tokenizer_decode of all ids. */
typedef struct detok detok;
detok *detok_new(const tokenizer *t);
void detok_free(detok *d);
/* Appends the new final text to *out (malloc'ed string, may be empty ""); returns its length. */
size_t detok_push(detok *d, int32_t id, char **out);
size_t detok_flush(detok *d, char **out);

#endif
