// Block-quantized matrix products for the scratch engine's decode steps on the CPU.
//
// Weights are stored in blocks of 32 along each row, as GGUF does: q8 = int8 values with one fp16
// scale per block (GGUF Q8_0), q4 = 4-bit values with an fp16 scale and an fp16 minimum per block
// (GGUF Q4_1: w = d * q + m, nibble j holds element j, its high half element j + 16). Activations
// are quantized per block of 32 to int8 with a float scale (like llama.cpp's Q8 activations), so
// a block's dot product is an integer sum: 32 int8 x int8 (or uint4 x int8) products.
//
// Three paths compute those sums, the best this CPU has chosen at run time: AVX-512 VNNI (vpdpbusd:
// u8 x s8 -> s32 in one instruction, two blocks per 512-bit register), AVX2 (maddubs/madd: u8 x s8 ->
// s16 pairs -> s32), and a portable loop. All compute the same integer sums; only the order of the
// float accumulation differs. A caller may ask for a lesser path (tests compare each).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cmath>
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "kernels.h"

namespace hearth {

// x [M, K] float -> xq [M, nb*32] int8 (zero padded), dx [M, nb] scale, sx [M, nb] = dx * sum(xq)
void quantize_rows(const float* x, int64_t M, int64_t K, int64_t nb, int8_t* xq, float* dx, float* sx) {
  for (int64_t m = 0; m < M; ++m) {
    const float* row = x + m * K;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t start = b * QK, end = std::min(K, start + QK);
      float amax = 0.f;
      for (int64_t i = start; i < end; ++i) amax = std::max(amax, std::fabs(row[i]));
      const float d = amax / 127.f;
      const float id = d != 0.f ? 1.f / d : 0.f;
      int8_t* q = xq + m * nb * QK + start;
      int32_t sum = 0;
      for (int64_t i = start; i < start + QK; ++i) {
        const float scaled = i < end ? row[i] * id : 0.f;
        const int32_t v = static_cast<int32_t>(std::nearbyint(scaled));  // ties to even, as torch.round
        q[i - start] = static_cast<int8_t>(v);
        sum += v;
      }
      dx[m * nb + b] = d;
      sx[m * nb + b] = d * static_cast<float>(sum);
    }
  }
}

// The same quantization 8 values at a time: max |x| is exact in any order, x * (1/d) is the same
// product, and rounding is to nearest even in both, so the values and scales are identical.
__attribute__((target("avx2,fma,f16c"))) void quantize_rows_avx2(const float* x, int64_t M, int64_t K, int64_t nb,
                                                                   int8_t* xq, float* dx, float* sx) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  for (int64_t m = 0; m < M; ++m) {
    const float* row = x + m * K;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t start = b * QK, end = std::min(K, start + QK);
      alignas(32) float v[QK] = {};
      std::memcpy(v, row + start, (end - start) * sizeof(float));
      __m256 amax8 = _mm256_setzero_ps();
      for (int i = 0; i < QK; i += 8) amax8 = _mm256_max_ps(amax8, _mm256_andnot_ps(sign, _mm256_load_ps(v + i)));
      __m128 a4 = _mm_max_ps(_mm256_castps256_ps128(amax8), _mm256_extractf128_ps(amax8, 1));
      a4 = _mm_max_ps(a4, _mm_movehl_ps(a4, a4));
      a4 = _mm_max_ss(a4, _mm_movehdup_ps(a4));
      const float d = _mm_cvtss_f32(a4) / 127.f;
      const __m256 id = _mm256_set1_ps(d != 0.f ? 1.f / d : 0.f);
      __m256i total = _mm256_setzero_si256();
      int8_t* q = xq + m * nb * QK + start;
      for (int i = 0; i < QK; i += 8) {
        const __m256i r = _mm256_cvtps_epi32(
            _mm256_round_ps(_mm256_mul_ps(_mm256_load_ps(v + i), id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        total = _mm256_add_epi32(total, r);
        alignas(32) int32_t lanes[8];
        _mm256_store_si256((__m256i*)lanes, r);
        for (int j = 0; j < 8; ++j) q[i + j] = static_cast<int8_t>(lanes[j]);
      }
      alignas(32) int32_t sums[8];
      _mm256_store_si256((__m256i*)sums, total);
      int32_t sum = 0;
      for (int j = 0; j < 8; ++j) sum += sums[j];
      dx[m * nb + b] = d;
      sx[m * nb + b] = d * static_cast<float>(sum);
    }
  }
}

float half_to_float(uint16_t h) {
  c10::Half v;
  std::memcpy(&v, &h, sizeof(h));
  return static_cast<float>(v);
}

// ---- portable reference loops ----

float dot_q8_portable(const int8_t* w, const uint16_t* wd, const int8_t* xq, const float* dx, int64_t nb) {
  float acc = 0.f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t s = 0;
    for (int i = 0; i < QK; ++i) s += int32_t(w[b * QK + i]) * int32_t(xq[b * QK + i]);
    acc += half_to_float(wd[b]) * dx[b] * float(s);
  }
  return acc;
}

