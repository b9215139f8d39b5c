/* edgeq ternary-weight int8 kernels. See ternary.h and docs/custom_ops.md.
 *
 * How the inner loop avoids multiplications: the int8 input is moved to unsigned bytes
 * u = x + 128 once per call, and each packed weight row is two bit planes (+1 bits, −1 bits).
 * The dot product is Σ_{+1} u − Σ_{−1} u: bytes selected by the bit masks and summed (x86: masked
 * byte moves / compares and PSADBW; NEON: VTST and pairwise widening adds; scalar: AND with a
 * 0/0xFF mask). The +128 and the input zero point come back as one per-channel correction,
 * (128 + in_zp) · (n₊ − n₋), with n₊/n₋ counted by popcount. Requantization is fixed point.
 * With AVX-512, FC and conv instead run on a layout made once per op (edgeq_ternary_prepare):
 * base-3 codes of three weights, the index vector of a lookup in a table of the 27 sums of three
 * inputs (fc_blocks_avx512, conv_codes_avx512).
 */
#include "ternary.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define EDGEQ_X86 1
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#define EDGEQ_NEON 1
#include <arm_neon.h>
#endif

#define FAIL(code, ...)                        \
  do {                                         \
    if (err && errlen) snprintf(err, errlen, __VA_ARGS__); \
    return (code);                             \
  } while (0)

enum { E_OK = 0, E_FORMAT = 1, E_SHAPE = 2, E_MEMORY = 3 };

#define FC_BLOCK 32 /* output channels interleaved in the FC weight layout */

static int32_t out_size(int32_t in, int32_t k, int32_t s, int32_t d, int32_t pad, int32_t* before);

/* ------------------------------------------------------------------------------------------ */
/* Requantization: TFLite's MultiplyByQuantizedMultiplier (gemmlowp double rounding).          */

static inline int32_t srdhm(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  int64_t ab = (int64_t)a * (int64_t)b;
  int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
  return (int32_t)((ab + nudge) / ((int64_t)1 << 31)); /* C division truncates toward zero */
}

static inline int32_t rdbp(int32_t x, int exponent) {
  int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
  int32_t remainder = x & mask;
  int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

int32_t edgeq_ternary_mbqm(int32_t acc, int32_t multiplier, int32_t shift) {
  int left = shift > 0 ? shift : 0;
  int right = shift > 0 ? 0 : -shift;
  int32_t shifted = (int32_t)((uint32_t)acc << left); /* wraps, as defined */
  return rdbp(srdhm(shifted, multiplier), right);
}

static inline int8_t requant(int32_t acc, int32_t m, int32_t s, int32_t out_zp, int32_t lo,
                             int32_t hi) {
  int64_t v = (int64_t)edgeq_ternary_mbqm(acc, m, s) + out_zp;
  if (v < lo) v = lo;
  if (v > hi) v = hi;
  return (int8_t)v;
}

/* ------------------------------------------------------------------------------------------ */
/* Σ_{P bits} u − Σ_{M bits} u over c bytes of u; P and M are LSB-first bit planes of 16-bit
 * little-endian words, word w of a plane at byte w·ws (ws = 2: a contiguous plane; the FC layout
 * interleaves channels, so there ws is larger). Adds n₊ − n₋ (set bits of P minus set bits of M
 * among the c lanes) to *balance.                                                             */

typedef int32_t (*dot_fn)(const uint8_t* u, const uint8_t* P, const uint8_t* M, int32_t c,
                          int32_t ws, int32_t* balance);

static inline uint32_t word16(const uint8_t* plane, int32_t w, int32_t ws) {
  const uint8_t* at = plane + (int64_t)w * ws;
  return (uint32_t)at[0] | (uint32_t)at[1] << 8;
}

static const uint8_t kPopcount8[256] = {
#define B2(n) n, n + 1, n + 1, n + 2
#define B4(n) B2(n), B2(n + 1), B2(n + 1), B2(n + 2)
#define B6(n) B4(n), B4(n + 1), B4(n + 1), B4(n + 2)
    B6(0), B6(1), B6(1), B6(2)
#undef B2
#undef B4
#undef B6
};

static int32_t dot_scalar(const uint8_t* u, const uint8_t* P, const uint8_t* M, int32_t c,
                          int32_t ws, int32_t* balance) {
  uint32_t sp = 0, sm = 0;
  int32_t bal = 0;
  for (int32_t w = 0; 16 * w < c; ++w) {
    const int32_t n = c - 16 * w < 16 ? c - 16 * w : 16;
    const uint32_t keep = n == 16 ? 0xFFFFu : (1u << n) - 1u;
    const uint32_t p = word16(P, w, ws) & keep, m = word16(M, w, ws) & keep;
    const uint8_t* v = u + 16 * w;
    for (int j = 0; j < n; ++j) {
      sp += v[j] & (0u - ((p >> j) & 1u));
      sm += v[j] & (0u - ((m >> j) & 1u));
    }
    bal += kPopcount8[p & 0xFF] + kPopcount8[p >> 8] - kPopcount8[m & 0xFF] - kPopcount8[m >> 8];
  }
  *balance += bal;
  return (int32_t)(sp - sm);
}

#ifdef EDGEQ_X86
__attribute__((target("avx2,popcnt"))) static int32_t dot_avx2(const uint8_t* u, const uint8_t* P,
                                                                const uint8_t* M, int32_t c,
                                                                int32_t ws, int32_t* balance) {
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2,
                                        2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bits = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
  const __m256i zero = _mm256_setzero_si256();
  __m256i accp = zero, accm = zero;
  int32_t i = 0, bal = 0;
  for (; i + 32 <= c; i += 32) {
    const uint32_t pw = word16(P, i / 16, ws) | word16(P, i / 16 + 1, ws) << 16;
    const uint32_t mw = word16(M, i / 16, ws) | word16(M, i / 16 + 1, ws) << 16;
    bal += __builtin_popcount(pw) - __builtin_popcount(mw);
    __m256i v = _mm256_loadu_si256((const __m256i*)(u + i));
    __m256i pm = _mm256_shuffle_epi8(_mm256_set1_epi32((int)pw), shuf);
    __m256i mm = _mm256_shuffle_epi8(_mm256_set1_epi32((int)mw), shuf);
    pm = _mm256_cmpeq_epi8(_mm256_and_si256(pm, bits), bits);
    mm = _mm256_cmpeq_epi8(_mm256_and_si256(mm, bits), bits);
    accp = _mm256_add_epi64(accp, _mm256_sad_epu8(_mm256_and_si256(v, pm), zero));
    accm = _mm256_add_epi64(accm, _mm256_sad_epu8(_mm256_and_si256(v, mm), zero));
  }
  __m256i d = _mm256_sub_epi64(accp, accm);
  __m128i s = _mm_add_epi64(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1));
  if (i + 16 <= c) {
    /* A 16-byte step before the scalar tail: conv taps are often 16 or 48 channels. */
    const uint32_t pw = word16(P, i / 16, ws), mw = word16(M, i / 16, ws);
    bal += __builtin_popcount(pw) - __builtin_popcount(mw);
    const __m128i shuf16 = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m128i bits16 = _mm_set1_epi64x((long long)0x8040201008040201ULL);
    __m128i v = _mm_loadu_si128((const __m128i*)(u + i));
    __m128i pm = _mm_shuffle_epi8(_mm_set1_epi16((short)pw), shuf16);
    __m128i mm = _mm_shuffle_epi8(_mm_set1_epi16((short)mw), shuf16);
    pm = _mm_cmpeq_epi8(_mm_and_si128(pm, bits16), bits16);
    mm = _mm_cmpeq_epi8(_mm_and_si128(mm, bits16), bits16);
    s = _mm_add_epi64(s, _mm_sub_epi64(_mm_sad_epu8(_mm_and_si128(v, pm), _mm_setzero_si128()),
                                       _mm_sad_epu8(_mm_and_si128(v, mm), _mm_setzero_si128())));
    i += 16;
  }
  int64_t total = _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
  *balance += bal;
  if (i < c) total += dot_scalar(u + i, P + i / 16 * ws, M + i / 16 * ws, c - i, ws, balance);
  return (int32_t)total;
}

