/* The safetensors reader behind safetensors.h. The header is read with pread and validated in full
 * (reliability.md §1.2-1.3, checklist rows 1-13) before the file is mapped, so a hostile file never
 * causes an allocation sized by an unchecked number or a read outside the data section. Sizes are
 * computed in uint64 with overflow checks and a zero-sized tensor skips no check. */
#include "common/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/json.h"
#include "common/log.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian; loads are raw");

#define ST_MAX_TENSORS 100000
#define ST_MAX_VALUE ((uint64_t)1 << 48)   // the schema's cap on every dim and offset

struct st_file {
    void *map;                  // owned mapping of the whole file, read-only
    size_t map_len;             // bytes
    json_doc *header;           // owned; backs the tensor names
    st_tensor *tensors;         // owned, n, in data order
    size_t n;
    size_t *by_name;            // owned, n indices sorted by name, for st_find
};

typedef struct dtype_info { const char *name; st_dtype dtype; size_t size; } dtype_info;

static const dtype_info dtypes[] = {
    { "F32", ST_F32, 4 }, { "F16", ST_F16, 2 }, { "BF16", ST_BF16, 2 }, { "I32", ST_I32, 4 },
    { "I64", ST_I64, 8 }, { "U8", ST_U8, 1 }, { "I8", ST_I8, 1 }, { "BOOL", ST_BOOL, 1 }, { "F64", ST_F64, 8 },
};

/* Real safetensors dtypes that no kernel of ours reads: named as unsupported rather than unknown. */
static const char *const unsupported_dtypes[] = {
    "F4", "F6_E2M3", "F6_E3M2", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ",
    "I16", "U16", "U32", "U64", "C64",
};

int st_dtype_parse(const char *name, st_dtype *out)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(name, dtypes[i].name)) { *out = dtypes[i].dtype; return 1; }
    return 0;
}

static const dtype_info *dtype_lookup(st_dtype t)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dtype == t) return &dtypes[i];
    return NULL;
}

size_t st_dtype_size(st_dtype t) { const dtype_info *d = dtype_lookup(t); return d ? d->size : 0; }
const char *st_dtype_name(st_dtype t) { const dtype_info *d = dtype_lookup(t); return d ? d->name : "?"; }

static ls_status bad(ls_error *err, const char *name, const char *fmt, const char *detail)
{
    return ls_fail(err, LS_INVALID_ARGUMENT, "tensor \"%.200s\": %s%s", name, fmt, detail ? detail : "");
}

static ls_status parse_dtype(const json *v, const char *name, st_tensor *t, ls_error *err)
{
    if (v->type != JSON_STRING) return bad(err, name, "dtype must be a string", NULL);
    if (st_dtype_parse(v->str, &t->dtype)) return LS_OK;
    for (size_t i = 0; i < sizeof unsupported_dtypes / sizeof unsupported_dtypes[0]; i++)
        if (!strcmp(v->str, unsupported_dtypes[i])) return bad(err, name, "unsupported dtype ", v->str);
    return bad(err, name, "unknown dtype ", v->str);
}

static int small_uint(const json *v, uint64_t *out)
{
    if (v->type != JSON_NUMBER || !v->is_integer || v->integer < 0 || (uint64_t)v->integer >= ST_MAX_VALUE)
        return 0;
    *out = (uint64_t)v->integer;
    return 1;
}

/* Shape and its byte size: every product checked, so [2^32, 2^32] cannot wrap to a small size. */
static ls_status parse_shape(const json *v, const char *name, st_tensor *t, uint64_t *nbytes, ls_error *err)
{
    if (v->type != JSON_ARRAY) return bad(err, name, "shape must be an array", NULL);
    if (v->len > ST_MAX_DIMS) return bad(err, name, "too many dimensions", NULL);
    uint64_t numel = 1;
    for (size_t i = 0; i < v->len; i++) {
        uint64_t d;
        if (!small_uint(&v->items[i], &d))
            return bad(err, name, "shape entries must be integers in [0, 2^48)", NULL);
        if (__builtin_mul_overflow(numel, d, &numel)) return bad(err, name, "shape product overflow", NULL);
        t->shape[i] = (int64_t)d;
    }
    t->n_dims = (int)v->len;
    if (numel > SIZE_MAX || __builtin_mul_overflow(numel, (uint64_t)st_dtype_size(t->dtype), nbytes))
        return bad(err, name, "byte size overflow", NULL);
    t->numel = (size_t)numel;
    return LS_OK;
}

static ls_status parse_offsets(const json *v, const char *name, uint64_t off[2], ls_error *err)
{
    if (v->type != JSON_ARRAY || v->len != 2 || !small_uint(&v->items[0], &off[0]) ||
        !small_uint(&v->items[1], &off[1]))
        return bad(err, name, "invalid offset: data_offsets must be two integers in [0, 2^48)", NULL);
    if (off[1] < off[0]) return bad(err, name, "invalid offset: end before begin", NULL);
    return LS_OK;
}