float dot_q4_portable(const uint8_t* w, const uint16_t* wd, const uint16_t* wm, const int8_t* xq,
                      const float* dx, const float* sx, int64_t nb) {
  float acc = 0.f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t s = 0;
    for (int i = 0; i < QK / 2; ++i) {
      const uint8_t byte = w[b * QK / 2 + i];
      s += int32_t(byte & 0x0F) * int32_t(xq[b * QK + i]);
      s += int32_t(byte >> 4) * int32_t(xq[b * QK + i + QK / 2]);
    }
    acc += half_to_float(wd[b]) * dx[b] * float(s) + half_to_float(wm[b]) * sx[b];
  }
  return acc;
}

// ---- AVX2 ----

__attribute__((target("avx2,fma,f16c"))) inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// the 32 nibbles of a q4 block as unsigned bytes in element order
__attribute__((target("avx2,fma,f16c"))) inline __m256i unpack_q4(const uint8_t* qs) {
  const __m128i raw = _mm_loadu_si128((const __m128i*)qs);
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// fp16 scales of one weight row as floats
__attribute__((target("avx2,fma,f16c"))) inline void scales_avx2(const uint16_t* h, float* out, int64_t nb) {
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8)
    _mm256_storeu_ps(out + b, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(h + b))));
  for (; b < nb; ++b) out[b] = _cvtsh_ss(h[b]);
}

constexpr int64_t MULTI = 8;
constexpr int64_t MULTI_VNNI = 4;

// One weight row against MR activation rows (a compile-time count, so the accumulators stay in
// registers): each weight block is loaded and decoded once for all of them. Even blocks accumulate
// in acc0, odd ones in acc1 (two chains hide the FMA latency), and a row's arithmetic is the same
// whatever MR is, so a speculative verify's rows equal one-row steps bit for bit.
// q8: |w| for maddubs' unsigned side, x takes w's sign.
template <int MR>
__attribute__((target("avx2,fma,f16c"))) inline void q8_block(const int8_t* row, const float* d, int64_t nb,
                                                               const int8_t* xq, const float* dx, int64_t b, __m256* acc) {
    const __m256i w = _mm256_loadu_si256((const __m256i*)(row + b * QK));
    const __m256i aw = _mm256_sign_epi8(w, w);
    const float db = d[b];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m256i sx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i*)(xq + (m * nb + b) * QK)), w);
      const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1)));
      acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(db * dx[m * nb + b]), p, acc[m]);
    }
}

template <int MR>
__attribute__((target("avx2,fma,f16c"))) void q8_row_multi_avx2(const int8_t* row, const float* d, int64_t nb,
                                                                  const int8_t* xq, const float* dx,
                                                                  float* y, int64_t N, int64_t n) {
  __m256 acc0[MR], acc1[MR];
  for (int m = 0; m < MR; ++m) acc0[m] = acc1[m] = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) q8_block<MR>(row, d, nb, xq, dx, b, acc0), q8_block<MR>(row, d, nb, xq, dx, b + 1, acc1);
  if (b < nb) q8_block<MR>(row, d, nb, xq, dx, b, acc0);
  for (int m = 0; m < MR; ++m) y[m * N + n] += hsum(_mm256_add_ps(acc0[m], acc1[m]));
}

__attribute__((target("avx2,fma,f16c"))) inline float dot_f32_avx2(const float* a, const float* b, int64_t n);

// q4: the nibbles (0..15) are maddubs' unsigned side as they are; the minimums add m_b * sum(x_b).

template <int MR>
__attribute__((target("avx2,fma,f16c"))) inline void q4_block(const uint8_t* row, const float* d, int64_t nb,
                                                               const int8_t* xq, const float* dx, int64_t b, __m256* acc) {
    const __m256i w = unpack_q4(row + b * QK / 2);
    const float db = d[b];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m256i pairs = _mm256_maddubs_epi16(w, _mm256_loadu_si256((const __m256i*)(xq + (m * nb + b) * QK)));
      const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
      acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(db * dx[m * nb + b]), p, acc[m]);
    }
}

