/* safetensors.h against hand-crafted files, one per rule of reliability.md §1.2/§1.3 and checklist rows
 * 1-13 (each must fail with a message naming the rule and the tensor, and return no file), valid edge
 * cases the reference reader accepts (padding, zero-sized and rank-0 tensors, unaligned data), the
 * writer's round trip, and the fp16/bf16 conversions against the compiler's own _Float16 and an
 * independent nearest-even oracle. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/safetensors.h"
#include "tests/tap.h"

typedef struct ctx { char dir[64]; char path[128]; } ctx;

/* header N field, header text, data bytes: any of them may lie. */
static void write_raw(ctx *c, uint64_t n_field, const char *header, const void *data, size_t data_len)
{
    FILE *f = fopen(c->path, "wb");
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(n_field >> (8 * i));
    fwrite(b, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (data_len) fwrite(data, 1, data_len, f);
    fclose(f);
}

static void write_file(ctx *c, const char *header, size_t data_len)
{
    static const unsigned char zeros[256];
    write_raw(c, strlen(header), header, zeros, data_len);
}

static void expect_reject(ctx *c, const char *label, const char *needle, const char *needle2)
{
    st_file *f = (st_file *)1;
    ls_error err = { 0 };
    ls_status rc = st_open(&f, c->path, &err);
    int ok = rc == LS_INVALID_ARGUMENT && f == NULL && strstr(err.msg, needle) &&
             (!needle2 || strstr(err.msg, needle2)) && strstr(err.msg, c->path);
    TAP_OK(ok, "%s -> %s", label, err.msg);
    if (rc == LS_OK) st_close(f);
}

static st_file *expect_open(ctx *c, const char *label)
{
    st_file *f = NULL;
    ls_error err = { 0 };
    ls_status rc = st_open(&f, c->path, &err);
    TAP_OK(rc == LS_OK && f, "%s opens%s%s", label, rc ? ": " : "", rc ? err.msg : "");
    return f;
}

#define T(name, body) "\"" name "\":{" body "}"

static void test_framing(ctx *c)
{
    write_raw(c, 0, "", NULL, 0);
    FILE *f = fopen(c->path, "wb");
    fwrite("abcde", 1, 5, f);
    fclose(f);
    expect_reject(c, "row 1: 5-byte file", "header too small", NULL);
    write_raw(c, UINT64_MAX, "{}", NULL, 0);
    expect_reject(c, "row 2: N = 2^64-1", "header too large", NULL);
    write_raw(c, ST_MAX_HEADER_BYTES + 1ull, "{}", NULL, 0);
    expect_reject(c, "row 2: N = cap + 1", "header too large", NULL);
    write_raw(c, 1000, "{}", NULL, 0);
    expect_reject(c, "row 3: N beyond the file", "invalid header length", NULL);
    write_raw(c, 3, "{\xff}", NULL, 0);
    expect_reject(c, "row 4: header not UTF-8", "invalid header", "UTF-8");
    write_file(c, "{\"\xc0\xaf\":{}}", 0);
    expect_reject(c, "row 4: overlong UTF-8 in a name", "invalid header", "UTF-8");
    write_file(c, "{\"a\":", 0);
    expect_reject(c, "row 4: header not JSON", "invalid header", NULL);
    write_file(c, "[]", 0);
    expect_reject(c, "row 4: header is an array", "not a JSON object", NULL);
}

static void test_duplicates_and_offsets(ctx *c)
{
    write_file(c, "{" T("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]") ","
                      T("w", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]") "}", 8);
    expect_reject(c, "row 5: duplicate tensor name", "duplicate key \"w\"", NULL);
    write_file(c, "{" T("a", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]") ","
                      T("b", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]") "}", 12);
    expect_reject(c, "row 6: gap", "invalid offset", "\"b\"");
    write_file(c, "{" T("a", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]") ","
                      T("b", "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]") "}", 12);
    expect_reject(c, "row 6: overlap", "invalid offset", "overlap");
    write_file(c, "{" T("a", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]") "}", 8);
    expect_reject(c, "row 6: first tensor not at 0", "invalid offset", "\"a\"");
    write_file(c, "{" T("a", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]") "}", 9);
    expect_reject(c, "row 7: trailing byte (polyglot)", "incomplete buffer", "trailing");
    write_file(c, "{" T("a", "\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]") "}", 8);
    expect_reject(c, "row 8: truncated data", "incomplete buffer", "truncated");
    write_file(c, "{" T("a", "\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]") "}", 4);
    expect_reject(c, "row 9: end < begin", "invalid offset", "\"a\"");
    write_file(c, "{" T("a", "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]") "}", 4);
    expect_reject(c, "row 9: negative offset", "invalid offset", "\"a\"");
    write_file(c, "{" T("a", "\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[281474976710656,281474976710656]") "}", 0);
    expect_reject(c, "row 9: offset 2^48", "invalid offset", NULL);
    write_file(c, "{" T("a", "\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1.0]") "}", 1);
    expect_reject(c, "row 9: non-integer offset", "invalid offset", NULL);
    write_file(c, "{" T("a", "\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]") "}", 1);
    expect_reject(c, "row 9: one offset", "invalid offset", NULL);
}

static void test_sizes(ctx *c)
{
    write_file(c, "{" T("a", "\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]") "}", 0);
    expect_reject(c, "row 10: shape product wraps to 0", "overflow", "\"a\"");
    write_file(c, "{" T("a", "\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,0]") "}", 0);
    expect_reject(c, "row 10: byte size wraps to 0", "overflow", "\"a\"");
    write_file(c, "{" T("a", "\"dtype\":\"U8\",\"shape\":[281474976710656],\"data_offsets\":[0,0]") "}", 0);
    expect_reject(c, "row 10: dim 2^48", "shape entries", NULL);
    write_file(c, "{" T("a", "\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]") "}", 0);
    expect_reject(c, "row 10: negative dim", "shape entries", NULL);
    write_file(c, "{" T("a", "\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]") "}", 12);
    expect_reject(c, "row 11: bytes != shape x dtype", "tensor invalid info", "\"a\"");
    write_file(c, "{" T("a", "\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,4]") "}", 4);
    expect_reject(c, "row 11: size-0 shape with bytes", "tensor invalid info", NULL);
    write_file(c, "{" T("a", "\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]") "}", 1);
    expect_reject(c, "too many dimensions", "too many dimensions", NULL);
}

static void test_dtypes_and_fields(ctx *c)
{
    write_file(c, "{" T("a", "\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,1]") "}", 1);
    expect_reject(c, "row 12: F4", "unsupported dtype F4", "\"a\"");
    write_file(c, "{" T("a", "\"dtype\":\"C64\",\"shape\":[1],\"data_offsets\":[0,8]") "}", 8);
    expect_reject(c, "row 12: C64", "unsupported dtype C64", NULL);
    write_file(c, "{" T("a", "\"dtype\":\"Q4_K\",\"shape\":[1],\"data_offsets\":[0,1]") "}", 1);
    expect_reject(c, "row 12: unknown dtype", "unknown dtype Q4_K", NULL);
    write_file(c, "{\"__metadata__\":{\"format\":\"pt\",\"n\":1}}", 0);
    expect_reject(c, "row 13: non-string metadata", "__metadata__ values must be strings", "\"n\"");
    write_file(c, "{\"__metadata__\":[\"pt\"]}", 0);
    expect_reject(c, "row 13: metadata not an object", "__metadata__ must be an object", NULL);
    write_file(c, "{" T("a", "\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"extra\":0") "}", 1);
    expect_reject(c, "row 13: extra field", "unexpected field", "\"a\"");
    write_file(c, "{" T("a", "\"dtype\":\"U8\",\"shape\":[1]") "}", 1);
    expect_reject(c, "row 13: missing data_offsets", "needs dtype, shape and data_offsets", NULL);
    write_file(c, "{" T("a", "\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,1]") "}", 1);
    expect_reject(c, "row 13: dtype not a string", "dtype must be a string", NULL);
    write_file(c, "{" T("a", "\"dtype\":\"U8\",\"shape\":1,\"data_offsets\":[0,1]") "}", 1);
    expect_reject(c, "row 13: shape not an array", "shape must be an array", NULL);
    write_file(c, "{\"a\":[1]}", 0);
    expect_reject(c, "row 13: entry not an object", "entry must be an object", NULL);
    write_file(c, "{" T("a\\u0000b", "\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]") "}", 1);
    expect_reject(c, "NUL inside a tensor name", "NUL", NULL);
}

static void test_valid_edges(ctx *c)
{
    // Leading and trailing header padding, a rank-0 scalar, a zero-sized tensor, and a header length of
    // 5 mod 8 so the F32 data is misaligned in the mapping.
    const char *hdr = "  {\"__metadata__\":{\"format\":\"pt\"},"
                      T("z", "\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[0,0]") ","
                      T("s", "\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]") ","
                      T("v", "\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[4,8]") "}   ";
    float s = 3.25f;
    uint16_t v[2] = { 0x3F80, 0xC040 };     // 1.0, -3.0
    unsigned char data[8];
    memcpy(data, &s, 4);
    memcpy(data + 4, v, 4);
    char padded[512];
    snprintf(padded, sizeof padded, "%s%*s", hdr, (int)((13 - strlen(hdr) % 8) % 8), "");
    write_raw(c, strlen(padded), padded, data, 8);
    st_file *f = expect_open(c, "padded header, scalar, zero-sized tensor, misaligned data");
    if (!f) return;
    TAP_OK(st_count(f) == 3, "three tensors");
    const st_tensor *z = st_find(f, "z"), *sc = st_find(f, "s"), *bv = st_find(f, "v");
    TAP_OK(z && z->numel == 0 && z->n_dims == 2 && z->shape[0] == 3, "zero-sized tensor kept");
    float out[2] = { 0 };
    if (sc) st_to_f32(out, sc, 0, 1);
    TAP_OK(sc && sc->n_dims == 0 && sc->numel == 1 && out[0] == 3.25f, "rank-0 scalar reads 3.25");
    if (bv) st_to_f32(out, bv, 0, 2);
    TAP_OK(bv && out[0] == 1.0f && out[1] == -3.0f, "BF16 converts");
    TAP_OK(st_find(f, "missing") == NULL && st_at(f, 3) == NULL, "absent names");
    st_close(f);
    write_file(c, "{}", 0);
    f = expect_open(c, "empty header, no data");
    TAP_OK(f && st_count(f) == 0, "no tensors");
    st_close(f);
}

static void test_writer(ctx *c)
{
    float a[6] = { 1, -2, 3.5f, 0, 1e-3f, 65504 };
    uint16_t h[3], b[3];
    for (int i = 0; i < 3; i++) { h[i] = st_f32_to_f16(a[i]); b[i] = st_f32_to_bf16(a[i + 3]); }
    st_spec specs[] = {
        { "model.layers.0.w\"q", ST_F32, 2, { 2, 3 } }, { "h", ST_F16, 1, { 3 } }, { "b", ST_BF16, 1, { 3 } },
    };
    const void *data[] = { a, h, b };
    ls_error err = { 0 };
    TAP_OK(st_write(c->path, specs, data, 3, &err) == LS_OK, "st_write %s", err.msg);
    st_file *f = expect_open(c, "written file");
    if (!f) return;
    float out[6];
    const st_tensor *t = st_find(f, "model.layers.0.w\"q");
    if (t) st_to_f32(out, t, 0, 6);
    TAP_OK(t && t->dtype == ST_F32 && t->shape[1] == 3 && !memcmp(out, a, sizeof a), "F32 round trip");
    t = st_find(f, "h");
    if (t) st_to_f32(out, t, 1, 2);
    TAP_OK(t && out[0] == -2 && out[1] == 3.5f, "F16 round trip from an offset");
    t = st_find(f, "b");
    if (t) st_to_f32(out, t, 0, 3);
    TAP_OK(t && out[0] == 0 && fabsf(out[1] - 1e-3f) < 1e-5f && out[2] == 65536, "BF16 round trip (rounded)");
    st_close(f);
    unlink(c->path);
    st_writer *w;
    TAP_OK(st_writer_open(&w, c->path, specs, 1, &err) == LS_OK, "writer open");
    st_writer_put(w, a, 8, &err);
    TAP_OK(st_writer_close(w, &err) == LS_INVALID_ARGUMENT && access(c->path, F_OK) != 0,
           "short write fails and leaves no file: %s", err.msg);
}

/* Random byte flips and truncations of a valid file: each must open cleanly or fail cleanly, and an
 * accepted file's tensors must be readable end to end (run under valgrind/ASan to see stray reads). */
static void test_mutations(ctx *c)
{
    float a[12] = { 0 };
    uint16_t h[8] = { 0 };
    st_spec specs[] = { { "a", ST_F32, 2, { 3, 4 } }, { "h", ST_F16, 1, { 8 } }, { "e", ST_BF16, 1, { 0 } } };
    const void *data[] = { a, h, h };
    ls_error err = { 0 };
    st_write(c->path, specs, data, 3, &err);
    FILE *f = fopen(c->path, "rb");
    unsigned char orig[1024], buf[1024];
    size_t n = fread(orig, 1, sizeof orig, f);
    fclose(f);
    uint64_t x = 42;
    int accepted = 0, rounds = 3000;
    for (int i = 0; i < rounds; i++) {
        memcpy(buf, orig, n);
        size_t len = n;
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        if (x % 5 == 0) len = (size_t)(x >> 8) % n;
        for (int k = 0; k < 1 + (int)(x % 3); k++) buf[(x >> (8 + 10 * k)) % (n - 40)] ^= (unsigned char)(1u << (x >> (4 * k) & 7));
        FILE *g = fopen(c->path, "wb");
        fwrite(buf, 1, len, g);
        fclose(g);
        st_file *sf = NULL;
        if (st_open(&sf, c->path, &err) != LS_OK) continue;
        accepted++;
        for (size_t t = 0; t < st_count(sf); t++) {
            const st_tensor *tt = st_at(sf, t);
            float tmp[16];
            for (size_t e = 0; tt->dtype <= ST_BF16 && e < tt->numel; e += 16)
                st_to_f32(tmp, tt, e, tt->numel - e < 16 ? tt->numel - e : 16);
        }
        st_close(sf);
    }
    TAP_OK(1, "%d mutated files handled, %d accepted", rounds, accepted);
}

#ifdef __FLT16_MANT_DIG__
static uint16_t f16_bits(_Float16 x) { uint16_t u; memcpy(&u, &x, 2); return u; }
#endif

static float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* bf16 oracle: the nearer of the two neighbours, ties to the even one. */
static uint16_t bf16_oracle(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t lo = u & 0xFFFF0000u, hi = lo + 0x10000u;
    double dl = fabs((double)f - (double)from_bits(lo)), dh = fabs((double)from_bits(hi) - (double)f);
    if ((hi & 0x7F800000u) == 0x7F800000u) dh = fabs(ldexp(1.0, 128) * (u >> 31 ? -1 : 1) - (double)f);
    if (dl < dh || (dl == dh && !((lo >> 16) & 1))) return (uint16_t)(lo >> 16);
    return (uint16_t)(hi >> 16);
}

static void test_conversions(void)
{
    int bad_rt = 0, bad_ref = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        float f = st_f16_to_f32((uint16_t)i);
        if (isnan(f)) { bad_rt += !isnan(st_f16_to_f32(st_f32_to_f16(f))); continue; }
        bad_rt += st_f32_to_f16(f) != i;
#ifdef __FLT16_MANT_DIG__
        _Float16 r;
        uint16_t u = (uint16_t)i;
        memcpy(&r, &u, 2);
        bad_ref += (float)r != f || signbit((float)r) != signbit(f);
#endif
    }
    TAP_OK(bad_rt == 0, "all 65536 f16 -> f32 -> f16 round trips (%d bad)", bad_rt);
    TAP_OK(bad_ref == 0, "f16 -> f32 equals the compiler's _Float16 (%d bad)", bad_ref);
    TAP_OK(st_f16_to_f32(0x0001) == 0x1p-24f && st_f16_to_f32(0x03FF) == 0x3FFp-24f, "f16 subnormals");
    TAP_OK(isinf(st_f16_to_f32(0x7C00)) && isinf(st_f16_to_f32(0xFC00)) && st_f16_to_f32(0xFC00) < 0, "f16 inf");
    TAP_OK(st_f32_to_f16(0x1p-25f) == 0 && st_f32_to_f16(0x1.0002p-25f) == 1 && st_f32_to_f16(0x1.8p-24f) == 2,
           "f32 -> f16 subnormal rounding (ties to even)");
    TAP_OK(st_f32_to_f16(65504) == 0x7BFF && st_f32_to_f16(65519.99f) == 0x7BFF && st_f32_to_f16(65520) == 0x7C00,
           "f32 -> f16 overflow threshold");
    TAP_OK(st_f32_to_f16(-0.0f) == 0x8000 && st_f32_to_f16(-INFINITY) == 0xFC00 && (st_f32_to_f16(NAN) & 0x7FFF) > 0x7C00,
           "f32 -> f16 signed zero, inf, NaN");
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int bad16 = 0, bad_bf = 0;
    for (int i = 0; i < 1000000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        // Half the draws near the f16 range so subnormal and overflow edges are hit densely.
        uint32_t u = (uint32_t)x;
        if (i & 1) u = (u & 0x80000000u) | (0x33000000u + (u & 0x7FFFFFFu) % 0x14800000u);
        float f = from_bits(u);
        if (isnan(f)) continue;
#ifdef __FLT16_MANT_DIG__
        bad16 += st_f32_to_f16(f) != f16_bits((_Float16)f);
#endif
        bad_bf += st_f32_to_bf16(f) != bf16_oracle(f);
    }
    TAP_OK(bad16 == 0, "f32 -> f16 equals _Float16 on 1M values (%d bad)", bad16);
    TAP_OK(bad_bf == 0, "f32 -> bf16 equals the nearest-even oracle on 1M values (%d bad)", bad_bf);
    TAP_OK(st_f32_to_bf16(from_bits(0x3F808000u)) == 0x3F80 && st_f32_to_bf16(from_bits(0x3F818000u)) == 0x3F82,
           "bf16 ties to even");
    TAP_OK(st_f32_to_bf16(from_bits(0x7F7FFFFFu)) == 0x7F80 && isnan(st_bf16_to_f32(st_f32_to_bf16(NAN))),
           "bf16 overflow to inf, NaN stays NaN");
    TAP_OK(st_bf16_to_f32(0x0001) == 0x1p-133f, "bf16 subnormal");
}

int main(void)
{
    ctx c;
    snprintf(c.dir, sizeof c.dir, "/tmp/ls_test_st_XXXXXX");
    if (!mkdtemp(c.dir)) return 1;
    snprintf(c.path, sizeof c.path, "%s/model.safetensors", c.dir);
    test_framing(&c);
    test_duplicates_and_offsets(&c);
    test_sizes(&c);
    test_dtypes_and_fields(&c);
    test_valid_edges(&c);
    test_writer(&c);
    test_mutations(&c);
    test_conversions();
    unlink(c.path);
    rmdir(c.dir);
    return tap_done();
}