/* nw (≤ 4) consecutive words of a plane from word w on, as one 64-bit mask. */
static inline uint64_t words64(const uint8_t* plane, int32_t w, int32_t nw, int32_t ws) {
  uint64_t v = 0;
  if (ws == 2 && nw == 4) {
    memcpy(&v, plane + 2 * (int64_t)w, 8);
    return v;
  }
  for (int32_t j = 0; j < nw; ++j) v |= (uint64_t)word16(plane, w + j, ws) << (16 * j);
  return v;
}

__attribute__((target("avx512f,avx512bw,popcnt"))) static int32_t dot_avx512(
    const uint8_t* u, const uint8_t* P, const uint8_t* M, int32_t c, int32_t ws, int32_t* balance) {
  const __m512i zero = _mm512_setzero_si512();
  __m512i accp = zero, accm = zero;
  int32_t i = 0, bal = 0;
  for (; i + 64 <= c; i += 64) {
    const uint64_t pw = words64(P, i / 16, 4, ws), mw = words64(M, i / 16, 4, ws);
    bal += __builtin_popcountll(pw) - __builtin_popcountll(mw);
    __m512i v = _mm512_loadu_si512((const void*)(u + i));
    accp = _mm512_add_epi64(accp, _mm512_sad_epu8(_mm512_maskz_mov_epi8(pw, v), zero));
    accm = _mm512_add_epi64(accm, _mm512_sad_epu8(_mm512_maskz_mov_epi8(mw, v), zero));
  }
  if (i < c) {
    int32_t rem = c - i; /* 1..63 */
    uint64_t lanes = ((uint64_t)1 << rem) - 1;
    /* Word loads, not memcpy of a variable length: that was a library call per dot, and conv
     * dots are short (one tap: C channels); 3x faster on a 3x3x16 conv. */
    const int32_t nw = (rem + 15) / 16;
    const uint64_t pw = words64(P, i / 16, nw, ws) & lanes, mw = words64(M, i / 16, nw, ws) & lanes;
    bal += __builtin_popcountll(pw) - __builtin_popcountll(mw);
    __m512i v = _mm512_maskz_loadu_epi8(lanes, (const void*)(u + i));
    accp = _mm512_add_epi64(accp, _mm512_sad_epu8(_mm512_maskz_mov_epi8(pw, v), zero));
    accm = _mm512_add_epi64(accm, _mm512_sad_epu8(_mm512_maskz_mov_epi8(mw, v), zero));
  }
  *balance += bal;
  return (int32_t)(_mm512_reduce_add_epi64(accp) - _mm512_reduce_add_epi64(accm));
}

/* FC, AVX-512BW, by table lookups over a runtime layout made once per op (edgeq_ternary_prepare;
 * docs/custom_ops.md, "table lookups over a prepared layout"). The inputs are taken three at a
 * time; the three weights of a channel on such a group are one base-3 code (digit 0, 1, 2 for
 * weight 0, +1, −1; 27 codes). Per group, a table of 32 int16 holds Σ t·(x − in_zp) for every code. A block of 32
 * channels stores two groups' codes per int16 lane (low byte, high byte): the loaded vector is the
 * index vector of VPERMW (which reads the low 5 bits of a lane), and a shift by 8 indexes the second
 * group. One lookup adds three inputs for 32 channels; no multiplications. Four blocks share each
 * table load. int16 sums are widened to int32 every FC_FLUSH pairs (a pair adds at most
 * 6 · 255 per lane: 16 · 1530 < 2^15). */
#define FC_FLUSH 16
#define FC_QUAD 4 /* blocks per pass over the tables */

__attribute__((target("avx512f,avx512bw"))) static void fc_tables_avx512(const int8_t* x,
                                                                         int32_t k, int32_t in_zp,
                                                                         int32_t groups,
                                                                         int16_t* t) {
  /* lanes (codes) whose base-3 digit j is 1 (+x_j) or 2 (−x_j) */
  static const __mmask32 kPlus[3] = {0x2492492u, 0xe07038u, 0x3fe00u};
  static const __mmask32 kMinus[3] = {0x4924924u, 0x70381c0u, 0x7fc0000u};
  for (int32_t g = 0; g < groups; ++g) {
    __m512i v = _mm512_setzero_si512();
    for (int j = 0; j < 3; ++j) {
      const int32_t i = 3 * g + j;
      const __m512i b = _mm512_set1_epi16((int16_t)(i < k ? x[i] - in_zp : 0));
      v = _mm512_mask_sub_epi16(_mm512_mask_add_epi16(v, kPlus[j], v, b), kMinus[j], v, b);
    }
    _mm512_store_si512((void*)(t + 32 * (int64_t)g), v);
  }
}

