/* The adapter service (see adapter_service.h). */
#include "coordinator/adapter_service.h"

#include <string.h>
#include <sys/stat.h>

#include "common/log.h"

struct admin_op {
    server_call *call;
    server_admin_method m;
    char name[256];
    admin_op *next;
};

void adapter_service_init(adapter_service *s, const adapter_service_opts *o, const model_config *mc, scheduler *sched,
                          channel *ch)
{
    memset(s, 0, sizeof *s);
    s->o = *o;
    s->mc = mc;
    s->sched = sched;
    s->ch = ch;
    plan_init(&s->ctl);
}

void adapter_service_free(adapter_service *s)
{
    plan_free(&s->ctl);
    memset(s, 0, sizeof *s);
}

int adapter_service_busy(const adapter_service *s) { return s->parked != NULL || s->ops != NULL; }

static void attach(request *r, adapter *a)
{
    r->ad = a;
    a->active++;
}

void adapter_service_detach(request *r)
{
    if (r->ad) r->ad->active--;
    r->ad = NULL;
}

ls_status adapter_service_attach(adapter_service *s, request *r, int *parked, ls_error *err)
{
    *parked = 0;
    if (!r->adapter_name[0]) return LS_OK;
    adapter *a = adapter_registry_find(&s->sched->adapters, r->adapter_name);
    if (a) {
        attach(r, a);
        return LS_OK;
    }
    if (!s->o.root[0])
        return ls_fail(err, LS_NOT_FOUND, "adapter '%s' is not loaded (and no --adapters root is configured)",
                       r->adapter_name);
    if (s->sched->waiting.n + s->n_parked >= s->sched->o.max_waiting)
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "the waiting queue is full (%d requests); retry later",
                       s->sched->o.max_waiting);
    r->next = s->parked;
    s->parked = r;
    s->n_parked++;
    *parked = 1;
    return LS_OK;
}

/* Asks every worker to register dir under a's slot; all must agree, else they all forget it. */
static ls_status register_on_workers(adapter_service *s, adapter *a, const char *dir, ls_error *err)
{
    plan_reset(&s->ctl, PLAN_ADAPTER_REGISTER, 0);
    s->ctl.h.arg = a->id;
    plan_set_bytes(&s->ctl, dir, (int)strlen(dir));
    channel_send_plan(s->ch, &s->ctl);
    channel_report mine = { .code = LS_OK }, *all = ls_xcalloc((size_t)s->ch->size, sizeof *all);
    channel_gather_reports(s->ch, &mine, all);
    ls_status st = LS_OK;
    for (int i = 1; i < s->ch->size && st == LS_OK; i++)
        if (all[i].code != LS_OK) st = ls_fail(err, (ls_status)all[i].code, "rank %d: %s", i, all[i].msg);
    free(all);
    if (st != LS_OK) {
        plan_reset(&s->ctl, PLAN_ADAPTER_DROP, 0);
        s->ctl.h.arg = a->id;
        channel_send_plan(s->ch, &s->ctl);
    }
    return st;
}