template <int MR>
__attribute__((target("avx2,fma,f16c"))) void q4_row_multi_avx2(const uint8_t* row, const float* d, const float* mins,
                                                                  int64_t nb, const int8_t* xq, const float* dx,
                                                                  const float* sx, float* y, int64_t N, int64_t n) {
  __m256 acc0[MR], acc1[MR];
  for (int m = 0; m < MR; ++m) acc0[m] = acc1[m] = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= nb; b += 2) q4_block<MR>(row, d, nb, xq, dx, b, acc0), q4_block<MR>(row, d, nb, xq, dx, b + 1, acc1);
  if (b < nb) q4_block<MR>(row, d, nb, xq, dx, b, acc0);
  // the minimums' part: sum over blocks of m_b * (dx_b * sum of the block's activation values)
  for (int m = 0; m < MR; ++m) y[m * N + n] += hsum(_mm256_add_ps(acc0[m], acc1[m])) + dot_f32_avx2(mins, sx + m * nb, nb);
}

// MR = 1..8 picked at run time
#define HEARTH_DISPATCH_ROWS(CALL)                                                   \
  switch (rows) {                                                                    \
    case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break;         \
    case 4: CALL(4); break; case 5: CALL(5); break; case 6: CALL(6); break;         \
    case 7: CALL(7); break; default: CALL(8); break;                                \
  }

// One weight row against every activation row, 8 at a time; the row's fp16 block scales (and
// minimums) are converted once into `d`.
__attribute__((target("avx2,fma,f16c"))) void q8_row_avx2(const int8_t* row, const uint16_t* wd, int64_t nb,
                                                            const int8_t* xq, const float* dx, int64_t M,
                                                            float* y, int64_t N, int64_t n, float* d) {
  scales_avx2(wd, d, nb);
  for (int64_t m0 = 0; m0 < M; m0 += MULTI) {
    const int64_t rows = std::min(MULTI, M - m0);
#define HEARTH_Q8(R) q8_row_multi_avx2<R>(row, d, nb, xq + m0 * nb * QK, dx + m0 * nb, y + m0 * N, N, n)
    HEARTH_DISPATCH_ROWS(HEARTH_Q8)
#undef HEARTH_Q8
  }
}

// sum of a[i] * b[i] over n floats
__attribute__((target("avx2,fma,f16c"))) inline float dot_f32_avx2(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float total = hsum(acc);
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

__attribute__((target("avx2,fma,f16c"))) void q4_row_avx2(const uint8_t* row, const uint16_t* wd, const uint16_t* wm,
                                                            int64_t nb, const int8_t* xq, const float* dx,
                                                            const float* sx, int64_t M, float* y, int64_t N,
                                                            int64_t n, float* d) {
  float* mins = d + nb;
  scales_avx2(wd, d, nb);
  scales_avx2(wm, mins, nb);
  for (int64_t m0 = 0; m0 < M; m0 += MULTI) {
    const int64_t rows = std::min(MULTI, M - m0);
#define HEARTH_Q4(R) q4_row_multi_avx2<R>(row, d, mins, nb, xq + m0 * nb * QK, dx + m0 * nb, sx + m0 * nb, y + m0 * N, N, n)
    HEARTH_DISPATCH_ROWS(HEARTH_Q4)
#undef HEARTH_Q4
  }
}


// ---- AVX-512 VNNI ----
// Two blocks per 512-bit register: lanes 0-7 hold block b's partial sums, lanes 8-15 block b + 1's.
// An odd last block loads only the low half (masked loads read nothing past it) and its second
// scale is zero. The activations' scales come expanded (dxe: each block's scale in 8 lanes, padded
// to an even block count), so a row's scale vector is one load.
#define HEARTH_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")))

HEARTH_AVX512 inline __m512 pair_scales(const float* d, int64_t b, bool tail) {
  return _mm512_insertf32x8(_mm512_set1_ps(d[b]), _mm256_set1_ps(tail ? 0.f : d[b + 1]), 1);
}

// q8: |w| is vpdpbusd's unsigned side; x takes w's sign (negated where w < 0). TAIL: only block b
// is left (the last of an odd count).
template <int MR, bool TAIL>
HEARTH_AVX512 inline void q8_pair(const int8_t* row, const float* d, int64_t nb, const int8_t* xq,
                                  const float* dxe, int64_t b, __m512* acc) {
  const __mmask64 part = TAIL ? 0xFFFFFFFFull : ~0ull;
  const __m512i w = _mm512_maskz_loadu_epi8(part, row + b * QK);
  const __m512i aw = _mm512_abs_epi8(w);
  const __mmask64 negative = _mm512_movepi8_mask(w);
  const __m512 dw = pair_scales(d, b, TAIL);
  const int64_t pairs = (nb + 1) / 2;
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
    __m512i x = _mm512_maskz_loadu_epi8(part, xq + (m * nb + b) * QK);
    x = _mm512_mask_sub_epi8(x, negative, _mm512_setzero_si512(), x);
    const __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, x);
    const __m512 scale = _mm512_mul_ps(dw, _mm512_loadu_ps(dxe + (m * pairs + b / 2) * 16));
    acc[m] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sums), acc[m]);
  }
}

