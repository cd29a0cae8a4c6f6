/* Unified page pool bookkeeping (see page_pool.h). A LIFO free list keeps allocation O(1) and
 * deterministic, which keeps runs reproducible. */
#include "coordinator/page_pool.h"

#include <string.h>

#include "common/log.h"

void page_pool_init(page_pool *p, int n_pages)
{
    memset(p, 0, sizeof *p);
    p->n_pages = n_pages;
    p->free_list = ls_xmalloc((size_t)n_pages * sizeof *p->free_list);
    p->use = ls_xcalloc((size_t)n_pages, 1);
    for (int i = 0; i < n_pages; i++) p->free_list[i] = n_pages - 1 - i;   // page 0 is handed out first
    p->n_free = n_pages;
    p->in_use[PAGE_FREE] = n_pages;
}

void page_pool_free(page_pool *p)
{
    free(p->free_list);
    free(p->use);
    memset(p, 0, sizeof *p);
}

int page_pool_alloc(page_pool *p, page_use use, int n, int32_t *out)
{
    LS_ASSERT(use != PAGE_FREE && n >= 0);
    if (n > p->n_free) return -1;
    for (int i = 0; i < n; i++) {
        int32_t pg = p->free_list[--p->n_free];
        LS_ASSERT(p->use[pg] == PAGE_FREE);
        p->use[pg] = (uint8_t)use;
        out[i] = pg;
    }
    p->in_use[use] += n;
    p->in_use[PAGE_FREE] -= n;
    return 0;
}

void page_pool_release(page_pool *p, const int32_t *pages, int n)
{
    for (int i = 0; i < n; i++) {
        int32_t pg = pages[i];
        LS_ASSERT(pg >= 0 && pg < p->n_pages && p->use[pg] != PAGE_FREE);
        p->in_use[p->use[pg]]--;
        p->in_use[PAGE_FREE]++;
        p->use[pg] = PAGE_FREE;
        p->free_list[p->n_free++] = pg;
    }
}
