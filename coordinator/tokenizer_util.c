/* Small containers and UTF-8 helpers for the tokenizer. They are hand-written here rather than shared
 * because the tokenizer is the only hot user: a vocab of 150k keys must load in milliseconds, and a
 * prompt must be validated byte by byte before anything else sees it (reliability.md row 29). */
#include "coordinator/tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

#include <unicode/uchar.h>

#include "common/log.h"

void tok_buf_put(tok_buf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        b->p = ls_xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n && s) memcpy(b->p + b->n, s, n);     // s == NULL reserves n bytes for the caller to fill
    b->n += n;
}

void tok_buf_putc(tok_buf *b, char c) { tok_buf_put(b, &c, 1); }

char *tok_buf_cstr(tok_buf *b)
{
    tok_buf_put(b, "", 0);      // guarantees room for the terminator
    b->p[b->n] = '\0';
    return b->p;
}

void tok_buf_free(tok_buf *b)
{
    free(b->p);
    *b = (tok_buf){0};
}

void tok_ids_push(tok_ids *a, int32_t id)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = ls_xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = id;
}

/* FNV-1a: keys are short (a token is rarely over 16 bytes), where it is as fast as anything fancier. */
static uint32_t hash_bytes(const char *k, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)k[i]) * 16777619u;
    return h;
}

static void map_grow(tok_map *m)
{
    size_t size = m->mask ? (m->mask + 1) * 2 : 1024;
    free(m->slot);
    m->slot = ls_xcalloc(size, sizeof *m->slot);
    m->mask = size - 1;
    for (size_t i = 0; i < m->n; i++) {
        size_t s = m->e[i].hash & m->mask;
        while (m->slot[s]) s = (s + 1) & m->mask;
        m->slot[s] = (uint32_t)i + 1;
    }
}

static size_t map_find(const tok_map *m, const char *k, size_t n, uint32_t h)
{
    size_t s = h & m->mask;
    for (; m->slot[s]; s = (s + 1) & m->mask) {
        const tok_map_entry *e = &m->e[m->slot[s] - 1];
        if (e->hash == h && e->len == n && memcmp(m->keys.p + e->off, k, n) == 0) return s;
    }
    return s;
}

void tok_map_put(tok_map *m, const char *k, size_t n, int32_t val)
{
    if ((m->n + 1) * 2 > m->mask + 1) map_grow(m);
    uint32_t h = hash_bytes(k, n);
    size_t s = map_find(m, k, n, h);
    if (m->slot[s]) {
        m->e[m->slot[s] - 1].val = val;
        return;
    }
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 1024;
        m->e = ls_xrealloc(m->e, m->cap * sizeof *m->e);
    }
    m->e[m->n] = (tok_map_entry){.off = m->keys.n, .len = (uint32_t)n, .hash = h, .val = val};
    tok_buf_put(&m->keys, k, n);
    m->slot[s] = (uint32_t)++m->n;
}

int32_t tok_map_get(const tok_map *m, const char *k, size_t n)
{
    if (!m->slot) return -1;
    size_t s = map_find(m, k, n, hash_bytes(k, n));
    return m->slot[s] ? m->e[m->slot[s] - 1].val : -1;
}

const char *tok_map_key(const tok_map *m, size_t i, size_t *len)
{
    *len = m->e[i].len;
    return m->keys.p + m->e[i].off;
}

void tok_map_free(tok_map *m)
{
    free(m->e);
    free(m->slot);
    tok_buf_free(&m->keys);
    *m = (tok_map){0};
}

/* Well-formed UTF-8 per Unicode table 3-7: the second byte's range depends on the lead byte, which is
 * what rules out overlongs (E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and > U+10FFFF (F4 90..). */
static size_t seq_len(const uint8_t *s, size_t n)
{
    uint8_t b = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) need = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (n < need || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return need;
}

size_t tok_utf8_invalid_at(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = seq_len(u + i, n - i);
        if (!l) return i;
        i += l;
    }
    return n;
}

size_t tok_utf8_seq_len(const char *s, size_t n)
{
    size_t l = seq_len((const uint8_t *)s, n);
    return l ? l : 1;
}

uint32_t tok_utf8_decode(const char *s, size_t n, size_t *len)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t l = seq_len(u, n);
    if (!l) {
        *len = 1;
        return 0xFFFD;
    }
    *len = l;
    if (l == 1) return u[0];
    uint32_t cp = u[0] & (0x7F >> l);
    for (size_t i = 1; i < l; i++) cp = (cp << 6) | (u[i] & 0x3F);
    return cp;
}

size_t tok_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

bool tok_is_white_space(uint32_t cp) { return u_isUWhiteSpace((UChar32)cp); }

void tok_pieces_add(tok_pieces *p, const char *s, size_t n, int32_t id, bool first)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 16;
        p->v = ls_xrealloc(p->v, p->cap * sizeof *p->v);
    }
    p->v[p->n++] = (tok_piece){.off = p->text.n, .len = n, .id = id, .first = first};
    tok_buf_put(&p->text, s, n);
}

void tok_pieces_free(tok_pieces *p)
{
    free(p->v);
    tok_buf_free(&p->text);
    *p = (tok_pieces){0};
}