__attribute__((target("avx512f,avx512bw"))) static inline __m512i widen_lo(__m512i v) {
  return _mm512_cvtepi16_epi32(_mm512_castsi512_si256(v));
}
__attribute__((target("avx512f,avx512bw"))) static inline __m512i widen_hi(__m512i v) {
  return _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(v, 1));
}

/* acc + the lookups of one pair of groups: w holds two codes per lane (low byte: table ta). */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline __m512i add_pair(
    __m512i acc, __m512i w, __m512i ta, __m512i tb) {
  acc = _mm512_add_epi16(acc, _mm512_permutexvar_epi16(w, ta));
  return _mm512_add_epi16(acc, _mm512_permutexvar_epi16(_mm512_srli_epi16(w, 8), tb));
}

/* lo, hi (int32, lanes 0–15 and 16–31) += the int16 lanes of acc. */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline void widen_into(
    __m512i* lo, __m512i* hi, __m512i acc) {
  *lo = _mm512_add_epi32(*lo, widen_lo(acc));
  *hi = _mm512_add_epi32(*hi, widen_hi(acc));
}

/* Σ t·(x − in_zp) for NB blocks of 32 channels, codes of block b at c + b·stride; sums[32·b + l]. */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline void fc_blocks_avx512(
    const uint8_t* c, int64_t stride, int nb, int32_t pairs, const int16_t* t, int32_t* sums) {
  __m512i lo[FC_QUAD], hi[FC_QUAD];
  for (int b = 0; b < nb; ++b) lo[b] = hi[b] = _mm512_setzero_si512();
  for (int32_t p0 = 0; p0 < pairs; p0 += FC_FLUSH) {
    const int32_t p1 = pairs - p0 < FC_FLUSH ? pairs : p0 + FC_FLUSH;
    __m512i acc[FC_QUAD];
    for (int b = 0; b < nb; ++b) acc[b] = _mm512_setzero_si512();
    for (int32_t p = p0; p < p1; ++p) {
      const __m512i ta = _mm512_load_si512((const void*)(t + 64 * (int64_t)p));
      const __m512i tb = _mm512_load_si512((const void*)(t + 64 * (int64_t)p + 32));
      for (int b = 0; b < nb; ++b) {
        const __m512i w = _mm512_loadu_si512((const void*)(c + b * stride + 64 * (int64_t)p));
        acc[b] = add_pair(acc[b], w, ta, tb);
      }
    }
    for (int b = 0; b < nb; ++b) widen_into(&lo[b], &hi[b], acc[b]);
  }
  for (int b = 0; b < nb; ++b) {
    _mm512_storeu_si512((void*)(sums + 32 * b), lo[b]);
    _mm512_storeu_si512((void*)(sums + 32 * b + 16), hi[b]);
  }
}

/* requant() for n ≤ 16 channels at once, bit-exact (multiplier ≥ 0, as parse() guarantees, so
 * the INT32_MIN · INT32_MIN case of srdhm cannot occur). y[l] for lane l of a0, channel c0 + l. */
__attribute__((target("avx512f,avx512bw"))) static void requant16_avx512(
    const edgeq_ternary_params* p, __m512i a0, int32_t c0, int32_t n, int8_t* y) {
  const __mmask16 lanes = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
  const __m512i zero = _mm512_setzero_si512();
  const __m512i m = _mm512_maskz_loadu_epi32(lanes, p->multiplier + c0);
  const __m512i sh = _mm512_maskz_loadu_epi32(lanes, p->shift + c0);
  const __m512i left = _mm512_max_epi32(sh, zero), right = _mm512_max_epi32(_mm512_sub_epi32(zero, sh), zero);
  const __m512i a = _mm512_sllv_epi32(a0, left); /* wraps, as defined */
  /* srdhm: (a·m + nudge) / 2^31 toward zero, even and odd lanes as 64-bit products */
  const __m512i pos = _mm512_set1_epi64((long long)1 << 30), neg = _mm512_set1_epi64(1 - ((long long)1 << 30));
  const __m512i bias31 = _mm512_set1_epi64(((long long)1 << 31) - 1);
  __m512i prod[2] = {_mm512_mul_epi32(a, m), _mm512_mul_epi32(_mm512_srli_epi64(a, 32), _mm512_srli_epi64(m, 32))};
  for (int h = 0; h < 2; ++h) {
    __mmask8 negative = _mm512_cmplt_epi64_mask(prod[h], zero);
    __m512i v = _mm512_add_epi64(prod[h], _mm512_mask_blend_epi64(negative, pos, neg));
    negative = _mm512_cmplt_epi64_mask(v, zero);
    prod[h] = _mm512_srai_epi64(_mm512_mask_add_epi64(v, negative, v, bias31), 31);
  }
  const __m512i hi = _mm512_mask_blend_epi32((__mmask16)0xAAAA, prod[0], _mm512_slli_epi64(prod[1], 32));
  /* rounding divide by 2^right */
  const __m512i mask = _mm512_sub_epi32(_mm512_sllv_epi32(_mm512_set1_epi32(1), right), _mm512_set1_epi32(1));
  const __m512i rem = _mm512_and_si512(hi, mask);
  __m512i thr = _mm512_srai_epi32(mask, 1);
  thr = _mm512_mask_add_epi32(thr, _mm512_cmplt_epi32_mask(hi, zero), thr, _mm512_set1_epi32(1));
  __m512i out = _mm512_srav_epi32(hi, right);
  out = _mm512_mask_add_epi32(out, _mm512_cmpgt_epi32_mask(rem, thr), out, _mm512_set1_epi32(1));
  /* clamp(out + zp, lo, hi) as clamp(out, lo − zp, hi − zp) + zp: the sum cannot wrap */
  out = _mm512_max_epi32(out, _mm512_set1_epi32(p->act_min - p->out_zp));
  out = _mm512_min_epi32(out, _mm512_set1_epi32(p->act_max - p->out_zp));
  out = _mm512_add_epi32(out, _mm512_set1_epi32(p->out_zp));
  _mm512_mask_cvtepi32_storeu_epi8(y, lanes, out);
}