// q4: the nibbles (0..15) are the unsigned side as they are: the two blocks' 16 bytes each, low
// nibbles (elements 0-15) then high (16-31), in register order [b low, b high, b+1 low, b+1 high].
template <int MR, bool TAIL>
HEARTH_AVX512 inline void q4_pair(const uint8_t* row, const float* d, int64_t nb, const int8_t* xq,
                                  const float* dxe, int64_t b, __m512* acc) {
  const __mmask64 part = TAIL ? 0xFFFFFFFFull : ~0ull;
  const __m256i raw = _mm256_maskz_loadu_epi8(TAIL ? 0xFFFFu : 0xFFFFFFFFu, row + b * QK / 2);
  __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(raw), _mm256_srli_epi16(raw, 4), 1);
  w = _mm512_and_si512(_mm512_shuffle_i64x2(w, w, _MM_SHUFFLE(3, 1, 2, 0)), _mm512_set1_epi8(0x0F));
  const __m512 dw = pair_scales(d, b, TAIL);
  const int64_t pairs = (nb + 1) / 2;
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) {
    const __m512i x = _mm512_maskz_loadu_epi8(part, xq + (m * nb + b) * QK);
    const __m512i sums = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, x);
    const __m512 scale = _mm512_mul_ps(dw, _mm512_loadu_ps(dxe + (m * pairs + b / 2) * 16));
    acc[m] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sums), acc[m]);
  }
}

template <int MR, bool Q4, bool TAIL>
HEARTH_AVX512 inline void pair(const void* row, const float* d, int64_t nb, const int8_t* xq, const float* dxe,
                               int64_t b, __m512* acc) {
  if (Q4) q4_pair<MR, TAIL>(static_cast<const uint8_t*>(row), d, nb, xq, dxe, b, acc);
  else q8_pair<MR, TAIL>(static_cast<const int8_t*>(row), d, nb, xq, dxe, b, acc);
}

// One weight row against MR activation rows; block pairs alternate between two accumulator chains
// (pair p into chain p % 2, whatever MR is, so a row's arithmetic is the same in a speculative
// verify as in a one-row step). The loop over whole pairs has no tail test, so the accumulators
// stay in registers.
template <int MR, bool Q4>
HEARTH_AVX512 void row_multi_vnni(const void* row, const float* d, const float* mins, int64_t nb, const int8_t* xq,
                                  const float* dxe, const float* sx, float* y, int64_t N, int64_t n) {
  __m512 acc0[MR], acc1[MR];
  for (int m = 0; m < MR; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
  const int64_t whole = nb / 2;  // pairs of two blocks
  int64_t p = 0;
  for (; p + 2 <= whole; p += 2) {
    pair<MR, Q4, false>(row, d, nb, xq, dxe, 2 * p, acc0);
    pair<MR, Q4, false>(row, d, nb, xq, dxe, 2 * p + 2, acc1);
  }
  if (p < whole) pair<MR, Q4, false>(row, d, nb, xq, dxe, 2 * p++, acc0);
  if (nb % 2) pair<MR, Q4, true>(row, d, nb, xq, dxe, nb - 1, p % 2 ? acc1 : acc0);
  for (int m = 0; m < MR; ++m) {
    float total = _mm512_reduce_add_ps(_mm512_add_ps(acc0[m], acc1[m]));
    if (Q4) total += dot_f32_avx2(mins, sx + m * nb, nb);
    y[m * N + n] += total;
  }
}

// each activation row's block scales, 8 lanes per block, padded to an even block count
std::vector<float> expanded_scales(const float* dx, int64_t M, int64_t nb) {
  const int64_t pairs = (nb + 1) / 2;
  std::vector<float> dxe(M * pairs * 16, 0.f);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < nb; ++b) std::fill_n(dxe.begin() + (m * pairs * 2 + b) * 8, 8, dx[m * nb + b]);
  return dxe;
}

template <bool Q4>
HEARTH_AVX512 void row_vnni(const void* row, const uint16_t* wd, const uint16_t* wm, int64_t nb, const int8_t* xq,
                            const float* dxe, const float* sx, int64_t M, float* y, int64_t N, int64_t n, float* d) {
  float* mins = d + nb;
  scales_avx2(wd, d, nb);
  if (Q4) scales_avx2(wm, mins, nb);
  const int64_t pairs = (nb + 1) / 2;
  // at most 4 rows a pass: 6-8 rows' accumulators no longer stay in registers (measured: a 6-row
  // product cost 1.5x a 5-row one); the weight row is in L1 for the next pass
  for (int64_t m0 = 0; m0 < M; m0 += MULTI_VNNI) {
    const int64_t rows = std::min(MULTI_VNNI, M - m0);
#define HEARTH_VNNI(R) row_multi_vnni<R, Q4>(row, d, mins, nb, xq + m0 * nb * QK, dxe + m0 * pairs * 16, sx + m0 * nb, y + m0 * N, N, n)
    switch (rows) {
      case 1: HEARTH_VNNI(1); break; case 2: HEARTH_VNNI(2); break; case 3: HEARTH_VNNI(3); break;
      default: HEARTH_VNNI(4); break;
    }
#undef HEARTH_VNNI
  }
}

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
}

