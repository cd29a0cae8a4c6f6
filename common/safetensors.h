/* Strict reader of the safetensors format: an 8-byte little-endian header length, a JSON header
 * {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}, then the data section. The file is
 * mmapped read-only; every rule of the reference reader is enforced before any tensor is touched
 * (header size cap, UTF-8 JSON object, no duplicate names, known dtypes, shape product without
 * overflow, offsets contiguous, in range and covering the data section exactly, bytes == numel x dtype
 * size). A rejected file changes nothing and names the tensor and the rule. */
#ifndef LORASERVE_COMMON_SAFETENSORS_H
#define LORASERVE_COMMON_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER_BYTES (100u << 20)   // the reference reader's cap

typedef enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_I32, ST_I64, ST_U8, ST_I8, ST_BOOL, ST_F64 } st_dtype;

typedef struct st_tensor {
    const char *name;
    st_dtype dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    size_t numel;
    const void *data;           // into the mapping
    size_t nbytes;
} st_tensor;

typedef struct st_file st_file;

ls_status st_open(st_file **out, const char *path, ls_error *err);
void st_close(st_file *f);                      // NULL is fine; unmaps
size_t st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, size_t i);
const st_tensor *st_find(const st_file *f, const char *name);
size_t st_dtype_size(st_dtype t);
const char *st_dtype_name(st_dtype t);

/* Converts n elements of src (F32, F16 or BF16) starting at element offset `first` to fp32. */
void st_to_f32(float *dst, const st_tensor *t, size_t first, size_t n);

/* Scalar conversions (IEEE binary16 and bfloat16). Narrowing rounds to nearest even, overflows to
 * inf, keeps subnormals, and keeps NaN a (quiet) NaN of the same sign. */
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);
uint16_t st_f32_to_f16(float f);
uint16_t st_f32_to_bf16(float f);
/* 1 and the dtype when `name` is a safetensors dtype string this reader accepts ("F32", "BF16", ...). */
int st_dtype_parse(const char *name, st_dtype *out);

/* Writing (safetensors_write.c): the model generator, and tests that need valid files (adapters,
 * weights). Tensors are laid out in the order given, the header is space-padded to 8 bytes as the
 * reference writer does, and `__metadata__` is {"format": "pt"}. The data is streamed: open writes
 * the header, then each st_writer_put appends the next bytes of the tensors in order, and close fails
 * (and removes the file) unless exactly the announced byte count arrived. */
typedef struct st_spec {
    const char *name;
    st_dtype dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
} st_spec;

typedef struct st_writer st_writer;

ls_status st_writer_open(st_writer **out, const char *path, const st_spec *specs, size_t n, ls_error *err);
ls_status st_writer_put(st_writer *w, const void *data, size_t nbytes, ls_error *err);
ls_status st_writer_close(st_writer *w, ls_error *err);     // NULL is fine; always frees w
/* One call: data[i] holds tensor i's bytes (numel x dtype size). */
ls_status st_write(const char *path, const st_spec *specs, const void *const *data, size_t n, ls_error *err);
/* Bytes of the tensor a spec describes; 0 when the size overflows or a dimension is negative. */
int st_spec_nbytes(const st_spec *s, size_t *out);

#endif