/* y[l] for channels o0 .. o0 + n − 1 from their sums: + bias (wrapping), requantized. */
__attribute__((target("avx512f,avx512bw"))) static void store_channels(
    const edgeq_ternary_params* p, const int32_t* sums, int32_t o0, int32_t n, int8_t* y) {
  for (int32_t l = 0; l < n; l += 16) {
    const __mmask16 lanes = n - l >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - l)) - 1);
    const __m512i acc = _mm512_add_epi32(_mm512_maskz_loadu_epi32(lanes, sums + l), /* wraps */
                                         _mm512_maskz_loadu_epi32(lanes, p->bias + o0 + l));
    requant16_avx512(p, acc, o0 + l, n - l, y + l);
  }
}

/* All rows of an FC op from its prepared codes. Returns 0 when out of memory. */
__attribute__((target("avx512f,avx512bw"))) static int fc_codes_avx512(
    const edgeq_ternary_params* p, const uint8_t* codes, int32_t pairs, const int8_t* x,
    int64_t rows, int8_t* y) {
  const int32_t k = p->in_depth, o_n = p->out_depth, blocks = (o_n + FC_BLOCK - 1) / FC_BLOCK;
  const int64_t stride = 64 * (int64_t)pairs; /* bytes per block */
  int16_t* t = (int16_t*)aligned_alloc(64, 128 * (size_t)pairs);
  if (!t) return 0;
  int32_t sums[FC_QUAD * FC_BLOCK];
  for (int64_t r = 0; r < rows; ++r) {
    int8_t* yr = y + r * o_n;
    fc_tables_avx512(x + r * k, k, p->in_zp, 2 * pairs, t);
    for (int32_t b = 0; b < blocks; b += FC_QUAD) {
      const int nb = blocks - b < FC_QUAD ? blocks - b : FC_QUAD;
      if (nb == FC_QUAD)
        fc_blocks_avx512(codes + b * stride, stride, FC_QUAD, pairs, t, sums);
      else
        for (int j = 0; j < nb; ++j)
          fc_blocks_avx512(codes + (b + j) * stride, stride, 1, pairs, t, sums + FC_BLOCK * j);
      const int32_t o0 = b * FC_BLOCK;
      store_channels(p, sums, o0, o_n - o0 < nb * FC_BLOCK ? o_n - o0 : nb * FC_BLOCK, yr + o0);
    }
  }
  free(t);
  return 1;
}

/* Conv, AVX-512BW, the same lookups as FC: each tap is an FC over the C channels of one input
 * pixel. Tables are made once per input pixel (2·pairs groups of three channels), not per output
 * position; a tap that falls in the padding reads x = in_zp, which adds 0, and is skipped. Codes:
 * block b of 32 channels holds taps · pairs vectors (tap-major, as in the weights), laid out as
 * in the FC layout. Returns 0 when out of memory (the caller falls back). */
__attribute__((target("avx512f,avx512bw"))) static int conv_codes_avx512(
    const edgeq_ternary_params* p, const uint8_t* codes, int32_t pairs, const int8_t* x,
    const int32_t* xd, int8_t* y) {
  const int32_t n = xd[0], h = xd[1], wd = xd[2], c = xd[3], o_n = p->out_depth;
  const int32_t kh = p->kernel_h, kw = p->kernel_w, taps = kh * kw;
  const int32_t blocks = (o_n + FC_BLOCK - 1) / FC_BLOCK;
  int32_t pt = 0, pl = 0;
  const int32_t oh = out_size(h, kh, p->stride_h, p->dilation_h, p->padding, &pt);
  const int32_t ow = out_size(wd, kw, p->stride_w, p->dilation_w, p->padding, &pl);
  const int64_t per_pixel = 64 * (int64_t)pairs; /* int16 per pixel: 2·pairs tables of 32 */
  int16_t* t = (int16_t*)aligned_alloc(64, sizeof(int16_t) * (size_t)(per_pixel * h * wd));
  if (!t) return 0;
  int32_t sums[FC_BLOCK];
  for (int32_t b = 0; b < n; ++b) {
    const int8_t* xb = x + (int64_t)b * h * wd * c;
    for (int64_t i = 0; i < (int64_t)h * wd; ++i)
      fc_tables_avx512(xb + i * c, c, p->in_zp, 2 * pairs, t + i * per_pixel);
    for (int32_t oy = 0; oy < oh; ++oy)
      for (int32_t ox = 0; ox < ow; ++ox) {
        int8_t* yp = y + (((int64_t)b * oh + oy) * ow + ox) * o_n;
        for (int32_t blk = 0; blk < blocks; ++blk) {
          const uint8_t* cb = codes + (int64_t)blk * taps * pairs * 64;
          __m512i lo = _mm512_setzero_si512(), hi = lo, acc = lo;
          int32_t pending = 0; /* pairs in acc */
          for (int32_t ky = 0; ky < kh; ++ky) {
            const int32_t iy = oy * p->stride_h + ky * p->dilation_h - pt;
            if (iy < 0 || iy >= h) continue;
            for (int32_t kx = 0; kx < kw; ++kx) {
              const int32_t ix = ox * p->stride_w + kx * p->dilation_w - pl;
              if (ix < 0 || ix >= wd) continue;
              const int16_t* tp = t + ((int64_t)iy * wd + ix) * per_pixel;
              const uint8_t* cp = cb + (int64_t)(ky * kw + kx) * pairs * 64;
              for (int32_t q = 0; q < pairs; ++q) {
                acc = add_pair(acc, _mm512_load_si512((const void*)(cp + 64 * (int64_t)q)),
                               _mm512_load_si512((const void*)(tp + 64 * q)),
                               _mm512_load_si512((const void*)(tp + 64 * q + 32)));
                if (++pending == FC_FLUSH) {
                  widen_into(&lo, &hi, acc);
                  acc = _mm512_setzero_si512();
                  pending = 0;
                }
              }
            }
          }
          widen_into(&lo, &hi, acc);
          _mm512_storeu_si512((void*)sums, lo);
          _mm512_storeu_si512((void*)(sums + 16), hi);
          const int32_t o0 = blk * FC_BLOCK;
          store_channels(p, sums, o0, o_n - o0 < FC_BLOCK ? o_n - o0 : FC_BLOCK, yp + o0);
        }
      }
  }
  free(t);
  return 1;
}
#endif /* EDGEQ_X86 */