/* Finds or registers the adapter called name; *out is NULL on error. */
static ls_status ensure_registered(adapter_service *s, const char *name, adapter **out, ls_error *err)
{
    *out = adapter_registry_find(&s->sched->adapters, name);
    if (*out) return LS_OK;
    if (!s->o.root[0])
        return ls_fail(err, LS_FAILED_PRECONDITION, "no --adapters root is configured: cannot load '%s'", name);
    char dir[4096];
    ls_status st = peft_resolve_name(s->o.root, name, dir, sizeof dir, err);
    if (st != LS_OK) return st;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return ls_fail(err, LS_NOT_FOUND, "adapter '%s' not found under %s", name, s->o.root);
    peft_adapter peft;
    memset(&peft, 0, sizeof peft);
    peft_opts po = { .served_model_name = s->o.served_model, .allow_base_mismatch = s->o.allow_base_mismatch };
    if ((st = peft_read_config(&peft, dir, s->mc, &po, err)) != LS_OK) {
        peft_adapter_free(&peft);
        return ls_error_wrap(err, "adapter '%s'", name);
    }
    size_t page_floats = lora_page_floats(s->mc, s->o.tp_size, s->o.page_tokens);
    int n_pages = lora_layout_pages(s->mc, &peft.shape, s->o.tp_size, page_floats);
    if (n_pages > s->sched->o.n_pages / 2) {    // it must leave room for the KV of its own requests
        peft_adapter_free(&peft);
        return ls_fail(err, LS_RESOURCE_EXHAUSTED, "adapter '%s' needs %d pool pages, more than half of the pool's %d",
                       name, n_pages, s->sched->o.n_pages);
    }
    adapter *a = adapter_registry_add(&s->sched->adapters, name, &peft, n_pages);
    if ((st = register_on_workers(s, a, dir, err)) != LS_OK) {
        adapter_registry_remove(&s->sched->adapters, &s->sched->pool, a);
        return ls_error_wrap(err, "adapter '%s'", name);
    }
    LOG_I("registered adapter %s (slot %d, max rank %d, %d pages)", name, a->id, a->peft.shape.max_rank, n_pages);
    *out = a;
    return LS_OK;
}

static void run_parked(adapter_service *s, adapter_ready_fn ready, void *ctx)
{
    request *list = s->parked;
    s->parked = NULL;
    s->n_parked = 0;
    while (list) {
        request *r = list;
        list = r->next;
        r->next = NULL;
        if (r->cancelled) {
            ready(ctx, r, LS_CANCELLED, "cancelled");
            continue;
        }
        adapter *a;
        ls_error err = { 0 };
        if (ensure_registered(s, r->adapter_name, &a, &err) != LS_OK) {
            ready(ctx, r, err.code, err.msg);
            continue;
        }
        attach(r, a);
        ready(ctx, r, LS_OK, NULL);
    }
}

/* AdapterInfo of a registered adapter; strings point into a (valid while a lives). */
static void fill_info(const adapter *a, Loraserve__V1__AdapterInfo *info, char **targets, size_t *n_targets)
{
    loraserve__v1__adapter_info__init(info);
    info->name = (char *)a->name;
    info->max_rank = (uint32_t)a->peft.shape.max_rank;
    info->resident = a->resident;
    info->pages = (uint32_t)a->n_pages;
    info->active_requests = (uint32_t)a->active;
    info->loads = a->loads;
    *n_targets = 0;
    for (int m = 0; m < LORA_N_MODULES; m++)
        for (int l = 0; l < a->peft.shape.n_layers; l++)
            if (a->peft.shape.rank[l * LORA_N_MODULES + m]) {
                targets[(*n_targets)++] = (char *)lora_module_name((lora_module)m);
                break;
            }
    info->target_modules = targets;
    info->n_target_modules = *n_targets;
}

static void answer_load(server_call *call, const adapter *a)
{
    Loraserve__V1__AdapterInfo info;
    char *targets[LORA_N_MODULES];
    size_t n;
    fill_info(a, &info, targets, &n);
    Loraserve__V1__LoadAdapterResponse rsp = LORASERVE__V1__LOAD_ADAPTER_RESPONSE__INIT;
    rsp.adapter = &info;
    server_call_finish_msg(call, &rsp.base, LS_OK, NULL);
}

static void answer_list(adapter_service *s, server_call *call)
{
    adapter_registry *reg = &s->sched->adapters;
    Loraserve__V1__AdapterInfo *infos = ls_xcalloc((size_t)reg->n + 1, sizeof *infos);
    Loraserve__V1__AdapterInfo **ptrs = ls_xcalloc((size_t)reg->n + 1, sizeof *ptrs);
    char **targets = ls_xcalloc(((size_t)reg->n + 1) * LORA_N_MODULES, sizeof *targets);
    size_t k = 0, n;
    for (int i = 0; i < reg->cap; i++)
        if (reg->slots[i]) {
            fill_info(reg->slots[i], &infos[k], targets + k * LORA_N_MODULES, &n);
            ptrs[k] = &infos[k];
            k++;
        }
    Loraserve__V1__ListAdaptersResponse rsp = LORASERVE__V1__LIST_ADAPTERS_RESPONSE__INIT;
    rsp.adapters = ptrs;
    rsp.n_adapters = k;
    server_call_finish_msg(call, &rsp.base, LS_OK, NULL);
    free(infos);
    free(ptrs);
    free(targets);
}

