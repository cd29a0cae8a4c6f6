/* The step plan: everything a worker needs to execute one iteration of continuous batching, built by
 * the coordinator and broadcast to every worker. A step mixes prefill chunks of new requests with one
 * decode token of each running request; each sequence carries its page table (the coordinator owns the
 * page allocator, workers only follow the page numbers) and its sampling parameters (sampling happens on
 * worker rank 1, with the request's own seed, so the batch it lands in does not change its tokens). */
#ifndef LORASERVE_COMMON_PLAN_H
#define LORASERVE_COMMON_PLAN_H

#include <stddef.h>
#include <stdint.h>

typedef enum plan_cmd { PLAN_STEP = 1, PLAN_SHUTDOWN = 2 } plan_cmd;

typedef struct plan_seq {
    int32_t start_pos;          // tokens of this sequence already in the KV cache
    int32_t n_tokens;           // tokens processed this step (a prefill chunk, or 1 when decoding)
    int32_t tok_off;            // first token in plan.tokens
    int32_t page_off;           // first page in plan.pages
    int32_t n_pages;            // pages covering positions 0 .. start_pos+n_tokens-1
    int32_t sample;             // 1: sample a token from the last position's logits
    int32_t top_k;
    uint32_t sample_index;      // which generated token this is (drives the seeded draw)
    float temperature;
    float top_p;
    uint64_t seed;
} plan_seq;

typedef struct plan_header {
    int32_t cmd;                // plan_cmd
    int32_t n_seqs;
    int32_t n_tokens;
    int32_t n_pages;
    int32_t n_sample;           // sequences with sample = 1
    int32_t pad;
    uint64_t step;
} plan_header;

typedef struct plan {
    plan_header h;
    plan_seq *seqs;             // n_seqs
    int32_t *tokens;            // n_tokens
    int32_t *pages;             // n_pages (concatenated page tables)
    int32_t cap_seqs, cap_tokens, cap_pages;
} plan;

void plan_init(plan *p);
void plan_free(plan *p);
void plan_reset(plan *p, plan_cmd cmd, uint64_t step);
/* Appends a sequence; its tokens and page table are copied. Grows the arrays as needed. */
plan_seq *plan_add_seq(plan *p, const int32_t *tokens, int n_tokens, const int32_t *pages, int n_pages);

/* Wire form: header, then seqs, tokens and pages back to back. */
size_t plan_payload_bytes(const plan_header *h);
void plan_pack_payload(const plan *p, void *buf);
void plan_unpack_payload(plan *p, const plan_header *h, const void *buf);

#endif