bool cpu_has_avx512_vnni() {
  static const bool has = cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("avx512vnni");
  return has;
}


// The paths this CPU can run, best first.
std::vector<std::string> instruction_sets() {
  std::vector<std::string> names;
  if (cpu_has_avx512_vnni()) names.push_back("avx512vnni");
  if (cpu_has_avx2()) names.push_back("avx2");
  names.push_back("portable");
  return names;
}

// "" = the best this CPU has; a named path must be one it has.
Path path_for(const std::string& name) {
  const std::vector<std::string> have = instruction_sets();
  const std::string chosen = name.empty() ? have.front() : name;
  std::string listed;
  for (const std::string& h : have) listed += (listed.empty() ? "" : ", ") + h;
  TORCH_CHECK(std::find(have.begin(), have.end(), chosen) != have.end(), "this CPU cannot run the '", chosen,
              "' kernels (it has: ", listed, ")");
  return chosen == "avx512vnni" ? Path::Avx512Vnni : chosen == "avx2" ? Path::Avx2 : Path::Portable;
}

}  // namespace hearth

using namespace hearth;

namespace {

struct Activations {
  at::Tensor xq, dx, sx;
  int64_t M, nb;
};

Activations quantize(const at::Tensor& x2d, int64_t nb) {
  const int64_t M = x2d.size(0), K = x2d.size(1);
  Activations a{at::empty({M, nb * QK}, x2d.options().dtype(at::kChar)), at::empty({M, nb}, x2d.options()),
                at::empty({M, nb}, x2d.options()), M, nb};
  (cpu_has_avx2() ? quantize_rows_avx2 : quantize_rows)(x2d.data_ptr<float>(), M, K, nb, a.xq.data_ptr<int8_t>(),
                                                       a.dx.data_ptr<float>(), a.sx.data_ptr<float>());
  return a;
}

at::Tensor as_rows(const at::Tensor& x, int64_t nb) {
  TORCH_CHECK(x.dtype() == at::kFloat, "activations must be float32");
  TORCH_CHECK(x.dim() == 2, "activations must be 2-D (rows, features)");
  TORCH_CHECK(x.size(1) <= nb * QK && x.size(1) > (nb - 1) * QK, "activation width does not match the weight blocks");
  return x.contiguous();
}

}  // namespace

// the product's output: zeros, or a copy of the residual the product is added to
at::Tensor output_for(const Activations& a, int64_t N, const at::Tensor& like, const std::optional<at::Tensor>& residual) {
  if (!residual.has_value()) return at::zeros({a.M, N}, like.options());
  TORCH_CHECK(residual->dtype() == at::kFloat && residual->numel() == a.M * N, "residual must be float32 (rows, out)");
  return residual->reshape({a.M, N}).contiguous().clone();
}

// y [M, N] = x [M, K] @ W^T (+ residual) for a q8 weight: w [N, nb*32] int8, wd [N, nb] fp16 scales
at::Tensor q8_matmul(const at::Tensor& x, const at::Tensor& w, const at::Tensor& wd, const std::string& path,
                     const std::optional<at::Tensor>& residual) {
  TORCH_CHECK(w.dtype() == at::kChar && wd.dtype() == at::kHalf, "q8 weights: int8 values and fp16 scales");
  const int64_t N = w.size(0), nb = wd.size(1);
  TORCH_CHECK(w.size(1) == nb * QK && w.is_contiguous() && wd.is_contiguous(), "q8 weights are not 32-blocked rows");
  const at::Tensor x2 = as_rows(x, nb);
  const Activations a = quantize(x2, nb);
  at::Tensor y = output_for(a, N, x2, residual);
  const int8_t* wp = w.data_ptr<int8_t>();
  const uint16_t* dp = reinterpret_cast<const uint16_t*>(wd.data_ptr<at::Half>());
  const int8_t* xp = a.xq.data_ptr<int8_t>();
  const float* dxp = a.dx.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t M = a.M;
  const Path chosen = path_for(path);
  if (chosen == Path::Avx512Vnni) {
    const std::vector<float> dxe = expanded_scales(dxp, M, nb);
    at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> scales(nb);
      for (int64_t g = begin; g < end; ++g)
        row_vnni<false>(wp + g * nb * QK, dp + g * nb, nullptr, nb, xp, dxe.data(), nullptr, M, yp, N, g, scales.data());
    });
    return y;
  }
  if (chosen == Path::Avx2) {
    at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> scales(nb);
      for (int64_t g = begin; g < end; ++g) {
        q8_row_avx2(wp + g * nb * QK, dp + g * nb, nb, xp, dxp, M, yp, N, g, scales.data());
      }
    });
    return y;
  }
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      for (int64_t m = 0; m < M; ++m)
        yp[m * N + n] += dot_q8_portable(wp + n * nb * QK, dp + n * nb, xp + m * nb * QK, dxp + m * nb, nb);
  });
  return y;
}