#ifdef EDGEQ_NEON
static int32_t dot_neon(const uint8_t* u, const uint8_t* P, const uint8_t* M, int32_t c,
                        int32_t ws, int32_t* balance) {
  static const uint8_t kBits[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t bits = vld1q_u8(kBits);
  uint32x4_t accp = vdupq_n_u32(0), accm = vdupq_n_u32(0);
  int32_t i = 0, bal = 0;
  while (i + 16 <= c) {
    /* 128 steps add at most 128 · 510 to a u16 lane: widen before that can overflow. */
    int32_t end = c - i > 16 * 128 ? i + 16 * 128 : c;
    uint16x8_t p16 = vdupq_n_u16(0), m16 = vdupq_n_u16(0);
    for (; i + 16 <= end; i += 16) {
      uint8x16_t v = vld1q_u8(u + i);
      const uint8_t* pw = P + (int64_t)(i / 16) * ws;
      const uint8_t* mw = M + (int64_t)(i / 16) * ws;
      uint8x16_t pb = vcombine_u8(vdup_n_u8(pw[0]), vdup_n_u8(pw[1]));
      uint8x16_t mb = vcombine_u8(vdup_n_u8(mw[0]), vdup_n_u8(mw[1]));
      bal += kPopcount8[pw[0]] + kPopcount8[pw[1]] - kPopcount8[mw[0]] - kPopcount8[mw[1]];
      p16 = vpadalq_u8(p16, vandq_u8(v, vtstq_u8(pb, bits)));
      m16 = vpadalq_u8(m16, vandq_u8(v, vtstq_u8(mb, bits)));
    }
    accp = vpadalq_u16(accp, p16);
    accm = vpadalq_u16(accm, m16);
  }
  int64_t total = (int64_t)vaddvq_u32(accp) - (int64_t)vaddvq_u32(accm);
  *balance += bal;
  if (i < c) total += dot_scalar(u + i, P + i / 16 * ws, M + i / 16 * ws, c - i, ws, balance);
  return (int32_t)total;
}
#endif /* EDGEQ_NEON */

static int g_isa = -2; /* -2: not yet chosen */

static int detect_isa(void) {
#ifdef EDGEQ_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) return EDGEQ_ISA_AVX512;
  if (__builtin_cpu_supports("avx2")) return EDGEQ_ISA_AVX2;
  return EDGEQ_ISA_SCALAR;
#elif defined(EDGEQ_NEON)
  return EDGEQ_ISA_NEON;
#else
  return EDGEQ_ISA_SCALAR;
#endif
}

int edgeq_ternary_set_isa(int level) {
  int best = detect_isa();
  if (level == EDGEQ_ISA_AUTO || level > best) {
    g_isa = best;
  } else if (level == EDGEQ_ISA_NEON && best != EDGEQ_ISA_NEON) {
    g_isa = EDGEQ_ISA_SCALAR;
  } else if (level != EDGEQ_ISA_NEON && best == EDGEQ_ISA_NEON) {
    g_isa = level <= EDGEQ_ISA_SCALAR ? EDGEQ_ISA_SCALAR : EDGEQ_ISA_NEON;
  } else {
    g_isa = level < 0 ? EDGEQ_ISA_SCALAR : level;
  }
  return g_isa;
}

static dot_fn pick_dot(void) {
  if (g_isa == -2) edgeq_ternary_set_isa(EDGEQ_ISA_AUTO);
  switch (g_isa) {
#ifdef EDGEQ_X86
    case EDGEQ_ISA_AVX512:
      return dot_avx512;
    case EDGEQ_ISA_AVX2:
      return dot_avx2;
#endif
#ifdef EDGEQ_NEON
    case EDGEQ_ISA_NEON:
      return dot_neon;
#endif
    default:
      return dot_scalar;
  }
}

const char* edgeq_ternary_isa_name(void) {
  if (g_isa == -2) edgeq_ternary_set_isa(EDGEQ_ISA_AUTO);
  switch (g_isa) {
    case EDGEQ_ISA_AVX512:
      return "avx512bw";
    case EDGEQ_ISA_AVX2:
      return "avx2";
    case EDGEQ_ISA_NEON:
      return "neon";
    default:
      return "scalar";
  }
}

/* ------------------------------------------------------------------------------------------ */
/* Format parsing and shapes                                                                   */

static int32_t rb_of(int32_t depth) { return 4 * ((depth + 15) / 16); }

int edgeq_ternary_parse(const int32_t* q, int64_t n, edgeq_ternary_params* p, char* err,
                        size_t errlen) {
  if (!q || n < EDGEQ_TERNARY_HEADER_WORDS)
    FAIL(E_FORMAT, "qparams has %lld words, expected at least %d", (long long)n,
         EDGEQ_TERNARY_HEADER_WORDS);
  if ((uint32_t)q[0] != EDGEQ_TERNARY_MAGIC) FAIL(E_FORMAT, "bad magic: not an edgeq ternary op");
  if (q[1] != EDGEQ_TERNARY_FORMAT_VERSION)
    FAIL(E_FORMAT, "format version %d, this kernel reads %d", q[1], EDGEQ_TERNARY_FORMAT_VERSION);
  if (q[2] != EDGEQ_TERNARY_KIND_FC && q[2] != EDGEQ_TERNARY_KIND_CONV2D)
    FAIL(E_FORMAT, "unknown op kind %d", q[2]);
  if (q[3] != EDGEQ_TERNARY_HEADER_WORDS) FAIL(E_FORMAT, "header_words %d, expected 20", q[3]);
  p->kind = q[2];
  p->in_zp = q[4];
  p->out_zp = q[5];
  p->act_min = q[6];
  p->act_max = q[7];
  p->activation = q[8];
  p->in_depth = q[9];
  p->out_depth = q[10];
  p->kernel_h = q[11];
  p->kernel_w = q[12];
  p->stride_h = q[13];
  p->stride_w = q[14];
  p->dilation_h = q[15];
  p->dilation_w = q[16];
  p->padding = q[17];
  p->row_bytes = q[18];
  if (p->in_zp < -128 || p->in_zp > 127 || p->out_zp < -128 || p->out_zp > 127)
    FAIL(E_FORMAT, "zero point outside [-128, 127]");
  if (p->act_min < -128 || p->act_max > 127 || p->act_min > p->act_max)
    FAIL(E_FORMAT, "activation range [%d, %d] invalid", p->act_min, p->act_max);
  if (p->in_depth < 1 || p->out_depth < 1 || p->kernel_h < 1 || p->kernel_w < 1 ||
      p->stride_h < 1 || p->stride_w < 1 || p->dilation_h < 1 || p->dilation_w < 1)
    FAIL(E_FORMAT, "depths, kernel, stride and dilation must be >= 1");
  if (p->padding != 0 && p->padding != 1) FAIL(E_FORMAT, "padding %d invalid", p->padding);
  if (p->row_bytes != rb_of(p->in_depth)) FAIL(E_FORMAT, "row_bytes does not match in_depth");
  if ((int64_t)p->in_depth * p->kernel_h * p->kernel_w > ((int64_t)1 << 22))
    FAIL(E_FORMAT, "reduction depth exceeds 2^22");
  if (p->kind == EDGEQ_TERNARY_KIND_FC &&
      (p->kernel_h != 1 || p->kernel_w != 1 || p->stride_h != 1 || p->stride_w != 1 ||
       p->dilation_h != 1 || p->dilation_w != 1 || p->padding != 0))
    FAIL(E_FORMAT, "an FC op has kernel, stride and dilation 1 and padding VALID");
  if (n < EDGEQ_TERNARY_HEADER_WORDS + 3 * (int64_t)p->out_depth)
    FAIL(E_FORMAT, "qparams has %lld words, expected >= %lld", (long long)n,
         (long long)EDGEQ_TERNARY_HEADER_WORDS + 3 * (int64_t)p->out_depth);
  p->bias = q + EDGEQ_TERNARY_HEADER_WORDS;
  p->multiplier = p->bias + p->out_depth;
  p->shift = p->multiplier + p->out_depth;
  /* min/max reductions first (they vectorize; this runs on every call), the culprit only if bad */
  const int32_t *mult = p->multiplier, *shift = p->shift, o_n = p->out_depth;
  int32_t mmin = 0, smin = 0, smax = 0;
  for (int32_t o = 0; o < o_n; ++o) {
    mmin = mult[o] < mmin ? mult[o] : mmin;
    smin = shift[o] < smin ? shift[o] : smin;
    smax = shift[o] > smax ? shift[o] : smax;
  }
  const int bad = mmin < 0 || smin < -31 || smax > 30;
  for (int32_t o = 0; bad && o < p->out_depth; ++o) {
    if (p->multiplier[o] < 0) FAIL(E_FORMAT, "multiplier[%d] negative", o);
    if (p->shift[o] < -31 || p->shift[o] > 30) FAIL(E_FORMAT, "shift[%d] outside [-31, 30]", o);
  }
  return E_OK;
}

/* Output size and padding-before along one axis (TFLite's rule); -1 if the input is too small. */
static int32_t out_size(int32_t in, int32_t k, int32_t s, int32_t d, int32_t pad, int32_t* before) {
  int32_t eff = (k - 1) * d + 1;
  int32_t out = pad == 1 ? (in + s - 1) / s : (in - eff + s) / s;
  if (in < 1 || out < 1) return -1;
  int32_t total = (out - 1) * s + eff - in;
  if (total < 0) total = 0;
  if (before) *before = pad == 1 ? total / 2 : 0;
  return out;
}

int edgeq_ternary_infer_shape(int kind, const int32_t* x, int xr, const int32_t* w, int wr,
                              const int32_t* q, int qr, int32_t* out, int* out_rank, char* err,
                              size_t errlen) {
  if (xr < 1 || xr > EDGEQ_TERNARY_MAX_RANK) FAIL(E_SHAPE, "input rank %d unsupported", xr);
  if (kind == EDGEQ_TERNARY_KIND_FC) {
    if (wr != 2 || qr != 1) FAIL(E_SHAPE, "FC needs weights [O, RB] and 1-D qparams");
    if (rb_of(x[xr - 1]) != w[1])
      FAIL(E_SHAPE, "input depth %d does not match weight rows of %d bytes", x[xr - 1], w[1]);
    for (int i = 0; i < xr - 1; ++i) out[i] = x[i];
    out[xr - 1] = w[0];
    *out_rank = xr;
    return E_OK;
  }
  if (kind != EDGEQ_TERNARY_KIND_CONV2D) FAIL(E_SHAPE, "unknown op kind %d", kind);
  if (xr != 4 || wr != 4 || qr != 6)
    FAIL(E_SHAPE, "conv needs NHWC input, weights [O, KH, KW, RB] and 6-D qparams");
  if (rb_of(x[3]) != w[3])
    FAIL(E_SHAPE, "input depth %d does not match weight rows of %d bytes", x[3], w[3]);
  if (q[0] < 1 || q[1] < 1 || q[2] < 1 || q[3] < 1 || q[4] < 1 || q[4] > 2)
    FAIL(E_SHAPE, "qparams shape does not encode a valid stride/dilation/padding");
  int32_t oh = out_size(x[1], w[1], q[0], q[2], q[4] - 1, NULL);
  int32_t ow = out_size(x[2], w[2], q[1], q[3], q[4] - 1, NULL);
  if (oh < 1 || ow < 1) FAIL(E_SHAPE, "input %dx%d too small for the kernel", x[1], x[2]);
  out[0] = x[0];
  out[1] = oh;
  out[2] = ow;
  out[3] = w[0];
  *out_rank = 4;
  return E_OK;
}

static int eval_fc(const edgeq_ternary_params* p, const uint8_t* w, const int8_t* x, int64_t rows,
                   int8_t* y, char* err, size_t errlen) {
  const int32_t k = p->in_depth, o_n = p->out_depth, rb = p->row_bytes;
  dot_fn dot = pick_dot();
  uint8_t* u = (uint8_t*)malloc((size_t)(rows * k) + 64);
  if (!u) FAIL(E_MEMORY, "out of memory");
  for (int64_t i = 0; i < rows * k; ++i) u[i] = (uint8_t)x[i] ^ 0x80u;
  const uint32_t corr = (uint32_t)(128 + p->in_zp);
  for (int32_t o = 0; o < o_n; ++o) {
    /* the FC layout: word w of channel o's +1 plane at blk + 2·(2w·n + l), −1 plane n words on */
    const int32_t b0 = o - o % FC_BLOCK, l = o - b0, n = o_n - b0 < FC_BLOCK ? o_n - b0 : FC_BLOCK;
    const uint8_t* plus = w + (int64_t)b0 * rb + 2 * l;
    for (int64_t r = 0; r < rows; ++r) {
      int32_t bal = 0;
      uint32_t s = (uint32_t)dot(u + r * k, plus, plus + 2 * n, k, 4 * n, &bal);
      /* bias + (Σ₊u − Σ₋u) − (128 + in_zp)(n₊ − n₋), wrapping in 32 bits */
      int32_t acc = (int32_t)((uint32_t)p->bias[o] + s - corr * (uint32_t)bal);
      y[r * o_n + o] = requant(acc, p->multiplier[o], p->shift[o], p->out_zp, p->act_min, p->act_max);
    }
  }
  free(u);
  return E_OK;
}

static int eval_conv(const edgeq_ternary_params* p, const uint8_t* w, const int8_t* x,
                     const int32_t* xd, int8_t* y, char* err, size_t errlen) {
  const int32_t n = xd[0], h = xd[1], wd = xd[2], c = xd[3];
  const int32_t kh = p->kernel_h, kw = p->kernel_w, sh = p->stride_h, sw = p->stride_w;
  const int32_t dh = p->dilation_h, dw = p->dilation_w, rb = p->row_bytes, half = rb / 2;
  const int32_t o_n = p->out_depth, taps = kh * kw;
  int32_t pt = 0, pl = 0;
  int32_t oh = out_size(h, kh, sh, dh, p->padding, &pt);
  int32_t ow = out_size(wd, kw, sw, dw, p->padding, &pl);
  if (oh < 1 || ow < 1) FAIL(E_SHAPE, "input %dx%d too small for the kernel", h, wd);
  /* A padded copy in the u domain: padding holds in_zp + 128, i.e. a real zero, so the
   * per-channel correction below is the same for every output position. */
  int32_t hp = (oh - 1) * sh + (kh - 1) * dh + 1, wp = (ow - 1) * sw + (kw - 1) * dw + 1;
  if (hp < pt + h) hp = pt + h;
  if (wp < pl + wd) wp = pl + wd;
  size_t ubytes = (size_t)n * (size_t)hp * (size_t)wp * (size_t)c;
  uint8_t* u = (uint8_t*)malloc(ubytes + 64);
  if (!u) FAIL(E_MEMORY, "out of memory");
  memset(u, (uint8_t)p->in_zp ^ 0x80u, ubytes);
  for (int32_t b = 0; b < n; ++b)
    for (int32_t iy = 0; iy < h; ++iy) {
      const int8_t* src = x + (((int64_t)b * h + iy) * wd) * c;
      uint8_t* dst = u + (((int64_t)b * hp + iy + pt) * wp + pl) * c;
      for (int64_t i = 0; i < (int64_t)wd * c; ++i) dst[i] = (uint8_t)src[i] ^ 0x80u;
    }
  const uint32_t corr = (uint32_t)(128 + p->in_zp);
  dot_fn dot = pick_dot();
  for (int32_t b = 0; b < n; ++b)
    for (int32_t oy = 0; oy < oh; ++oy)
      for (int32_t ox = 0; ox < ow; ++ox) {
        int8_t* yp = y + (((int64_t)b * oh + oy) * ow + ox) * o_n;
        const uint8_t* base = u + (((int64_t)b * hp + oy * sh) * wp + ox * sw) * c;
        for (int32_t o = 0; o < o_n; ++o) {
          uint32_t s = (uint32_t)p->bias[o];
          int32_t bal = 0;
          const uint8_t* row = w + (int64_t)o * taps * rb;
          for (int32_t ky = 0; ky < kh; ++ky)
            for (int32_t kx = 0; kx < kw; ++kx, row += rb)
              s += (uint32_t)dot(base + ((int64_t)ky * dh * wp + (int64_t)kx * dw) * c, row,
                                 row + half, c, 2, &bal);
          yp[o] = requant((int32_t)(s - corr * (uint32_t)bal), p->multiplier[o], p->shift[o],
                          p->out_zp, p->act_min, p->act_max);
        }
      }
  free(u);
  return E_OK;
}

struct edgeq_ternary_prepared {
  edgeq_ternary_params p; /* bias, multiplier and shift point into q */
  int32_t* q;             /* a copy of the qparams words */
  uint8_t* w;             /* a copy of the packed weights (format 2) */
  uint8_t* codes;         /* AVX-512: the prepared layout (make_codes); NULL otherwise */
  int32_t pairs;          /* code pairs per channel in codes */
  int64_t n_words, weight_bytes;
};

#ifdef EDGEQ_X86
/* The prepared layout of fc_codes_avx512 and conv_codes_avx512: block b of 32 channels holds
 * taps · pairs vectors of 64 bytes (taps = 1 for FC); byte 2l + h of vector (tap, j) is the base-3
 * code of channel 32b + l on inputs (channels) 3(2j + h) .. 3(2j + h) + 2 of that tap (digit i for
 * input i of the group: 0, 1, 2 for weight 0, +1, −1). Channels and inputs past the op's are 0. */
static uint8_t* make_codes(const edgeq_ternary_params* p, const uint8_t* w, int32_t* pairs_out) {
  static const uint8_t kPow3[3] = {1, 3, 9};
  const int32_t k = p->in_depth, o_n = p->out_depth, rb = p->row_bytes;
  const int32_t taps = p->kernel_h * p->kernel_w, fc = p->kind == EDGEQ_TERNARY_KIND_FC;
  const int32_t pairs = ((k + 2) / 3 + 1) / 2, blocks = (o_n + FC_BLOCK - 1) / FC_BLOCK;
  const size_t bytes = (size_t)blocks * (size_t)taps * (size_t)pairs * 64;
  uint8_t* codes = (uint8_t*)aligned_alloc(64, bytes);
  if (!codes) return NULL;
  memset(codes, 0, bytes);
  for (int32_t o = 0; o < o_n; ++o) {
    const int32_t b0 = o - o % FC_BLOCK, l = o - b0, n = o_n - b0 < FC_BLOCK ? o_n - b0 : FC_BLOCK;
    for (int32_t tap = 0; tap < taps; ++tap) {
      /* +1 and −1 planes: the FC layout (as in eval_fc), or a conv row (as in eval_conv) */
      const uint8_t* plus = fc ? w + (int64_t)b0 * rb + 2 * l : w + ((int64_t)o * taps + tap) * rb;
      const uint8_t* minus = fc ? plus + 2 * n : plus + rb / 2;
      const int32_t ws = fc ? 4 * n : 2;
      uint8_t* dst = codes + ((int64_t)(b0 / FC_BLOCK) * taps + tap) * pairs * 64 + 2 * l;
      for (int32_t i = 0; i < k; ++i) {
        const uint32_t bit = 1u << (i % 16);
        const int t = ((word16(plus, i / 16, ws) & bit) != 0) - ((word16(minus, i / 16, ws) & bit) != 0);
        const int32_t g = i / 3;
        if (t) dst[64 * (g / 2) + g % 2] += (uint8_t)((t > 0 ? 1 : 2) * kPow3[i % 3]);
      }
    }
  }
  *pairs_out = pairs;
  return codes;
}
#endif

void edgeq_ternary_release(edgeq_ternary_prepared* op) {
  if (!op) return;
  free(op->q);
  free(op->w);
  free(op->codes);
  free(op);
}

int edgeq_ternary_prepare(const int32_t* q, int64_t n_words, const uint8_t* w,
                          int64_t weight_bytes, edgeq_ternary_prepared** out, char* err,
                          size_t errlen) {
  *out = NULL;
  edgeq_ternary_params p;
  int rc = edgeq_ternary_parse(q, n_words, &p, err, errlen);
  if (rc) return rc;
  int64_t want_w = (int64_t)p.out_depth * p.kernel_h * p.kernel_w * p.row_bytes;
  if (weight_bytes != want_w)
    FAIL(E_SHAPE, "packed weights have %lld bytes, expected %lld", (long long)weight_bytes,
         (long long)want_w);
  edgeq_ternary_prepared* op = (edgeq_ternary_prepared*)calloc(1, sizeof(*op));
  if (op) {
    op->q = (int32_t*)malloc(sizeof(int32_t) * (size_t)n_words);
    op->w = (uint8_t*)malloc((size_t)weight_bytes + 1);
  }
  if (!op || !op->q || !op->w) {
    edgeq_ternary_release(op);
    FAIL(E_MEMORY, "out of memory");
  }
  op->n_words = n_words;
  op->weight_bytes = weight_bytes;
  memcpy(op->q, q, sizeof(int32_t) * (size_t)n_words);
  memcpy(op->w, w, (size_t)weight_bytes);
  edgeq_ternary_parse(op->q, n_words, &op->p, NULL, 0); /* the same words: cannot fail */
#ifdef EDGEQ_X86
  /* Without the codes (out of memory) the op still runs, on the format-2 path. */
  if (pick_dot() == dot_avx512) op->codes = make_codes(&op->p, op->w, &op->pairs);
#endif
  *out = op;
  return E_OK;
}

int edgeq_ternary_prepared_from(const edgeq_ternary_prepared* op, const int32_t* q,
                                int64_t n_words, const uint8_t* w, int64_t weight_bytes) {
  const size_t edge = weight_bytes < 64 ? (size_t)weight_bytes : 64;
  return op->n_words == n_words && op->weight_bytes == weight_bytes &&
         !memcmp(op->q, q, 4 * EDGEQ_TERNARY_HEADER_WORDS) && !memcmp(op->w, w, edge) &&
         !memcmp(op->w + weight_bytes - edge, w + weight_bytes - edge, edge);
}

int edgeq_ternary_run(const edgeq_ternary_prepared* op, const int8_t* x, const int32_t* xd,
                      int xr, int8_t* y, int64_t y_len, char* err, size_t errlen) {
  const edgeq_ternary_params* p = &op->p;
  if (xr < 1 || xr > EDGEQ_TERNARY_MAX_RANK) FAIL(E_SHAPE, "input rank %d unsupported", xr);
  if (xd[xr - 1] != p->in_depth)
    FAIL(E_SHAPE, "input depth %d != op in_depth %d", xd[xr - 1], p->in_depth);
  if (p->kind == EDGEQ_TERNARY_KIND_FC) {
    int64_t rows = 1;
    for (int i = 0; i < xr - 1; ++i) rows *= xd[i];
    if (y_len != rows * p->out_depth)
      FAIL(E_SHAPE, "output has %lld elements, expected %lld", (long long)y_len,
           (long long)(rows * p->out_depth));
#ifdef EDGEQ_X86
    if (op->codes && pick_dot() == dot_avx512 && fc_codes_avx512(p, op->codes, op->pairs, x, rows, y))
      return E_OK;
#endif
    return eval_fc(p, op->w, x, rows, y, err, errlen);
  }
  if (xr != 4) FAIL(E_SHAPE, "conv input must be NHWC (rank 4), got rank %d", xr);
  int32_t oh = out_size(xd[1], p->kernel_h, p->stride_h, p->dilation_h, p->padding, NULL);
  int32_t ow = out_size(xd[2], p->kernel_w, p->stride_w, p->dilation_w, p->padding, NULL);
  if (oh < 1 || ow < 1) FAIL(E_SHAPE, "input %dx%d too small for the kernel", xd[1], xd[2]);
  if (y_len != (int64_t)xd[0] * oh * ow * p->out_depth)
    FAIL(E_SHAPE, "output has %lld elements, expected %lld", (long long)y_len,
         (long long)xd[0] * oh * ow * p->out_depth);
#ifdef EDGEQ_X86
  if (op->codes && pick_dot() == dot_avx512 && conv_codes_avx512(p, op->codes, op->pairs, x, xd, y))
    return E_OK;
#endif
  return eval_conv(p, op->w, x, xd, y, err, errlen);
}

int edgeq_ternary_eval(const int32_t* q, int64_t n_words, const uint8_t* w, int64_t weight_bytes,
                       const int8_t* x, const int32_t* xd, int xr, int8_t* y, int64_t y_len,
                       char* err, size_t errlen) {
  edgeq_ternary_prepared* op;
  int rc = edgeq_ternary_prepare(q, n_words, w, weight_bytes, &op, err, errlen);
  if (rc) return rc;
  rc = edgeq_ternary_run(op, x, xd, xr, y, y_len, err, errlen);
  edgeq_ternary_release(op);
  return rc;
}
