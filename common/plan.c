/* Step plan storage and its wire form (see plan.h). Arrays only grow, so a steady-state server does not
 * allocate per step. */
#include "common/plan.h"

#include <string.h>

#include "common/log.h"

void plan_init(plan *p) { memset(p, 0, sizeof *p); }

void plan_free(plan *p)
{
    free(p->seqs);
    free(p->tokens);
    free(p->pages);
    plan_init(p);
}

void plan_reset(plan *p, plan_cmd cmd, uint64_t step)
{
    memset(&p->h, 0, sizeof p->h);
    p->h.cmd = cmd;
    p->h.step = step;
}

static void *grow(void *arr, int32_t *cap, int32_t need, size_t elem)
{
    if (need <= *cap) return arr;
    int32_t n = *cap ? *cap : 16;
    while (n < need) n *= 2;
    *cap = n;
    return ls_xrealloc(arr, (size_t)n * elem);
}

plan_seq *plan_add_seq(plan *p, const int32_t *tokens, int n_tokens, const int32_t *pages, int n_pages)
{
    p->seqs = grow(p->seqs, &p->cap_seqs, p->h.n_seqs + 1, sizeof *p->seqs);
    p->tokens = grow(p->tokens, &p->cap_tokens, p->h.n_tokens + n_tokens, sizeof *p->tokens);
    p->pages = grow(p->pages, &p->cap_pages, p->h.n_pages + n_pages, sizeof *p->pages);
    plan_seq *s = &p->seqs[p->h.n_seqs++];
    memset(s, 0, sizeof *s);
    s->tok_off = p->h.n_tokens;
    s->n_tokens = n_tokens;
    s->page_off = p->h.n_pages;
    s->n_pages = n_pages;
    memcpy(p->tokens + p->h.n_tokens, tokens, (size_t)n_tokens * sizeof *tokens);
    memcpy(p->pages + p->h.n_pages, pages, (size_t)n_pages * sizeof *pages);
    p->h.n_tokens += n_tokens;
    p->h.n_pages += n_pages;
    return s;
}

size_t plan_payload_bytes(const plan_header *h)
{
    return (size_t)h->n_seqs * sizeof(plan_seq) + ((size_t)h->n_tokens + (size_t)h->n_pages) * sizeof(int32_t);
}

void plan_pack_payload(const plan *p, void *buf)
{
    char *o = buf;
    size_t a = (size_t)p->h.n_seqs * sizeof(plan_seq), b = (size_t)p->h.n_tokens * sizeof(int32_t);
    memcpy(o, p->seqs, a);
    memcpy(o + a, p->tokens, b);
    memcpy(o + a + b, p->pages, (size_t)p->h.n_pages * sizeof(int32_t));
}

void plan_unpack_payload(plan *p, const plan_header *h, const void *buf)
{
    p->h = *h;
    p->seqs = grow(p->seqs, &p->cap_seqs, h->n_seqs, sizeof *p->seqs);
    p->tokens = grow(p->tokens, &p->cap_tokens, h->n_tokens, sizeof *p->tokens);
    p->pages = grow(p->pages, &p->cap_pages, h->n_pages, sizeof *p->pages);
    const char *in = buf;
    size_t a = (size_t)h->n_seqs * sizeof(plan_seq), b = (size_t)h->n_tokens * sizeof(int32_t);
    memcpy(p->seqs, in, a);
    memcpy(p->tokens, in + a, b);
    memcpy(p->pages, in + a + b, (size_t)h->n_pages * sizeof(int32_t));
}