// y [M, N] = x [M, K] @ W^T for a q4 weight: w [N, nb*16] packed nibbles, wd and wm [N, nb] fp16
at::Tensor q4_matmul(const at::Tensor& x, const at::Tensor& w, const at::Tensor& wd, const at::Tensor& wm,
                     const std::string& path, const std::optional<at::Tensor>& residual) {
  TORCH_CHECK(w.dtype() == at::kByte && wd.dtype() == at::kHalf && wm.dtype() == at::kHalf,
              "q4 weights: uint8 nibble pairs, fp16 scales and minimums");
  const int64_t N = w.size(0), nb = wd.size(1);
  TORCH_CHECK(w.size(1) == nb * QK / 2 && wm.size(1) == nb && w.is_contiguous() && wd.is_contiguous() &&
              wm.is_contiguous(), "q4 weights are not 32-blocked rows");
  const at::Tensor x2 = as_rows(x, nb);
  const Activations a = quantize(x2, nb);
  at::Tensor y = output_for(a, N, x2, residual);
  const uint8_t* wp = w.data_ptr<uint8_t>();
  const uint16_t* dp = reinterpret_cast<const uint16_t*>(wd.data_ptr<at::Half>());
  const uint16_t* mp = reinterpret_cast<const uint16_t*>(wm.data_ptr<at::Half>());
  const int8_t* xp = a.xq.data_ptr<int8_t>();
  const float* dxp = a.dx.data_ptr<float>();
  const float* sxp = a.sx.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t M = a.M;
  const Path chosen = path_for(path);
  if (chosen == Path::Avx512Vnni) {
    const std::vector<float> dxe = expanded_scales(dxp, M, nb);
    at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> scales(2 * nb);
      for (int64_t g = begin; g < end; ++g)
        row_vnni<true>(wp + g * nb * QK / 2, dp + g * nb, mp + g * nb, nb, xp, dxe.data(), sxp, M, yp, N, g, scales.data());
    });
    return y;
  }
  if (chosen == Path::Avx2) {
    at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> scales(2 * nb);
      for (int64_t g = begin; g < end; ++g) {
        q4_row_avx2(wp + g * nb * QK / 2, dp + g * nb, mp + g * nb, nb, xp, dxp, sxp, M, yp, N, g, scales.data());
      }
    });
    return y;
  }
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      for (int64_t m = 0; m < M; ++m)
        yp[m * N + n] += dot_q4_portable(wp + n * nb * QK / 2, dp + n * nb, mp + n * nb, xp + m * nb * QK,
                                         dxp + m * nb, sxp + m * nb, nb);
  });
  return y;
}

// ---- the rest of a decode step: RMSNorm, SwiGLU, and RoPE + KV cache + attention ----

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& scale, double eps) {
  TORCH_CHECK(x.dtype() == at::kFloat && scale.dtype() == at::kFloat, "rms_norm takes float32");
  const int64_t D = scale.numel();
  const at::Tensor x2 = x.reshape({-1, D}).contiguous();
  at::Tensor y = at::empty_like(x2);
  const float* xp = x2.data_ptr<float>();
  const float* sp = scale.contiguous().data_ptr<float>();
  float* yp = y.data_ptr<float>();
  for (int64_t r = 0; r < x2.size(0); ++r) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += double(xp[r * D + i]) * xp[r * D + i];
    const float inv = 1.f / std::sqrt(float(ss / D) + float(eps));
    for (int64_t i = 0; i < D; ++i) yp[r * D + i] = xp[r * D + i] * inv * sp[i];
  }
  return y.view(x.sizes());
}

namespace {
void silu_mul_avx2(const float* gate, const float* up, float* out, int64_t n);
}  // namespace