/* Exactly dtype, shape and data_offsets: an extra field may carry meaning we would silently drop. */
static ls_status parse_entry(const char *name, size_t name_len, const json *v, st_tensor *t, uint64_t off[2],
                             ls_error *err)
{
    // st_find compares C strings, so "a\u0000b" would shadow "a".
    if (strlen(name) != name_len) return bad(err, name, "name contains a NUL byte", NULL);
    if (v->type != JSON_OBJECT) return bad(err, name, "entry must be an object", NULL);
    const json *dtype = json_get(v, "dtype"), *shape = json_get(v, "shape"), *offs = json_get(v, "data_offsets");
    if (!dtype || !shape || !offs) return bad(err, name, "needs dtype, shape and data_offsets", NULL);
    if (v->len != 3) return bad(err, name, "unexpected field besides dtype, shape and data_offsets", NULL);
    uint64_t nbytes = 0;
    ls_status rc;
    if ((rc = parse_dtype(dtype, name, t, err)) || (rc = parse_shape(shape, name, t, &nbytes, err)) ||
        (rc = parse_offsets(offs, name, off, err)))
        return rc;
    if (off[1] - off[0] != nbytes)
        return ls_fail(err, LS_INVALID_ARGUMENT,
                       "tensor \"%.200s\": tensor invalid info: %llu bytes in data_offsets, shape x dtype needs %llu",
                       name, (unsigned long long)(off[1] - off[0]), (unsigned long long)nbytes);
    t->name = name;
    t->nbytes = (size_t)nbytes;
    return LS_OK;
}

static ls_status check_metadata(const json *v, ls_error *err)
{
    if (v->type != JSON_OBJECT) return ls_fail(err, LS_INVALID_ARGUMENT, "__metadata__ must be an object");
    for (size_t i = 0; i < v->len; i++)
        if (v->items[i].type != JSON_STRING)
            return ls_fail(err, LS_INVALID_ARGUMENT, "__metadata__ values must be strings (\"%.200s\" is not)",
                           v->keys[i]);
    return LS_OK;
}

typedef struct span { uint64_t begin, end; size_t index; } span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* The tensors must tile [0, data_len) exactly: no gap (a polyglot hiding place), no overlap (a
 * memory-amplification trick), nothing past the end of the file. */
static ls_status check_tiling(span *spans, size_t n, uint64_t data_len, const st_tensor *t, ls_error *err)
{
    qsort(spans, n, sizeof *spans, span_cmp);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (spans[i].begin != at)
            return ls_fail(err, LS_INVALID_ARGUMENT,
                           "tensor \"%.200s\": invalid offset: begins at %llu, expected %llu (%s)",
                           t[spans[i].index].name, (unsigned long long)spans[i].begin, (unsigned long long)at,
                           spans[i].begin > at ? "gap" : "overlap");
        at = spans[i].end;
    }
    if (at < data_len)
        return ls_fail(err, LS_INVALID_ARGUMENT, "incomplete buffer: %llu trailing bytes after the last tensor",
                       (unsigned long long)(data_len - at));
    if (at > data_len)
        return ls_fail(err, LS_INVALID_ARGUMENT,
                       "incomplete buffer: tensors need %llu data bytes, the file has %llu (truncated)",
                       (unsigned long long)at, (unsigned long long)data_len);
    return LS_OK;
}

static ls_status parse_header(st_file *f, const json *root, uint64_t data_len, span **spans, ls_error *err)
{
    if (root->type != JSON_OBJECT) return ls_fail(err, LS_INVALID_ARGUMENT, "header is not a JSON object");
    if (root->len > ST_MAX_TENSORS)
        return ls_fail(err, LS_INVALID_ARGUMENT, "too many tensors (%zu, cap %d)", root->len, ST_MAX_TENSORS);
    f->tensors = ls_xcalloc(root->len, sizeof *f->tensors);
    *spans = ls_xcalloc(root->len, sizeof **spans);
    for (size_t i = 0; i < root->len; i++) {
        ls_status rc;
        if (!strcmp(root->keys[i], "__metadata__")) {
            if ((rc = check_metadata(&root->items[i], err))) return rc;
            continue;
        }
        st_tensor *t = &f->tensors[f->n];
        uint64_t off[2] = { 0, 0 };
        if ((rc = parse_entry(root->keys[i], root->key_lens[i], &root->items[i], t, off, err))) return rc;
        (*spans)[f->n] = (span){ off[0], off[1], f->n };
        f->n++;
    }
    return check_tiling(*spans, f->n, data_len, f->tensors, err);
}

