/* Adapter registry and residency (see adapter_registry.h). Eviction scans the slots for the least
 * recently used idle resident adapter; the registry holds thousands of adapters at most and eviction
 * happens only when pages run short, so a linear scan is cheaper than keeping an ordered structure
 * consistent with every touch. */
#include "coordinator/adapter_registry.h"

#include <string.h>

#include "common/log.h"

void adapter_registry_init(adapter_registry *r, size_t page_bytes)
{
    memset(r, 0, sizeof *r);
    r->page_bytes = page_bytes;
}

static void release(adapter_registry *r, page_pool *pool, adapter *a)
{
    if (!a->resident) return;
    page_pool_release(pool, a->pages, a->n_pages);
    a->resident = 0;
}

void adapter_registry_free(adapter_registry *r, page_pool *pool)
{
    for (int i = 0; i < r->cap; i++) {
        adapter *a = r->slots[i];
        if (!a) continue;
        if (pool) release(r, pool, a);
        peft_adapter_free(&a->peft);
        free(a->pages);
        free(a);
    }
    free(r->slots);
    memset(r, 0, sizeof *r);
}

adapter *adapter_registry_find(const adapter_registry *r, const char *name)
{
    for (int i = 0; i < r->cap; i++)
        if (r->slots[i] && strcmp(r->slots[i]->name, name) == 0) return r->slots[i];
    return NULL;
}

adapter *adapter_registry_add(adapter_registry *r, const char *name, peft_adapter *peft, int n_pages)
{
    int id = 0;
    while (id < r->cap && r->slots[id]) id++;
    if (id == r->cap) {
        int cap = r->cap ? r->cap * 2 : 64;
        r->slots = ls_xrealloc(r->slots, (size_t)cap * sizeof *r->slots);
        memset(r->slots + r->cap, 0, (size_t)(cap - r->cap) * sizeof *r->slots);
        r->cap = cap;
    }
    adapter *a = ls_xcalloc(1, sizeof *a);
    a->id = id;
    snprintf(a->name, sizeof a->name, "%s", name);
    a->peft = *peft;
    memset(peft, 0, sizeof *peft);
    a->n_pages = n_pages;
    a->pages = ls_xcalloc((size_t)(n_pages ? n_pages : 1), sizeof *a->pages);
    r->slots[id] = a;
    r->n++;
    return a;
}

void adapter_registry_remove(adapter_registry *r, page_pool *pool, adapter *a)
{
    LS_ASSERT(a->active == 0 && a->running == 0);
    release(r, pool, a);
    r->slots[a->id] = NULL;
    r->n--;
    peft_adapter_free(&a->peft);
    free(a->pages);
    free(a);
}

static adapter *lru_idle(const adapter_registry *r)
{
    adapter *best = NULL;
    for (int i = 0; i < r->cap; i++) {
        adapter *a = r->slots[i];
        if (a && a->resident && a->running == 0 && (!best || a->last_used < best->last_used)) best = a;
    }
    return best;
}

int adapter_registry_evict(adapter_registry *r, page_pool *pool, int need)
{
    while (page_pool_available(pool) < need) {
        adapter *victim = lru_idle(r);
        if (!victim) break;
        LOG_D("evicting adapter %s (%d pages)", victim->name, victim->n_pages);
        release(r, pool, victim);
        r->evictions++;
    }
    return page_pool_available(pool);
}

int adapter_registry_make_resident(adapter_registry *r, page_pool *pool, adapter *a, int reserve)
{
    if (a->resident) return 0;
    // Pin a while evicting so that it can never pick itself.
    a->running++;
    int free_pages = adapter_registry_evict(r, pool, a->n_pages + reserve);
    a->running--;
    if (free_pages < a->n_pages + reserve) return -1;
    LS_ASSERT(page_pool_alloc(pool, PAGE_ADAPTER, a->n_pages, a->pages) == 0);
    a->resident = 1;
    a->loads++;
    r->loads++;
    r->rows_bytes_copied += (uint64_t)a->n_pages * r->page_bytes;
    return 1;
}
