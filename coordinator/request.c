/* Request validation and per-token bookkeeping (see request.h). */
#include "coordinator/request.h"

#include <math.h>
#include <string.h>

#include "common/log.h"

static ls_status check_sampling(const Loraserve__V1__GenerateRequest *pb, ls_error *err)
{
    if (!isfinite(pb->temperature) || pb->temperature < 0)
        return ls_fail(err, LS_INVALID_ARGUMENT, "temperature must be a finite number >= 0, got %g", pb->temperature);
    if (!isfinite(pb->top_p) || pb->top_p < 0 || pb->top_p > 1)
        return ls_fail(err, LS_INVALID_ARGUMENT, "top_p must be in [0, 1], got %g", pb->top_p);
    if (pb->n_stop > REQUEST_MAX_STOP)
        return ls_fail(err, LS_INVALID_ARGUMENT, "at most %d stop strings, got %zu", REQUEST_MAX_STOP, pb->n_stop);
    for (size_t i = 0; i < pb->n_stop; i++) {
        size_t n = strlen(pb->stop[i]);
        if (n == 0 || n > REQUEST_MAX_STOP_LEN)
            return ls_fail(err, LS_INVALID_ARGUMENT, "stop[%zu] must have 1 to %d bytes, got %zu", i,
                           REQUEST_MAX_STOP_LEN, n);
    }
    if (pb->n_stop_token_ids > REQUEST_MAX_STOP_IDS)
        return ls_fail(err, LS_INVALID_ARGUMENT, "at most %d stop_token_ids, got %zu", REQUEST_MAX_STOP_IDS,
                       pb->n_stop_token_ids);
    if (strlen(pb->request_id) > REQUEST_MAX_ID_LEN)
        return ls_fail(err, LS_INVALID_ARGUMENT, "request_id is longer than %d bytes", REQUEST_MAX_ID_LEN);
    return LS_OK;
}

static ls_status check_ids(const int32_t *ids, size_t n, int vocab, const char *field, ls_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return ls_fail(err, LS_INVALID_ARGUMENT, "%s[%zu] = %d is outside the vocabulary [0, %d)", field, i,
                           ids[i], vocab);
    return LS_OK;
}

/* Prompt ids from text (tokenized) or from the ids given. */
static ls_status prompt_ids(const request_limits *lim, const Loraserve__V1__GenerateRequest *pb, int32_t **ids,
                            size_t *n, ls_error *err)
{
    int has_text = pb->prompt && pb->prompt[0], has_ids = pb->n_prompt_token_ids > 0;
    if (has_text && has_ids)
        return ls_fail(err, LS_INVALID_ARGUMENT, "set either prompt or prompt_token_ids, not both");
    if (!has_text && !has_ids) return ls_fail(err, LS_INVALID_ARGUMENT, "prompt is empty");
    if (has_ids) {
        ls_status st = check_ids(pb->prompt_token_ids, pb->n_prompt_token_ids, lim->vocab_size, "prompt_token_ids", err);
        if (st != LS_OK) return st;
        *n = pb->n_prompt_token_ids;
        *ids = ls_xmalloc(*n * sizeof **ids);
        memcpy(*ids, pb->prompt_token_ids, *n * sizeof **ids);
        return LS_OK;
    }
    if (!lim->tok)
        return ls_fail(err, LS_FAILED_PRECONDITION, "this model has no tokenizer.json: send prompt_token_ids");
    ls_status st = tokenizer_encode(lim->tok, pb->prompt, strlen(pb->prompt), ids, n, err);
    if (st != LS_OK) return ls_error_wrap(err, "prompt");
    if (*n == 0) return ls_fail(err, LS_INVALID_ARGUMENT, "prompt is empty after tokenization");
    return LS_OK;
}

static void copy_params(request *r, const Loraserve__V1__GenerateRequest *pb)
{
    r->temperature = pb->temperature;
    r->top_p = pb->top_p;
    r->top_k = (int)(pb->top_k > (1u << 30) ? (1u << 30) : pb->top_k);
    r->seed = pb->seed;
    r->ignore_eos = pb->ignore_eos;
    r->n_stop_ids = (int)pb->n_stop_token_ids;
    memcpy(r->stop_ids, pb->stop_token_ids, pb->n_stop_token_ids * sizeof *pb->stop_token_ids);
    r->n_stop = (int)pb->n_stop;
    for (size_t i = 0; i < pb->n_stop; i++) r->stop[i] = strdup(pb->stop[i]);
    snprintf(r->id, sizeof r->id, "%s", pb->request_id);
}