// gate_up [M, 2F] (gate then up) -> silu(gate) * up [M, F]
at::Tensor silu_mul(const at::Tensor& gate_up) {
  const at::Tensor g = gate_up.contiguous();
  const int64_t F = g.size(-1) / 2, M = g.numel() / (2 * F);
  at::Tensor y = at::empty({M, F}, g.options());
  const float* gp = g.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  for (int64_t r = 0; r < M; ++r) {
    if (cpu_has_avx2()) {
      silu_mul_avx2(gp + r * 2 * F, gp + r * 2 * F + F, yp + r * F, F);
      continue;
    }
    for (int64_t i = 0; i < F; ++i) {
      const float a = gp[r * 2 * F + i];
      yp[r * F + i] = a / (1.f + std::exp(-a)) * gp[r * 2 * F + F + i];
    }
  }
  return y;
}

namespace {
// e^x for 8 floats (x <= 0 here: softmax after subtracting the max): 2^n * p(r), r = x - n ln2,
// p a degree-6 polynomial (relative error ~1e-7); below -87 the result is 0.
__attribute__((target("avx2,fma,f16c"))) inline __m256 exp_avx2(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lo);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

// silu(a) * u = a * sigmoid(a) * u, sigmoid from e = exp(-|a|) <= 1 (exp_avx2's range): 1 / (1 + e)
// for a >= 0, e / (1 + e) below; the scalar loop finishes a ragged end.
__attribute__((target("avx2,fma,f16c"))) void silu_mul_avx2(const float* gate, const float* up, float* out, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.f), one = _mm256_set1_ps(1.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_loadu_ps(gate + i);
    const __m256 e = exp_avx2(_mm256_or_ps(a, sign));  // exp(-|a|)
    const __m256 inv = _mm256_div_ps(one, _mm256_add_ps(one, e));
    const __m256 sig = _mm256_blendv_ps(inv, _mm256_mul_ps(e, inv), a);  // a's sign bit picks e / (1 + e)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(a, sig), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

// one query head against S keys: softmax(q k / sqrt(D)) v, written to o (AVX2, D = 64 or 128)
template <int D>
__attribute__((target("avx2,fma,f16c"))) void attend_head_avx2(const float* q, const float* keys, const float* values,
                                                                 int64_t S, float scale, float* scores, float* o) {
  constexpr int V = D / 8;  // 8-float vectors per head
  __m256 qv[V];
  for (int j = 0; j < V; ++j) qv[j] = _mm256_mul_ps(_mm256_loadu_ps(q + 8 * j), _mm256_set1_ps(scale));
  float best = -INFINITY;
  for (int64_t s = 0; s < S; ++s) {
    const float* k = keys + s * D;
    __m256 a = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k));
    __m256 b = _mm256_mul_ps(qv[1], _mm256_loadu_ps(k + 8));
#pragma GCC unroll 16
    for (int j = 2; j < V; j += 2) {
      a = _mm256_fmadd_ps(qv[j], _mm256_loadu_ps(k + 8 * j), a);
      b = _mm256_fmadd_ps(qv[j + 1], _mm256_loadu_ps(k + 8 * j + 8), b);
    }
    scores[s] = hsum(_mm256_add_ps(a, b));
    best = std::max(best, scores[s]);
  }
  __m256 total8 = _mm256_setzero_ps();
  int64_t s = 0;
  for (; s + 8 <= S; s += 8) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(scores + s), _mm256_set1_ps(best)));
    _mm256_storeu_ps(scores + s, e);
    total8 = _mm256_add_ps(total8, e);
  }
  float total = hsum(total8);
  for (; s < S; ++s) total += (scores[s] = std::exp(scores[s] - best));
  __m256 acc[V];
  for (int j = 0; j < V; ++j) acc[j] = _mm256_setzero_ps();
  for (int64_t t = 0; t < S; ++t) {
    const __m256 p = _mm256_set1_ps(scores[t]);
    const float* v = values + t * D;
    for (int j = 0; j < V; ++j) acc[j] = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8 * j), acc[j]);
  }
  const __m256 inv = _mm256_set1_ps(1.f / total);
  for (int j = 0; j < V; ++j) _mm256_storeu_ps(o + 8 * j, _mm256_mul_ps(acc[j], inv));
}

void attend_head_portable(const float* q, const float* keys, const float* values, int64_t S, int64_t D,
                          float scale, float* scores, float* o) {
  float best = -INFINITY;
  for (int64_t s = 0; s < S; ++s) {
    float dot = 0.f;
    for (int64_t j = 0; j < D; ++j) dot += q[j] * keys[s * D + j];
    scores[s] = dot * scale;
    best = std::max(best, scores[s]);
  }
  float total = 0.f;
  for (int64_t s = 0; s < S; ++s) total += (scores[s] = std::exp(scores[s] - best));
  for (int64_t j = 0; j < D; ++j) o[j] = 0.f;
  for (int64_t s = 0; s < S; ++s)
    for (int64_t j = 0; j < D; ++j) o[j] += scores[s] * values[s * D + j];
  for (int64_t j = 0; j < D; ++j) o[j] /= total;
}