static int name_cmp_ctx(const void *a, const void *b, void *ctx)
{
    const st_tensor *t = ctx;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

/* Puts tensors in data order (spans are sorted) and builds the by-name index. */
static void index_tensors(st_file *f, const span *spans, const char *data)
{
    st_tensor *ordered = ls_xcalloc(f->n ? f->n : 1, sizeof *ordered);
    for (size_t i = 0; i < f->n; i++) {
        ordered[i] = f->tensors[spans[i].index];
        ordered[i].data = data + spans[i].begin;
    }
    free(f->tensors);
    f->tensors = ordered;
    f->by_name = ls_xcalloc(f->n ? f->n : 1, sizeof *f->by_name);
    for (size_t i = 0; i < f->n; i++) f->by_name[i] = i;
    qsort_r(f->by_name, f->n, sizeof *f->by_name, name_cmp_ctx, f->tensors);
}

static ls_status pread_all(int fd, void *buf, size_t n, off_t at, ls_error *err)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, at + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return ls_fail(err, LS_INVALID_ARGUMENT, "read: %s", r ? strerror(errno) : "unexpected EOF");
        got += (size_t)r;
    }
    return LS_OK;
}

/* The 8-byte length, checked against the cap and the file size before anything is allocated. */
static ls_status read_header(int fd, uint64_t file_size, json_doc **doc, uint64_t *header_len, ls_error *err)
{
    if (file_size < 8) return ls_fail(err, LS_INVALID_ARGUMENT, "header too small (%llu bytes)", (unsigned long long)file_size);
    unsigned char b[8];
    ls_status rc = pread_all(fd, b, 8, 0, err);
    if (rc) return rc;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    if (n > ST_MAX_HEADER_BYTES)
        return ls_fail(err, LS_INVALID_ARGUMENT, "header too large (%llu bytes, cap %u)", (unsigned long long)n,
                       ST_MAX_HEADER_BYTES);
    if (n > file_size - 8)
        return ls_fail(err, LS_INVALID_ARGUMENT, "invalid header length %llu for a %llu-byte file",
                       (unsigned long long)n, (unsigned long long)file_size);
    char *text = ls_xmalloc((size_t)n);
    rc = pread_all(fd, text, (size_t)n, 8, err);
    if (!rc && !json_utf8_valid(text, (size_t)n))
        rc = ls_fail(err, LS_INVALID_ARGUMENT, "invalid header: not valid UTF-8");
    if (!rc && (rc = json_parse(doc, text, (size_t)n, err))) ls_error_wrap(err, "invalid header");
    free(text);
    *header_len = n;
    return rc;
}

static ls_status open_fd(st_file *f, int fd, ls_error *err)
{
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) return ls_fail(err, LS_INVALID_ARGUMENT, "not a regular file");
    uint64_t size = (uint64_t)st.st_size, header_len = 0;
    span *spans = NULL;
    ls_status rc = read_header(fd, size, &f->header, &header_len, err);
    if (!rc) rc = parse_header(f, json_root(f->header), size - 8 - header_len, &spans, err);
    if (!rc) {
        f->map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            rc = ls_fail(err, LS_INVALID_ARGUMENT, "mmap: %s", strerror(errno));
        } else {
            f->map_len = size;
            index_tensors(f, spans, (const char *)f->map + 8 + header_len);
        }
    }
    free(spans);
    return rc;
}

ls_status st_open(st_file **out, const char *path, ls_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ls_fail(err, errno == ENOENT ? LS_NOT_FOUND : LS_INVALID_ARGUMENT, "%s: %s", path, strerror(errno));
    st_file *f = ls_xcalloc(1, sizeof *f);
    ls_status rc = open_fd(f, fd, err);
    close(fd);
    if (rc) {
        ls_error_wrap(err, "%s", path);
        st_close(f);
        return rc;
    }
    *out = f;
    return LS_OK;
}

void st_close(st_file *f)
{
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    json_free(f->header);
    free(f->tensors);
    free(f->by_name);
    free(f);
}

size_t st_count(const st_file *f) { return f->n; }
const st_tensor *st_at(const st_file *f, size_t i) { return i < f->n ? &f->tensors[i] : NULL; }

const st_tensor *st_find(const st_file *f, const char *name)
{
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (!c) return t;
        if (c < 0) hi = mid; else lo = mid + 1;
    }
    return NULL;
}

float st_bf16_to_f32(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0) {
        float f = (float)mant * 0x1p-24f;           // zero or subnormal: exact in fp32
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | mant << 13;     // inf, or NaN keeping its payload
    } else {
        bits = sign | (exp + 112) << 23 | mant << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* The mapping need not be aligned for the element type (the header length is arbitrary), so elements
 * are loaded with memcpy. */
void st_to_f32(float *dst, const st_tensor *t, size_t first, size_t n)
{
    LS_ASSERT(first <= t->numel && n <= t->numel - first);
    const unsigned char *src = (const unsigned char *)t->data + first * st_dtype_size(t->dtype);
    if (t->dtype == ST_F32) { memcpy(dst, src, n * 4); return; }
    LS_ASSERT(t->dtype == ST_F16 || t->dtype == ST_BF16);
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
    }
}
