/* Writing safetensors files (the model generator; tests that need valid weights or adapters) and the
 * fp32 -> fp16/bf16 narrowing they use. Output matches what the reference writer produces: header
 * space-padded so the data section starts 8-byte aligned, offsets in the order tensors are given.
 * The file appears under its final name only once complete (written to "<path>.tmp", then renamed),
 * so a crash never leaves a half-written model that a later start-up would trust. */
#include "common/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

struct st_writer {
    int fd;
    char *path, *tmp_path;      // owned
    uint64_t expected, written; // data bytes
};

typedef struct sbuf { char *p; size_t len, cap; } sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        LS_ASSERT(n >= 0);
        if ((size_t)n < b->cap - b->len) { b->len += (size_t)n; return; }
        b->cap = 2 * b->cap + (size_t)n + 64;
        b->p = ls_xrealloc(b->p, b->cap);
    }
}

static void sb_json_string(sbuf *b, const char *s)
{
    sb_printf(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') sb_printf(b, "\\%c", c);
        else if (c < 0x20) sb_printf(b, "\\u%04x", c);
        else sb_printf(b, "%c", c);
    }
    sb_printf(b, "\"");
}

int st_spec_nbytes(const st_spec *s, size_t *out)
{
    uint64_t n = st_dtype_size(s->dtype);
    if (!n || s->n_dims < 0 || s->n_dims > ST_MAX_DIMS) return 0;
    for (int i = 0; i < s->n_dims; i++)
        if (s->shape[i] < 0 || __builtin_mul_overflow(n, (uint64_t)s->shape[i], &n)) return 0;
    if (n > SIZE_MAX) return 0;
    *out = (size_t)n;
    return 1;
}

static ls_status build_header(sbuf *b, const st_spec *specs, size_t n, uint64_t *total, ls_error *err)
{
    sb_printf(b, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        size_t nbytes;
        if (!st_spec_nbytes(&specs[i], &nbytes))
            return ls_fail(err, LS_INVALID_ARGUMENT, "tensor \"%s\": bad shape or dtype", specs[i].name);
        sb_printf(b, ",");
        sb_json_string(b, specs[i].name);
        sb_printf(b, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(specs[i].dtype));
        for (int d = 0; d < specs[i].n_dims; d++) sb_printf(b, "%s%lld", d ? "," : "", (long long)specs[i].shape[d]);
        sb_printf(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at, (unsigned long long)(at + nbytes));
        at += nbytes;
    }
    sb_printf(b, "}");
    while (b->len % 8) sb_printf(b, " ");
    *total = at;
    return LS_OK;
}

static ls_status write_all(st_writer *w, const void *data, size_t n, ls_error *err)
{
    const char *p = data;
    while (n) {
        ssize_t r = write(w->fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return ls_fail(err, LS_INTERNAL, "%s: write: %s", w->tmp_path, strerror(errno));
        p += r;
        n -= (size_t)r;
    }
    return LS_OK;
}

static void writer_free(st_writer *w)
{
    if (w->fd >= 0) close(w->fd);
    if (w->tmp_path) unlink(w->tmp_path);     // a no-op once renamed
    free(w->path);
    free(w->tmp_path);
    free(w);
}

ls_status st_writer_open(st_writer **out, const char *path, const st_spec *specs, size_t n, ls_error *err)
{
    *out = NULL;
    sbuf hdr = { 0 };
    uint64_t total = 0;
    ls_status rc = build_header(&hdr, specs, n, &total, err);
    if (rc) { free(hdr.p); return rc; }
    st_writer *w = ls_xcalloc(1, sizeof *w);
    w->path = strdup(path);
    size_t tl = strlen(path) + 5;
    w->tmp_path = ls_xmalloc(tl);
    snprintf(w->tmp_path, tl, "%s.tmp", path);
    w->expected = total;
    w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        rc = ls_fail(err, LS_INVALID_ARGUMENT, "%s: %s", w->tmp_path, strerror(errno));
        free(w->tmp_path);
        w->tmp_path = NULL;         // nothing to unlink
    } else {
        unsigned char len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hdr.len >> (8 * i));
        rc = write_all(w, len8, 8, err);
        if (!rc) rc = write_all(w, hdr.p, hdr.len, err);
    }
    free(hdr.p);
    if (rc) { writer_free(w); return rc; }
    *out = w;
    return LS_OK;
}

ls_status st_writer_put(st_writer *w, const void *data, size_t nbytes, ls_error *err)
{
    if (nbytes > w->expected - w->written)
        return ls_fail(err, LS_INVALID_ARGUMENT, "%s: more data than the header announced", w->path);
    w->written += nbytes;
    return write_all(w, data, nbytes, err);
}

ls_status st_writer_close(st_writer *w, ls_error *err)
{
    if (!w) return LS_OK;
    ls_status rc = LS_OK;
    if (w->written != w->expected)
        rc = ls_fail(err, LS_INVALID_ARGUMENT, "%s: %llu of %llu data bytes written", w->path,
                     (unsigned long long)w->written, (unsigned long long)w->expected);
    if (!rc && close(w->fd)) rc = ls_fail(err, LS_INTERNAL, "%s: close: %s", w->tmp_path, strerror(errno));
    w->fd = -1;
    if (!rc && rename(w->tmp_path, w->path))
        rc = ls_fail(err, LS_INTERNAL, "%s: rename: %s", w->path, strerror(errno));
    writer_free(w);
    return rc;
}

ls_status st_write(const char *path, const st_spec *specs, const void *const *data, size_t n, ls_error *err)
{
    st_writer *w;
    ls_status rc = st_writer_open(&w, path, specs, n, err);
    for (size_t i = 0; !rc && i < n; i++) {
        size_t nbytes = 0;
        st_spec_nbytes(&specs[i], &nbytes);
        rc = st_writer_put(w, data[i], nbytes, err);
    }
    if (rc) { st_writer_close(w, NULL); return rc; }
    return st_writer_close(w, err);
}

uint16_t st_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)(x >> 16 | 0x40);   // NaN stays NaN, quiet
    return (uint16_t)((x + 0x7FFFu + (x >> 16 & 1)) >> 16);
}

/* Values below 2^-14 become f16 subnormals: an integer count of 2^-24 steps, rounded to even. */
static uint16_t f16_subnormal(uint32_t ax)
{
    uint32_t e = ax >> 23;
    if (e < 102) return 0;                        // below 2^-25: rounds to zero
    uint32_t mant = (ax & 0x7FFFFFu) | 0x800000u, shift = 126 - e;
    uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    return (uint16_t)(q + (rem > half || (rem == half && (q & 1))));
}

uint16_t st_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)(x >> 16 & 0x8000);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return sign | 0x7E00 | (uint16_t)(ax >> 13 & 0x3FF);
    if (ax >= 0x477FF000u) return sign | 0x7C00;            // >= 65520 rounds past 65504: inf
    if (ax < 0x38800000u) return sign | f16_subnormal(ax);
    ax -= 112u << 23;                                       // rebias 127 -> 15
    return sign | (uint16_t)((ax + 0xFFFu + (ax >> 13 & 1)) >> 13);
}
