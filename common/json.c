/* json.h's file reading and typed getters. The getters exist so that every config reader reports a
 * wrongly typed field the same way ("key: expected an integer") instead of silently using a default;
 * the parser itself lives in json_parse.c. */
#include "common/json.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"

static ls_status read_all(int fd, char *buf, size_t size, const char *path, ls_error *err)
{
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return ls_fail(err, LS_INVALID_ARGUMENT, "%s: read: %s", path, strerror(errno));
        if (r == 0) return ls_fail(err, LS_INVALID_ARGUMENT, "%s: file shrank while reading", path);
        got += (size_t)r;
    }
    return LS_OK;
}

ls_status json_parse_file(json_doc **out, const char *path, size_t max_bytes, ls_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ls_fail(err, errno == ENOENT ? LS_NOT_FOUND : LS_INVALID_ARGUMENT, "%s: %s", path,
                       strerror(errno));
    struct stat st;
    ls_status rc;
    char *buf = NULL;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        rc = ls_fail(err, LS_INVALID_ARGUMENT, "%s: not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        rc = ls_fail(err, LS_INVALID_ARGUMENT, "%s: too large (%lld bytes, cap %zu)", path,
                     (long long)st.st_size, max_bytes);
        goto out;
    }
    buf = ls_xmalloc((size_t)st.st_size);
    rc = read_all(fd, buf, (size_t)st.st_size, path, err);
    if (rc == LS_OK && (rc = json_parse(out, buf, (size_t)st.st_size, err)) != LS_OK)
        ls_error_wrap(err, "%s", path);
out:
    free(buf);
    close(fd);
    return rc;
}

const json *json_get(const json *obj, const char *key)
{
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < obj->len; i++)
        if (obj->key_lens[i] == n && !memcmp(obj->keys[i], key, n)) return &obj->items[i];
    return NULL;
}

/* NULL when the member is absent or JSON null, i.e. when the default applies. */
static const json *present(const json *obj, const char *key)
{
    const json *v = json_get(obj, key);
    return v && v->type != JSON_NULL ? v : NULL;
}

int json_get_int(const json *obj, const char *key, int64_t dflt, int64_t *out, ls_error *err)
{
    const json *v = present(obj, key);
    if (!v) { *out = dflt; return 1; }
    if (v->type == JSON_NUMBER && v->is_integer) { *out = v->integer; return 1; }
    // Python writes 2048.0 when a config was built from floats; accept exact integers up to 2^53.
    if (v->type == JSON_NUMBER && v->number == floor(v->number) && fabs(v->number) <= 9007199254740992.0) {
        *out = (int64_t)v->number;
        return 1;
    }
    ls_fail(err, LS_INVALID_ARGUMENT, "%s: expected an integer", key);
    return 0;
}

int json_get_double(const json *obj, const char *key, double dflt, double *out, ls_error *err)
{
    const json *v = present(obj, key);
    if (!v) { *out = dflt; return 1; }
    if (v->type == JSON_NUMBER) { *out = v->number; return 1; }
    ls_fail(err, LS_INVALID_ARGUMENT, "%s: expected a number", key);
    return 0;
}

int json_get_bool(const json *obj, const char *key, int dflt, int *out, ls_error *err)
{
    const json *v = present(obj, key);
    if (!v) { *out = dflt; return 1; }
    if (v->type == JSON_BOOL) { *out = v->boolean; return 1; }
    ls_fail(err, LS_INVALID_ARGUMENT, "%s: expected true or false", key);
    return 0;
}

const char *json_get_str(const json *obj, const char *key, int *ok, ls_error *err)
{
    const json *v = present(obj, key);
    if (ok) *ok = 1;
    if (!v) return NULL;
    if (v->type == JSON_STRING) return v->str;
    if (ok) *ok = 0;
    ls_fail(err, LS_INVALID_ARGUMENT, "%s: expected a string", key);
    return NULL;
}