ls_status request_new(request **out, const request_limits *lim, const Loraserve__V1__GenerateRequest *pb,
                      ls_error *err)
{
    *out = NULL;
    if (pb->adapter && strlen(pb->adapter) >= sizeof ((request *)0)->adapter_name)
        return ls_fail(err, LS_INVALID_ARGUMENT, "adapter name is longer than %zu bytes",
                       sizeof ((request *)0)->adapter_name - 1);
    ls_status st = check_sampling(pb, err);
    if (st != LS_OK) return st;
    st = check_ids(pb->stop_token_ids, pb->n_stop_token_ids, lim->vocab_size, "stop_token_ids", err);
    if (st != LS_OK) return st;
    int32_t *ids = NULL;
    size_t n = 0;
    if ((st = prompt_ids(lim, pb, &ids, &n, err)) != LS_OK) return st;
    int ctx = lim->model->max_position;
    size_t max_new = pb->max_new_tokens ? pb->max_new_tokens : (size_t)lim->default_max_new_tokens;
    if (n + max_new > (size_t)ctx) {
        if (!pb->max_new_tokens && n < (size_t)ctx) {
            max_new = (size_t)ctx - n;      // the server default shrinks to fit; an explicit value does not
        } else {
            free(ids);
            return ls_fail(err, LS_INVALID_ARGUMENT,
                           "prompt (%zu tokens) + max_new_tokens (%zu) exceeds the context of %d tokens", n, max_new, ctx);
        }
    }
    request *r = ls_xcalloc(1, sizeof *r);
    r->cap_tokens = (int)(n + max_new);
    r->tokens = ls_xrealloc(ids, (size_t)r->cap_tokens * sizeof *r->tokens);
    r->n_prompt = r->n_tokens = (int)n;
    r->max_new_tokens = (int)max_new;
    copy_params(r, pb);
    snprintf(r->adapter_name, sizeof r->adapter_name, "%s", pb->adapter ? pb->adapter : "");
    // Continuation mode: generated text keeps its leading space (" Paris" after a prompt), as the text
    // of a completion reads; no tokenizer: responses carry ids only.
    r->dt = lim->tok ? detok_new_continuation(lim->tok) : NULL;
    r->text = ls_xcalloc(1, 1);
    r->text_cap = 1;
    *out = r;
    return LS_OK;
}

void request_free(request *r)
{
    if (!r) return;
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    detok_free(r->dt);
    free(r->tokens);
    free(r->pages);
    free(r->text);
    free(r);
}

static void text_push(request *r, const char *s, size_t n)
{
    if (r->text_len + n + 1 > r->text_cap) {
        r->text_cap = (r->text_len + n + 1) * 2;
        r->text = ls_xrealloc(r->text, r->text_cap);
    }
    memcpy(r->text + r->text_len, s, n);
    r->text_len += n;
    r->text[r->text_len] = 0;
}

/* Appends decoded text. A U+0000 byte becomes U+FFFD: response strings are NUL-terminated C strings in
 * protobuf-c, and a NUL would silently cut the text there (token_ids stay exact). */
static void text_append(request *r, const char *s, size_t n)
{
    for (const char *nul; n && (nul = memchr(s, 0, n)); n -= (size_t)(nul - s) + 1, s = nul + 1) {
        text_push(r, s, (size_t)(nul - s));
        text_push(r, "\xEF\xBF\xBD", 3);
    }
    text_push(r, s, n);
}

/* Cuts the text at the first stop string found in its new part; 1 when one was found. */
static int cut_at_stop(request *r, size_t old_len)
{
    size_t best = SIZE_MAX;
    for (int i = 0; i < r->n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        size_t from = old_len >= sl ? old_len - sl + 1 : 0;
        const char *hit = memmem(r->text + from, r->text_len - from, r->stop[i], sl);
        if (hit && (size_t)(hit - r->text) < best) best = (size_t)(hit - r->text);
    }
    if (best == SIZE_MAX) return 0;
    r->text_len = best;
    r->text[best] = 0;
    return 1;
}

static void flush_text(request *r)
{
    if (!r->dt) return;
    char *tail = NULL;
    size_t n = detok_flush(r->dt, &tail);
    text_append(r, tail, n);
    free(tail);
}

static int is_stop_id(const request *r, const request_limits *lim, int32_t id)
{
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == id) return 1;
    return !r->ignore_eos && model_config_is_eos(lim->model, id);
}

Loraserve__V1__FinishReason request_append(request *r, const request_limits *lim, int32_t id)
{
    LS_ASSERT(r->n_tokens < r->cap_tokens);
    r->tokens[r->n_tokens++] = id;
    if (is_stop_id(r, lim, id)) {
        flush_text(r);
        if (r->n_stop) cut_at_stop(r, 0);
        return LORASERVE__V1__FINISH_REASON__FINISH_REASON_STOP;
    }
    size_t old = r->text_len;
    if (r->dt) {
        char *piece = NULL;
        size_t n = detok_push(r->dt, id, &piece);
        text_append(r, piece, n);
        free(piece);
    }
    int done_len = request_generated(r) >= r->max_new_tokens || r->n_tokens >= lim->model->max_position;
    if (done_len) flush_text(r);
    if (r->n_stop && cut_at_stop(r, old)) return LORASERVE__V1__FINISH_REASON__FINISH_REASON_STOP;
    return done_len ? LORASERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH
                    : LORASERVE__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED;
}

size_t request_text_ready(const request *r)
{
    if (r->finish != LORASERVE__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) return r->text_len;
    size_t hold = 0;
    for (int i = 0; i < r->n_stop; i++) {
        size_t sl = strlen(r->stop[i]);
        for (size_t k = sl - 1; k > hold; k--)      // longest proper prefix of stop[i] ending the text
            if (k <= r->text_len && memcmp(r->text + r->text_len - k, r->stop[i], k) == 0) { hold = k; break; }
    }
    return r->text_len - hold;
}
