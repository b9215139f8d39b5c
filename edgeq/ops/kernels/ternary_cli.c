/* A standalone driver for the ternary kernels: cross-architecture bit-exactness checks (run under
 * qemu-user or on a board) without Python or LiteRT on the target.
 *
 *   ternary_cli CASES OUT [ISA]
 *
 * CASES is a sequence of little-endian records:
 *   int32 n_words, int32 qparams[n_words], int64 weight_bytes, uint8 weights[weight_bytes],
 *   int32 x_rank, int32 x_dims[x_rank], int8 x[prod(x_dims)], int64 y_len
 * OUT receives, per record, int32 status then int8 y[y_len]. ISA is an EDGEQ_ISA_* level
 * (default: the best the CPU has). The ISA in use is printed on stdout.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ternary.h"

static int rd(FILE* f, void* p, size_t n) { return n == 0 || fread(p, 1, n, f) == n; }

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s CASES OUT [ISA]\n", argv[0]);
    return 2;
  }
  edgeq_ternary_set_isa(argc > 3 ? atoi(argv[3]) : EDGEQ_ISA_AUTO);
  FILE* in = fopen(argv[1], "rb");
  FILE* out = fopen(argv[2], "wb");
  if (!in || !out) {
    fprintf(stderr, "cannot open %s or %s\n", argv[1], argv[2]);
    return 2;
  }
  printf("%s\n", edgeq_ternary_isa_name());
  int32_t n_words;
  while (rd(in, &n_words, 4)) {
    int32_t* q = malloc(sizeof(int32_t) * (size_t)(n_words > 0 ? n_words : 1));
    int64_t wb = 0, y_len = 0;
    int32_t rank = 0, dims[EDGEQ_TERNARY_MAX_RANK];
    if (!q || !rd(in, q, 4 * (size_t)n_words) || !rd(in, &wb, 8)) return 3;
    uint8_t* w = malloc((size_t)wb + 1);
    if (!w || !rd(in, w, (size_t)wb) || !rd(in, &rank, 4) || rank < 1 ||
        rank > EDGEQ_TERNARY_MAX_RANK || !rd(in, dims, 4 * (size_t)rank))
      return 3;
    int64_t nx = 1;
    for (int i = 0; i < rank; ++i) nx *= dims[i];
    int8_t* x = malloc((size_t)nx + 1);
    if (!x || !rd(in, x, (size_t)nx) || !rd(in, &y_len, 8)) return 3;
    int8_t* y = calloc((size_t)y_len + 1, 1);
    char err[256] = "";
    int32_t rc = edgeq_ternary_eval(q, n_words, w, wb, x, dims, rank, y, y_len, err, sizeof(err));
    if (rc) fprintf(stderr, "case failed: %s\n", err);
    fwrite(&rc, 4, 1, out);
    fwrite(y, 1, (size_t)y_len, out);
    free(q);
    free(w);
    free(x);
    free(y);
  }
  fclose(out);
  return 0;
}
