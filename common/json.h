/* A small strict JSON reader (RFC 8259) for config.json, tokenizer.json, adapter_config.json and
 * safetensors headers. It parses into one arena-backed tree: no partial results, depth and size caps,
 * duplicate object keys rejected (a safetensors header with two tensors of one name is an attack),
 * strings decoded to UTF-8 (\uXXXX surrogate pairs joined; lone surrogates and invalid UTF-8 rejected).
 * Lookups are linear: the files we read have at most a few thousand keys per object except
 * tokenizer.json's vocab, which callers walk once. */
#ifndef LORASERVE_COMMON_JSON_H
#define LORASERVE_COMMON_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define JSON_MAX_DEPTH 128     // nested arrays/objects beyond this are rejected (stack-bomb guard)

typedef enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json json;
struct json {
    json_type type;
    int boolean;            // JSON_BOOL
    double number;          // JSON_NUMBER
    int is_integer;         // JSON_NUMBER written without fraction/exponent and fitting in int64
    int64_t integer;        // JSON_NUMBER when is_integer (larger integers only have `number`)
    const char *str;        // JSON_STRING: NUL-terminated UTF-8 (may contain NUL: use len)
    size_t len;             // JSON_STRING byte length; JSON_ARRAY/JSON_OBJECT element count
    json *items;            // JSON_ARRAY elements / JSON_OBJECT values, `len` of them
    const char **keys;      // JSON_OBJECT keys, parallel to items
    size_t *key_lens;       // JSON_OBJECT key byte lengths
};

typedef struct json_doc json_doc;   // owns every node and string of one parse

/* Parses text[0..len) (need not be NUL-terminated). Fails with INVALID_ARGUMENT naming the byte offset. */
ls_status json_parse(json_doc **out, const char *text, size_t len, ls_error *err);
/* Reads a whole file (at most max_bytes, else INVALID_ARGUMENT "too large") and parses it. A missing
 * file is NOT_FOUND, an unreadable one INVALID_ARGUMENT; the message names the path. */
ls_status json_parse_file(json_doc **out, const char *path, size_t max_bytes, ls_error *err);
const json *json_root(const json_doc *doc);
void json_free(json_doc *doc);      // NULL is fine

/* Object member by key, or NULL when absent or when obj is not an object. */
const json *json_get(const json *obj, const char *key);
/* Typed getters with a default when the key is absent or JSON null. They return 0 and fill err
 * (INVALID_ARGUMENT naming `key`) when the value has the wrong type or does not fit. */
int json_get_int(const json *obj, const char *key, int64_t dflt, int64_t *out, ls_error *err);
int json_get_double(const json *obj, const char *key, double dflt, double *out, ls_error *err);
int json_get_bool(const json *obj, const char *key, int dflt, int *out, ls_error *err);
/* String value or NULL when absent / null; non-string -> NULL with err set and *ok = 0. */
const char *json_get_str(const json *obj, const char *key, int *ok, ls_error *err);

/* 1 when s[0..n) is valid UTF-8 (RFC 3629: no overlongs, surrogates or code points above U+10FFFF). */
int json_utf8_valid(const char *s, size_t n);

#endif