/* Unload: only an adapter no request holds; its slot is dropped on every rank. */
static void do_unload(adapter_service *s, admin_op *op)
{
    adapter *a = adapter_registry_find(&s->sched->adapters, op->name);
    if (!a) {
        server_call_finish_msg(op->call, NULL, LS_NOT_FOUND, "no adapter of that name is loaded");
        return;
    }
    if (a->active) {
        char why[512];
        snprintf(why, sizeof why, "adapter '%s' is used by %d queued or running requests; unload it once they finish",
                 a->name, a->active);
        server_call_finish_msg(op->call, NULL, LS_FAILED_PRECONDITION, why);
        return;
    }
    plan_reset(&s->ctl, PLAN_ADAPTER_DROP, 0);
    s->ctl.h.arg = a->id;
    channel_send_plan(s->ch, &s->ctl);
    LOG_I("unloaded adapter %s (slot %d)", a->name, a->id);
    adapter_registry_remove(&s->sched->adapters, &s->sched->pool, a);
    Loraserve__V1__UnloadAdapterResponse rsp = LORASERVE__V1__UNLOAD_ADAPTER_RESPONSE__INIT;
    server_call_finish_msg(op->call, &rsp.base, LS_OK, NULL);
}

static void run_admin(adapter_service *s)
{
    while (s->ops) {
        admin_op *op = s->ops;
        s->ops = op->next;
        if (op->m == SERVER_ADMIN_UNLOAD) {
            do_unload(s, op);
        } else {
            adapter *a;
            ls_error err = { 0 };
            if (ensure_registered(s, op->name, &a, &err) == LS_OK) answer_load(op->call, a);
            else server_call_finish_msg(op->call, NULL, err.code, err.msg);
        }
        free(op);
    }
    s->ops_tail = NULL;
}

ls_status adapter_service_admin(adapter_service *s, server_call *call, server_admin_method m,
                                const ProtobufCMessage *req, ls_error *err)
{
    if (m == SERVER_ADMIN_LIST) {
        answer_list(s, call);
        return LS_OK;
    }
    const char *name = m == SERVER_ADMIN_LOAD ? ((const Loraserve__V1__LoadAdapterRequest *)req)->name
                                              : ((const Loraserve__V1__UnloadAdapterRequest *)req)->name;
    if (!name || !name[0]) return ls_fail(err, LS_INVALID_ARGUMENT, "adapter name is empty");
    if (strlen(name) >= sizeof ((admin_op *)0)->name)
        return ls_fail(err, LS_INVALID_ARGUMENT, "adapter name is longer than %zu bytes", sizeof ((admin_op *)0)->name - 1);
    admin_op *op = ls_xcalloc(1, sizeof *op);
    op->call = call;
    op->m = m;
    snprintf(op->name, sizeof op->name, "%s", name);
    if (s->ops_tail) s->ops_tail->next = op; else s->ops = op;
    s->ops_tail = op;
    return LS_OK;
}

void adapter_service_run(adapter_service *s, adapter_ready_fn ready, void *ctx)
{
    run_parked(s, ready, ctx);
    run_admin(s);
}

void adapter_service_fail_all(adapter_service *s, adapter_ready_fn ready, void *ctx, ls_status st, const char *why)
{
    while (s->parked) {
        request *r = s->parked;
        s->parked = r->next;
        r->next = NULL;
        ready(ctx, r, st, why);
    }
    s->n_parked = 0;
    while (s->ops) {
        admin_op *op = s->ops;
        s->ops = op->next;
        server_call_finish_msg(op->call, NULL, st, why);
        free(op);
    }
    s->ops_tail = NULL;
}
