/* The built-in demo model's tokenizer: a real Hugging Face tokenizer.json + tokenizer_config.json, so
 * the demo path goes through the same loader as a served Llama 3 and the reference library can load it
 * too (it is the fourth tokenizer of the exact-match oracle suite). It is a Llama-3-style byte-level BPE:
 * the Llama 3 split regex, the ByteLevel pre-tokenizer and decoder, 256 byte tokens plus merges learned
 * by a small BPE training run over a built-in English text, and <|begin_of_text|> (bos, prepended) and
 * <|end_of_text|> (eos). The output is deterministic: the same target gives the same files. */
#ifndef LORASERVE_COORDINATOR_TOKENIZER_GEN_H
#define LORASERVE_COORDINATOR_TOKENIZER_GEN_H

#include "common/status.h"

/* Writes dir/tokenizer.json and dir/tokenizer_config.json (dir must exist). target_vocab counts every
 * id, the two special tokens included; it must be >= 258. Training stops early when no pair occurs
 * twice, so *vocab_size (highest id + 1) can be below the target. */
ls_status tokenizer_gen_write(const char *dir, int target_vocab, int *vocab_size, ls_error *err);

#endif
