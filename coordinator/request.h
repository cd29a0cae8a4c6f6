/* One generation request as the coordinator tracks it: validated input, the growing token sequence
 * (prompt then generated ids), its KV pages, the text produced so far and how much of it a stream has
 * already sent. Validation happens here, before anything is queued, so bad input costs no step. */
#ifndef LORASERVE_COORDINATOR_REQUEST_H
#define LORASERVE_COORDINATOR_REQUEST_H

#include <stdint.h>

#include "common/model_config.h"
#include "common/status.h"
#include "coordinator/server.h"
#include "coordinator/tokenizer.h"

#define REQUEST_MAX_STOP 16
#define REQUEST_MAX_STOP_LEN 256
#define REQUEST_MAX_STOP_IDS 64
#define REQUEST_MAX_ID_LEN 128

typedef enum request_state { REQ_NEW = 0, REQ_WAITING, REQ_RUNNING, REQ_FINISHED } request_state;

typedef struct request_limits {
    const model_config *model;
    const tokenizer *tok;
    int vocab_size;             // ids accepted in prompts
    int default_max_new_tokens;
} request_limits;

typedef struct request {
    char id[REQUEST_MAX_ID_LEN + 1];
    uint64_t arrival_no;        // arrival order: preemption picks the newest
    request_state state;
    server_call *call;
    int streaming;
    int cancelled;              // the client went away: finish without sending
    int64_t deadline_ms;        // CLOCK_MONOTONIC, INT64_MAX = none
    int64_t t_arrival_ns, t_scheduled_ns, t_first_token_ns, t_last_token_ns;

    int32_t *tokens;            // (cap) prompt then generated ids
    int n_prompt, n_tokens, cap_tokens;
    int n_cached;               // leading tokens whose KV is in the pages
    int32_t *pages;             // (cap_pages) page table
    int n_pages, cap_pages;

    int max_new_tokens;
    float temperature, top_p;
    int top_k;
    uint64_t seed;
    int ignore_eos;
    int32_t stop_ids[REQUEST_MAX_STOP_IDS];
    int n_stop_ids;
    char *stop[REQUEST_MAX_STOP];
    int n_stop;

    detok *dt;
    char *text;                 // generated text so far (stop strings cut off)
    size_t text_len, text_cap;
    size_t text_sent;           // bytes of text already streamed
    int tokens_sent;            // generated ids already streamed
    int delta_due;              // streamed ids wait to be sent once the next step is under way
    Loraserve__V1__FinishReason finish;
    struct adapter *ad;         // NULL = the base model; holds one `active` reference
    char adapter_name[256];     // as asked; resolved before the request is queued

    struct request *prev, *next;    // scheduler queue links
} request;

/* Validates pb and builds a request; errors are INVALID_ARGUMENT or NOT_FOUND naming the field. */
ls_status request_new(request **out, const request_limits *lim, const Loraserve__V1__GenerateRequest *pb,
                      ls_error *err);
void request_free(request *r);

static inline int request_generated(const request *r) { return r->n_tokens - r->n_prompt; }
/* Appends a sampled id; returns the finish reason it causes (UNSPECIFIED = keep going). */
Loraserve__V1__FinishReason request_append(request *r, const request_limits *lim, int32_t id);
/* Text that may be streamed now: everything except a tail that could still become a stop string
 * (all of it once finished). */
size_t request_text_ready(const request *r);

#endif
