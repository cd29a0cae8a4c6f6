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
    free(p->adapters);
    free(p->bytes);
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
    s->adapter = -1;
    memcpy(p->tokens + p->h.n_tokens, tokens, (size_t)n_tokens * sizeof *tokens);
    memcpy(p->pages + p->h.n_pages, pages, (size_t)n_pages * sizeof *pages);
    p->h.n_tokens += n_tokens;
    p->h.n_pages += n_pages;
    return s;
}

plan_adapter *plan_add_adapter(plan *p, int32_t id, const int32_t *pages, int n_pages, int copy)
{
    p->adapters = grow(p->adapters, &p->cap_adapters, p->h.n_adapters + 1, sizeof *p->adapters);
    p->pages = grow(p->pages, &p->cap_pages, p->h.n_pages + n_pages, sizeof *p->pages);
    plan_adapter *a = &p->adapters[p->h.n_adapters++];
    *a = (plan_adapter){ .id = id, .page_off = p->h.n_pages, .n_pages = n_pages, .copy = copy };
    memcpy(p->pages + p->h.n_pages, pages, (size_t)n_pages * sizeof *pages);
    p->h.n_pages += n_pages;
    return a;
}

void plan_set_bytes(plan *p, const char *bytes, int n)
{
    p->bytes = grow(p->bytes, &p->cap_bytes, n + 1, 1);
    memcpy(p->bytes, bytes, (size_t)n);
    p->bytes[n] = 0;
    p->h.n_bytes = n;
}

/* The wire sections in order: (offset of the array pointer in plan, element size, count). */
typedef struct section { void **arr; int32_t *cap; size_t elem; int32_t n; } section;

static int sections(plan *p, const plan_header *h, section out[5])
{
    out[0] = (section){ (void **)&p->seqs, &p->cap_seqs, sizeof(plan_seq), h->n_seqs };
    out[1] = (section){ (void **)&p->adapters, &p->cap_adapters, sizeof(plan_adapter), h->n_adapters };
    out[2] = (section){ (void **)&p->tokens, &p->cap_tokens, sizeof(int32_t), h->n_tokens };
    out[3] = (section){ (void **)&p->pages, &p->cap_pages, sizeof(int32_t), h->n_pages };
    out[4] = (section){ (void **)&p->bytes, &p->cap_bytes, 1, h->n_bytes };
    return 5;
}

size_t plan_payload_bytes(const plan_header *h)
{
    return (size_t)h->n_seqs * sizeof(plan_seq) + (size_t)h->n_adapters * sizeof(plan_adapter) +
           ((size_t)h->n_tokens + (size_t)h->n_pages) * sizeof(int32_t) + (size_t)h->n_bytes;
}

void plan_pack_payload(const plan *p, void *buf)
{
    section s[5];
    char *o = buf;
    for (int i = 0, n = sections((plan *)p, &p->h, s); i < n; i++) {
        size_t len = (size_t)s[i].n * s[i].elem;
        if (len) memcpy(o, *s[i].arr, len);
        o += len;
    }
}

void plan_unpack_payload(plan *p, const plan_header *h, const void *buf)
{
    section s[5];
    const char *in = buf;
    p->h = *h;
    for (int i = 0, n = sections(p, h, s); i < n; i++) {
        size_t len = (size_t)s[i].n * s[i].elem;
        *s[i].arr = grow(*s[i].arr, s[i].cap, s[i].n + (s[i].elem == 1), s[i].elem);   // bytes keep a NUL
        if (len) memcpy(*s[i].arr, in, len);
        if (s[i].elem == 1) ((char *)*s[i].arr)[s[i].n] = 0;
        in += len;
    }
}
