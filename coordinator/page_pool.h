/* The allocator of the unified page pool. The memory lives on the workers, one pool each, all with the
 * same number of pages; the coordinator alone decides which page holds what and sends page numbers in
 * every step plan, so the workers mirror it without talking to each other. A page is page_tokens token
 * slots of KV for every layer (worker/forward.h gives its bytes); adapter weight rows will take pages of
 * the same pool, tagged with their use, so that any free page fits any use and nothing fragments.
 * Allocation is all-or-nothing so a request never holds half of what it needs. */
#ifndef LORASERVE_COORDINATOR_PAGE_POOL_H
#define LORASERVE_COORDINATOR_PAGE_POOL_H

#include <stdint.h>

typedef enum page_use { PAGE_FREE = 0, PAGE_KV = 1, PAGE_ADAPTER = 2, PAGE_USE_COUNT } page_use;

typedef struct page_pool {
    int n_pages;
    int32_t *free_list;         // stack of free page numbers
    int n_free;
    uint8_t *use;               // (n_pages) page_use of each page
    int in_use[PAGE_USE_COUNT];
} page_pool;

void page_pool_init(page_pool *p, int n_pages);
void page_pool_free(page_pool *p);
/* Takes n pages for `use` into out; returns 0, or -1 (taking nothing) when fewer than n are free. */
int page_pool_alloc(page_pool *p, page_use use, int n, int32_t *out);
/* Returns pages; releasing a page that is not in use is an invariant violation. */
void page_pool_release(page_pool *p, const int32_t *pages, int n);
static inline int page_pool_available(const page_pool *p) { return p->n_free; }

#endif