void rotate(float* v, const float* cos, const float* sin, int64_t D, bool interleaved) {
  const int64_t half = D / 2;
  for (int64_t j = 0; j < half; ++j) {
    const int64_t a = interleaved ? 2 * j : j, b = interleaved ? 2 * j + 1 : j + half;
    const float x1 = v[a], x2 = v[b];
    v[a] = x1 * cos[j] - x2 * sin[j];
    v[b] = x1 * sin[j] + x2 * cos[j];
  }
}
}  // namespace

// One decode step's attention for M new rows at positions pos..pos+M-1: rotate Q and K (cos/sin
// rows [M, D/2]), store K and V in the caches [1, KV, L, D] at those positions, and let row i
// attend to positions 0..pos+i (each row exactly as a one-row step would). qkv: [M, (H+2KV)*D].
at::Tensor attend(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache, int64_t pos,
                  const at::Tensor& cos, const at::Tensor& sin, int64_t H, int64_t KV, bool interleaved) {
  TORCH_CHECK(k_cache.dtype() == at::kFloat && k_cache.is_contiguous() && v_cache.is_contiguous(), "float32 caches");
  const int64_t D = k_cache.size(3), L = k_cache.size(2);
  at::Tensor q = qkv.reshape({-1, H + 2 * KV, D}).contiguous().clone();
  const int64_t M = q.size(0);
  TORCH_CHECK(pos + M <= L, "KV cache full");
  float* qp = q.data_ptr<float>();
  float* kp = k_cache.data_ptr<float>();
  float* vp = v_cache.data_ptr<float>();
  const float* cp = cos.contiguous().data_ptr<float>();
  const float* sp = sin.contiguous().data_ptr<float>();
  for (int64_t i = 0; i < M; ++i) {
    float* row = qp + i * (H + 2 * KV) * D;
    for (int64_t h = 0; h < H + KV; ++h) rotate(row + h * D, cp + i * D / 2, sp + i * D / 2, D, interleaved);
    for (int64_t g = 0; g < KV; ++g) {
      std::memcpy(kp + (g * L + pos + i) * D, row + (H + g) * D, D * sizeof(float));
      std::memcpy(vp + (g * L + pos + i) * D, row + (H + KV + g) * D, D * sizeof(float));
    }
  }
  at::Tensor out = at::empty({M, H * D}, qkv.options());
  float* op = out.data_ptr<float>();
  const float scale = 1.f / std::sqrt(float(D));
  const int64_t group = H / KV;
  const bool simd = cpu_has_avx2() && (D == 64 || D == 128);
  at::parallel_for(0, M * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(pos + M);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t i = job / H, h = job % H, g = h / group;
      const float* qh = qp + (i * (H + 2 * KV) + h) * D;
      float* o = op + i * H * D + h * D;
      if (simd && D == 64) attend_head_avx2<64>(qh, kp + g * L * D, vp + g * L * D, pos + i + 1, scale, scores.data(), o);
      else if (simd) attend_head_avx2<128>(qh, kp + g * L * D, vp + g * L * D, pos + i + 1, scale, scores.data(), o);
      else attend_head_portable(qh, kp + g * L * D, vp + g * L * D, pos + i + 1, D, scale, scores.data(), o);
    }
  });
  return out;
}

// the activation quantization the products use: (xq [M, nb*32] int8, dx [M, nb], sx [M, nb])
std::vector<at::Tensor> quantize_activations(const at::Tensor& x, int64_t nb) {
  const Activations a = quantize(as_rows(x, nb), nb);
  return {a.xq, a.dx, a.sx};
}

std::string instruction_set() { return instruction_sets().front(); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("q8_matmul", &q8_matmul, "x @ W^T (+ residual) for a q8 (Q8_0-style) weight", py::arg("x"), py::arg("w"),
        py::arg("wd"), py::arg("path") = "", py::arg("residual") = py::none());
  m.def("q4_matmul", &q4_matmul, "x @ W^T (+ residual) for a q4 (Q4_1-style) weight", py::arg("x"), py::arg("w"),
        py::arg("wd"), py::arg("wm"), py::arg("path") = "", py::arg("residual") = py::none());
  hearth::register_ggml(m);
  m.def("rms_norm", &rms_norm, "x / rms(x) * scale over the last dimension");
  m.def("silu_mul", &silu_mul, "silu(gate) * up of a fused gate/up projection");
  m.def("attend", &attend, "RoPE, KV cache write and attention for a decode step's rows");
  m.def("quantize_activations", &quantize_activations, "per-block int8 activations");
  m.def("instruction_set", &instruction_set, "the path the products run here: avx512vnni, avx2 or portable");
  m.def("instruction_sets", &instruction_sets, "every path this CPU can run, best first");
}
