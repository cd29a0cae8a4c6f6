/* The coordinator's view of adapters: which are registered (validated on every rank, by slot id),
 * which are resident (their rows in pool pages) and which requests hold them. Residency follows
 * S-LoRA: an adapter is copied into the pool when a request that needs it is admitted (or prefetched
 * for a queued one), stays while any running request uses it, and idle adapters are evicted least
 * recently used first when pages are needed, by KV or by another adapter. */
#ifndef LORASERVE_COORDINATOR_ADAPTER_REGISTRY_H
#define LORASERVE_COORDINATOR_ADAPTER_REGISTRY_H

#include <stdint.h>

#include "common/peft.h"
#include "coordinator/page_pool.h"

typedef struct adapter {
    int32_t id;                 // slot shared with the workers
    char name[256];
    peft_adapter peft;          // config: ranks and scales per (layer, module); owned
    int n_pages;                // pages it needs when resident (the max over TP ranks)
    int32_t *pages;             // (n_pages) when resident
    int resident;
    int active;                 // requests (queued or running) that use it: blocks unloading
    int running;                // running requests that use it: pins residency
    uint64_t last_used;         // registry clock at its last step
    uint64_t loads;             // copies into the pool
} adapter;

typedef struct adapter_registry {
    adapter **slots;            // by id; NULL = free slot
    int cap, n;
    uint64_t clock;
    uint64_t loads, evictions, rows_bytes_copied;
    size_t page_bytes;
} adapter_registry;

void adapter_registry_init(adapter_registry *r, size_t page_bytes);
void adapter_registry_free(adapter_registry *r, page_pool *pool);
adapter *adapter_registry_find(const adapter_registry *r, const char *name);
/* Takes ownership of *peft (cleared) and gives the adapter a free slot id. */
adapter *adapter_registry_add(adapter_registry *r, const char *name, peft_adapter *peft, int n_pages);
/* Frees an idle adapter's slot and pages (active must be 0). */
void adapter_registry_remove(adapter_registry *r, page_pool *pool, adapter *a);

/* Evicts idle resident adapters, least recently used first, until `need` pages are free or none is
 * left to evict; returns the free pages. */
int adapter_registry_evict(adapter_registry *r, page_pool *pool, int need);
/* Makes a resident (evicting idle ones as needed) keeping `reserve` pages free for other uses; returns
 * 1 when it was copied in just now, 0 when it was resident, -1 when the pool cannot hold it now. */
int adapter_registry_make_resident(adapter_registry *r, page_pool *pool, adapter *a, int reserve);
static inline void adapter_touch(adapter_registry *r, adapter *a) { a->last_used = ++r->clock; }

#endif
