/* Shared by the golden tests (base model and LoRA): a sequence driven by hand through worker plans,
 * and the comparison of a logits row with a recorded one.
 *
 * Tolerance: both sides compute in fp32; only the order of additions differs (matmul blocking, the
 * tensor-parallel all-reduce, softmax, the LoRA shrink/expand). Over these sizes that moves logits by
 * ~1e-6 relative; |diff| <= 1e-4 + 1e-4*|ref| leaves two orders of margin yet catches any wrong
 * rotation, mask, scale, shard or adapter row (each moves logits by >= 1e-2). */
#ifndef LORASERVE_TESTS_GOLDEN_UTIL_H
#define LORASERVE_TESTS_GOLDEN_UTIL_H

#include "common/json.h"
#include "common/plan.h"
#include "common/safetensors.h"
#include "worker/worker.h"

#define GOLDEN_ATOL 1e-4
#define GOLDEN_RTOL 1e-4

typedef struct golden_seq {
    int32_t tokens[1024];
    int n_tokens, n_cached;
    int32_t pages[256];
    int n_pages;
    int32_t adapter;            // slot id, -1 = base
} golden_seq;

/* A JSON array of integers as a malloc'ed int32 array. */
int32_t *golden_int_array(const json *a, int *n);
/* Gives s pages for prompt_len + max_new tokens, taken downwards from *next_page (scrambled order). */
void golden_seq_init(golden_seq *s, const int32_t *prompt, int n, int max_new, int page_tokens, int *next_page);
/* Adds s to the plan: its uncached tokens, sampled at the end. */
void golden_seq_add(plan *p, golden_seq *s, int page_tokens);
/* Max of |got - ref| / (atol + rtol |ref|) over a row (NaN propagates); also tracks the max |diff|. */
double golden_compare_row(const float *got, const st_tensor *t, int row, int vocab, double *max_abs);

/* One recorded greedy continuation: the prompt, the tokens the reference chose and its logits rows. */
typedef struct golden_case {
    const int32_t *prompt;
    int prompt_len;
    const int32_t *greedy;      // max_new tokens
    const st_tensor *logits;    // (max_new, vocab); NULL counts as a mismatch
    int32_t adapter;            // slot id, -1 = base
} golden_case;

typedef struct golden_result {
    double worst;               // max of |diff| / tolerance over every row (<= 1 passes)
    double max_abs;             // max |diff|
    int tokens_ok;              // every greedy token identical
} golden_result;

/* Adds whatever else a step's plan needs after its sequences (the LoRA test: the adapter table). */
typedef void (*golden_plan_hook)(void *ctx, plan *p, int step);

/* Runs the cases together through worker_forward for max_new greedy steps with teacher forcing (the
 * recorded token is fed back, so one slip shows once), over pages taken from *next_page down; the
 * comparison happens on worker rank 0, whose result is returned (other ranks get zeros). */
golden_result golden_run(worker *wk, const golden_case *cases, int count, int max_new, int page_tokens,
                         int *next_page, golden_plan_hook hook, void *hook_ctx);

#endif
