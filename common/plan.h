/* The step plan: everything a worker needs to execute one iteration of continuous batching, built by
 * the coordinator and broadcast to every worker. A step mixes prefill chunks of new requests with one
 * decode token of each running request; each sequence carries its page table (the coordinator owns the
 * page allocator, workers only follow the page numbers) and its sampling parameters (sampling happens on
 * worker rank 1, with the request's own seed, so the batch it lands in does not change its tokens). */
#ifndef LORASERVE_COMMON_PLAN_H
#define LORASERVE_COMMON_PLAN_H

#include <stddef.h>
#include <stdint.h>

/* PLAN_STEP runs a batch. The adapter commands travel between steps and are answered by every worker
 * (channel_gather_reports): REGISTER validates an adapter directory (plan.bytes) on each rank under
 * slot id h.arg, so that a load succeeds on all ranks or on none; DROP forgets slot h.arg. */
typedef enum plan_cmd {
    PLAN_STEP = 1, PLAN_SHUTDOWN = 2, PLAN_ADAPTER_REGISTER = 3, PLAN_ADAPTER_DROP = 4,
} plan_cmd;

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
    int32_t adapter;            // adapter slot id, -1 = the base model alone
    int32_t pad;
    uint64_t seed;
} plan_seq;

/* An adapter used by the step: where its rows are in the pool, and whether the workers must first copy
 * them there from their host store (the copy happens before the step's compute). */
typedef struct plan_adapter {
    int32_t id;
    int32_t page_off;           // its pages in plan.pages
    int32_t n_pages;
    int32_t copy;
} plan_adapter;

typedef struct plan_header {
    int32_t cmd;                // plan_cmd
    int32_t n_seqs;
    int32_t n_tokens;
    int32_t n_pages;
    int32_t n_sample;           // sequences with sample = 1
    int32_t n_adapters;
    int32_t n_bytes;            // control payload (an adapter directory path)
    int32_t arg;                // command argument (an adapter slot id)
    uint64_t step;
} plan_header;

typedef struct plan {
    plan_header h;
    plan_seq *seqs;             // n_seqs
    int32_t *tokens;            // n_tokens
    int32_t *pages;             // n_pages (concatenated page tables)
    plan_adapter *adapters;     // n_adapters
    char *bytes;                // n_bytes
    int32_t cap_seqs, cap_tokens, cap_pages, cap_adapters, cap_bytes;
} plan;

void plan_init(plan *p);
void plan_free(plan *p);
void plan_reset(plan *p, plan_cmd cmd, uint64_t step);
/* Appends a sequence; its tokens and page table are copied. Grows the arrays as needed. */
plan_seq *plan_add_seq(plan *p, const int32_t *tokens, int n_tokens, const int32_t *pages, int n_pages);

/* Adds an adapter used by this step (its page table is copied); returns its entry. */
plan_adapter *plan_add_adapter(plan *p, int32_t id, const int32_t *pages, int n_pages, int copy);
/* Sets the control payload (copied). */
void plan_set_bytes(plan *p, const char *bytes, int n);

/* Wire form: header, then seqs, adapters, tokens, pages and bytes back to back. */
size_t plan_payload_bytes(const plan_header *h);
void plan_pack_payload(const plan *p, void *buf);
void plan_unpack_payload(plan *p, const plan_header *h, const void *buf);

#endif
