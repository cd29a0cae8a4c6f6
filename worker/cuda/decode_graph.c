/* CUDA graphs for decode steps (see decode_graph.h). */
#include "worker/cuda/decode_graph.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

void decode_graphs_init(decode_graphs *d, int cap, int enabled)
{
    memset(d, 0, sizeof *d);
    d->enabled = enabled;
    d->cap = cap > 0 ? cap : 1;
    d->g = ls_xcalloc((size_t)d->cap, sizeof *d->g);
}

static int same_key(const decode_graph *g, const decode_graph_key *k)
{
    if (g->n_tokens != k->n_tokens || g->n_seqs != k->n_seqs || g->lora_max_rank != k->lora_max_rank) return 0;
    return !k->lora_max_rank || !memcmp(g->lora_slots, k->lora_slots, (size_t)k->n_slots);
}

static void drop(decode_graph *g)
{
    if (g->exec) cudaGraphExecDestroy(g->exec);
    free(g->lora_slots);
    memset(g, 0, sizeof *g);
}

/* The cache entry for key: a free one, else the least recently used, emptied. */
static decode_graph *slot_for(decode_graphs *d)
{
    if (d->n < d->cap) return &d->g[d->n++];
    decode_graph *lru = &d->g[0];
    for (int i = 1; i < d->n; i++)
        if (d->g[i].last_used < lru->last_used) lru = &d->g[i];
    drop(lru);
    return lru;
}

/* Captures the body into a new graph. On a capture the runtime refused (an operation graphs cannot
 * hold), graphs are turned off for good and *exec stays NULL: the caller runs the body eagerly. */
static ls_status capture(decode_graphs *d, cudaStream_t stream, decode_graph_body body, void *ctx,
                         cudaGraphExec_t *exec, ls_error *err)
{
    *exec = NULL;
    cudaError_t e = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        LOG_W("decode steps run without CUDA graphs: cudaStreamBeginCapture: %s", cudaGetErrorString(e));
        d->enabled = 0;
        return LS_OK;
    }
    ls_error body_err = { 0 };
    body(ctx, &body_err);
    cudaGraph_t graph = NULL;
    e = cudaStreamEndCapture(stream, &graph);
    if (body_err.code) {
        if (graph) cudaGraphDestroy(graph);
        *err = body_err;
        return (ls_status)body_err.code;
    }
    if (e == cudaSuccess) e = cudaGraphInstantiate(exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (e != cudaSuccess) {
        cudaGetLastError();     // clear the failed capture's error so the eager run starts clean
        LOG_W("decode steps run without CUDA graphs: capture failed: %s", cudaGetErrorString(e));
        *exec = NULL;
        d->enabled = 0;
    }
    return LS_OK;
}

ls_status decode_graphs_run(decode_graphs *d, const decode_graph_key *key, cudaStream_t stream,
                            decode_graph_body body, void *ctx, ls_error *err)
{
    decode_graph *g = NULL;
    for (int i = 0; i < d->n && d->enabled; i++)
        if (same_key(&d->g[i], key)) g = &d->g[i];
    if (d->enabled && !g) {
        cudaGraphExec_t exec;
        ls_status st = capture(d, stream, body, ctx, &exec, err);
        if (st != LS_OK) return st;
        if (exec) {
            g = slot_for(d);
            g->n_tokens = key->n_tokens;
            g->n_seqs = key->n_seqs;
            g->lora_max_rank = key->lora_max_rank;
            if (key->lora_max_rank) {
                g->lora_slots = ls_xmalloc((size_t)key->n_slots);
                memcpy(g->lora_slots, key->lora_slots, (size_t)key->n_slots);
            }
            g->exec = exec;
            d->captures++;
        }
    }
    if (!g) {
        ls_error body_err = { 0 };
        body(ctx, &body_err);
        if (body_err.code) *err = body_err;
        return (ls_status)body_err.code;
    }
    g->last_used = ++d->clock;
    d->replays++;
    cudaError_t e = cudaGraphLaunch(g->exec, stream);
    if (e != cudaSuccess)
        return ls_fail(err, LS_INTERNAL, "cudaGraphLaunch: %s", cudaGetErrorString(e));
    return LS_OK;
}

void decode_graphs_free(decode_graphs *d)
{
    for (int i = 0; i < d->n; i++) drop(&d->g[i]);
    free(d->g);
    memset(d, 0, sizeof *d);
}
