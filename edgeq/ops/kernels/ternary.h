/* edgeq ternary-weight int8 kernels: EDGEQ_TERNARY_FC and EDGEQ_TERNARY_CONV2D.
 *
 * The semantics are defined bit-exactly by edgeq/ops/reference.py and docs/custom_ops.md; this
 * file is one implementation of them. No dependency beyond libc: the same sources build for the
 * host and for aarch64, and the LiteRT registration (litert_shim.c) sits on top.
 *
 * Every function returns 0 on success and a non-zero code with a message in `err` otherwise.
 */
#ifndef EDGEQ_TERNARY_H_
#define EDGEQ_TERNARY_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGEQ_TERNARY_MAGIC 0x31545145u /* "EQT1" little-endian */
#define EDGEQ_TERNARY_FORMAT_VERSION 2
#define EDGEQ_TERNARY_HEADER_WORDS 20
#define EDGEQ_TERNARY_KIND_FC 0
#define EDGEQ_TERNARY_KIND_CONV2D 1
#define EDGEQ_TERNARY_MAX_RANK 8

/* Instruction-set levels of the inner loop (all give identical results). */
#define EDGEQ_ISA_AUTO (-1)
#define EDGEQ_ISA_SCALAR 0
#define EDGEQ_ISA_NEON 1
#define EDGEQ_ISA_AVX2 2
#define EDGEQ_ISA_AVX512 3

typedef struct {
  int32_t kind, in_zp, out_zp, act_min, act_max, activation;
  int32_t in_depth, out_depth, kernel_h, kernel_w;
  int32_t stride_h, stride_w, dilation_h, dilation_w, padding, row_bytes;
  const int32_t* bias;       /* [out_depth] */
  const int32_t* multiplier; /* [out_depth] */
  const int32_t* shift;      /* [out_depth] */
} edgeq_ternary_params;

/* Parse and validate the qparams words (header + bias + multiplier + shift). */
int edgeq_ternary_parse(const int32_t* qparams, int64_t n_words, edgeq_ternary_params* p,
                        char* err, size_t errlen);

/* Output shape from the three input shapes alone (what a runtime's shape inference sees). */
int edgeq_ternary_infer_shape(int kind, const int32_t* x_dims, int x_rank, const int32_t* w_dims,
                              int w_rank, const int32_t* qp_dims, int qp_rank, int32_t* out_dims,
                              int* out_rank, char* err, size_t errlen);

/* Run one op: x (int8, shape x_dims) → y (int8, y_len elements, the inferred output shape). */
int edgeq_ternary_eval(const int32_t* qparams, int64_t n_words, const uint8_t* weights,
                       int64_t weight_bytes, const int8_t* x, const int32_t* x_dims, int x_rank,
                       int8_t* y, int64_t y_len, char* err, size_t errlen);

/* The same in two steps, for a runtime that runs one op many times: prepare copies the op's
 * qparams and weights (and, where an inner loop reads a layout of its own, makes it once), run
 * takes the input. A prepared op does not refer to the caller's buffers. */
typedef struct edgeq_ternary_prepared edgeq_ternary_prepared;
int edgeq_ternary_prepare(const int32_t* qparams, int64_t n_words, const uint8_t* weights,
                          int64_t weight_bytes, edgeq_ternary_prepared** op, char* err,
                          size_t errlen);
int edgeq_ternary_run(const edgeq_ternary_prepared* op, const int8_t* x, const int32_t* x_dims,
                      int x_rank, int8_t* y, int64_t y_len, char* err, size_t errlen);
void edgeq_ternary_release(edgeq_ternary_prepared* op);
/* 1 if `op` was prepared from these sizes, qparams header and first and last weight bytes (a
 * cheap check for a runtime that finds prepared ops by buffer address), else 0. */
int edgeq_ternary_prepared_from(const edgeq_ternary_prepared* op, const int32_t* qparams,
                                int64_t n_words, const uint8_t* weights, int64_t weight_bytes);

/* TFLite's MultiplyByQuantizedMultiplier, exposed for tests. */
int32_t edgeq_ternary_mbqm(int32_t acc, int32_t multiplier, int32_t shift);

/* Select the inner loop (EDGEQ_ISA_*); returns the level in use (clamped to what the CPU has). */
int edgeq_ternary_set_isa(int level);
const char* edgeq_ternary_isa_name(void);

#ifdef __cplusplus
}
#endif

#endif /* EDGEQ_TERNARY_H_ */
