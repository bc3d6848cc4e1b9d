// GGUF's own block types on the CPU, and the Decoder that runs a whole decode step in one call.
//
// Block layouts are llama.cpp's (ggml-common.h): Q4_0, Q4_1, Q5_0, Q8_0 (blocks of 32 values) and
// Q4_K, Q6_K (super-blocks of 256 with 6-bit or 8-bit sub-block scales). A product decodes each
// weight row once into a small buffer (Row): signed int8 values, one float scale per 16 values and,
// for the types with a minimum (Q4_1, Q4_K), one float offset per 32, so that for every type
// w = scale * q + offset. The activations are quantized per block of 32 to int8 (as the q8/q4
// products do), so each 16-value group's dot product is an integer sum: AVX-512 VNNI computes 64
// products per instruction, AVX2 32 (maddubs/madd), the portable loop one at a time. The decoded row
// serves every activation row, so a prefill of hundreds of rows decodes each weight row once.
//
// A Linear is one or more parts side by side (Qwen's Q, K and V projections are stored in different
// types, so they stay separate tensors of the mapped file rather than one fused copy), each part a
// GGUF tensor, a q8/q4 weight of blockquant.py or a dense float matrix, plus an optional bias.

#include "kernels.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace hearth {
namespace {

enum GgmlType : int { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q8_0 = 8, Q4_K = 12, Q6_K = 14, BF16 = 30 };

struct BlockInfo {
  int64_t values, bytes;
  bool offsets;  // w = scale * q + offset (a minimum per 32 values)
};

constexpr BlockInfo block_info_of(int64_t type) {
  switch (type) {
    case Q4_0: return {32, 18, false};
    case Q4_1: return {32, 20, true};
    case Q5_0: return {32, 22, false};
    case Q8_0: return {32, 34, false};
    case Q4_K: return {256, 144, true};
    case Q6_K: return {256, 210, false};
    default: return {0, 0, false};
  }
}

BlockInfo block_info(int64_t type) {
  switch (type) {
    case Q4_0: return {32, 18, false};
    case Q4_1: return {32, 20, true};
    case Q5_0: return {32, 22, false};
    case Q8_0: return {32, 34, false};
    case Q4_K: return {256, 144, true};
    case Q6_K: return {256, 210, false};
    default: TORCH_CHECK(false, "GGML type ", type, " is not a block type Hearth's kernels run");
  }
}

constexpr int64_t CHUNK = 64;   // values per VNNI step
constexpr int64_t PAD = 128;    // decoded rows and quantized activations are padded to a multiple of this (ABLOCK)
inline int64_t padded(int64_t K) { return (K + PAD - 1) / PAD * PAD; }

// One decoded weight row: w[i] = s16[i / 16] * q[i] + off[i / 32] (zeros past K).
struct Row {
  std::vector<int8_t> q;
  std::vector<float> s16, off;
  explicit Row(int64_t K) : q(padded(K), 0), s16(padded(K) / 16 + 4, 0.f), off(padded(K) / 32, 0.f) {}
};

inline float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

// Q4_K's 6-bit scale and minimum of sub-block j (of 8), packed in 12 bytes
inline void scale_min_k4(int j, const uint8_t* s, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// The scales and offsets of one block (shared by the scalar and the AVX2 decoders).
void block_scales(int64_t type, const uint8_t* b, float* s16, float* off) {
  switch (type) {
    case Q8_0: case Q4_0: case Q5_0: s16[0] = s16[1] = f16_at(b); break;
    case Q4_1: s16[0] = s16[1] = f16_at(b); off[0] = f16_at(b + 2); break;
    case Q4_K: {
      const float d = f16_at(b), dmin = f16_at(b + 2);
      for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        scale_min_k4(j, b + 4, &sc, &m);
        s16[2 * j] = s16[2 * j + 1] = d * float(sc);
        off[j] = -(dmin * float(m));
      }
      break;
    }
    case Q6_K: {
      const float d = f16_at(b + 208);
      const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
      for (int g = 0; g < 16; ++g) s16[g] = d * float(sc[g]);
      break;
    }
  }
}

// The values of one block, one at a time.
void block_values(int64_t type, const uint8_t* b, int8_t* q) {
  switch (type) {
    case Q8_0: std::memcpy(q, b + 2, 32); break;
    case Q4_0:
    case Q4_1: {
      const uint8_t* qs = b + (type == Q4_0 ? 2 : 4);
      const int centre = type == Q4_0 ? 8 : 0;
      for (int j = 0; j < 16; ++j) q[j] = int8_t((qs[j] & 0xF) - centre), q[j + 16] = int8_t((qs[j] >> 4) - centre);
      break;
    }
    case Q5_0: {
      uint32_t qh;
      std::memcpy(&qh, b + 2, 4);
      const uint8_t* qs = b + 6;
      for (int j = 0; j < 16; ++j) {
        q[j] = int8_t(((qs[j] & 0xF) | (((qh >> j) << 4) & 0x10)) - 16);
        q[j + 16] = int8_t(((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10)) - 16);
      }
      break;
    }
    case Q4_K: {
      const uint8_t* qs = b + 16;
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) q[64 * c + l] = int8_t(qs[32 * c + l] & 0xF), q[64 * c + 32 + l] = int8_t(qs[32 * c + l] >> 4);
      break;
    }
    case Q6_K: {
      const uint8_t *ql = b, *qh = b + 128;
      for (int h = 0; h < 2; ++h)
        for (int l = 0; l < 32; ++l) {
          const uint8_t lo = ql[64 * h + l], hi = ql[64 * h + 32 + l], top = qh[32 * h + l];
          q[128 * h + l] = int8_t(((lo & 0xF) | ((top & 3) << 4)) - 32);
          q[128 * h + 32 + l] = int8_t(((hi & 0xF) | (((top >> 2) & 3) << 4)) - 32);
          q[128 * h + 64 + l] = int8_t(((lo >> 4) | (((top >> 4) & 3) << 4)) - 32);
          q[128 * h + 96 + l] = int8_t(((hi >> 4) | (((top >> 6) & 3) << 4)) - 32);
        }
      break;
    }
  }
}

#define HEARTH_AVX2 __attribute__((target("avx2,fma,f16c")))

// 0xFF in byte j where bit j of the 32 bits at p is set
HEARTH_AVX2 inline __m256i bits_to_bytes(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(int(bits)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
  const __m256i select = _mm256_set1_epi64x(0x8040201008040201);
  return _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
}

// the 32 nibbles of 16 bytes: low halves (elements 0-15), then high halves (16-31)
HEARTH_AVX2 inline __m256i nibbles16(const uint8_t* p) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), _mm256_set1_epi8(0x0F));
}

HEARTH_AVX2 inline void store32(int8_t* q, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), v); }

// The same values as block_values, 32 at a time.
HEARTH_AVX2 inline void block_values_avx2(int64_t type, const uint8_t* b, int8_t* q) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  switch (type) {
    case Q8_0: store32(q, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2))); break;
    case Q4_0: store32(q, _mm256_sub_epi8(nibbles16(b + 2), _mm256_set1_epi8(8))); break;
    case Q4_1: store32(q, nibbles16(b + 4)); break;
    case Q5_0: {
      const __m256i high = _mm256_and_si256(bits_to_bytes(b + 2), _mm256_set1_epi8(0x10));
      store32(q, _mm256_sub_epi8(_mm256_or_si256(nibbles16(b + 6), high), _mm256_set1_epi8(16)));
      break;
    }
    case Q4_K:
      for (int c = 0; c < 4; ++c) {
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16 + 32 * c));
        store32(q + 64 * c, _mm256_and_si256(raw, low4));
        store32(q + 64 * c + 32, _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4));
      }
      break;
    case Q6_K: {
      const __m256i two = _mm256_set1_epi8(0x30), centre = _mm256_set1_epi8(32);
      for (int h = 0; h < 2; ++h) {
        const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h));
        const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h + 32));
        const __m256i top = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h));
        int8_t* out = q + 128 * h;
        store32(out, _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(lo, low4), _mm256_and_si256(_mm256_slli_epi16(top, 4), two)), centre));
        store32(out + 32, _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(hi, low4), _mm256_and_si256(_mm256_slli_epi16(top, 2), two)), centre));
        store32(out + 64, _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lo, 4), low4), _mm256_and_si256(top, two)), centre));
        store32(out + 96, _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(hi, 4), low4), _mm256_and_si256(_mm256_srli_epi16(top, 2), two)), centre));
      }
      break;
    }
    default: block_values(type, b, q);
  }
}

HEARTH_AVX2 inline void kquant_scales_avx2(int64_t type, const uint8_t* b, float* s16, float* off);

template <int64_t TYPE>
HEARTH_AVX2 void decode_row_avx2(const uint8_t* src, int64_t K, Row& row) {
  constexpr BlockInfo info = block_info_of(TYPE);
  int8_t* q = row.q.data();
  float *s16 = row.s16.data(), *off = row.off.data();
  for (int64_t i = 0; i < K / info.values; ++i) {
    const uint8_t* b = src + i * info.bytes;
    block_values_avx2(TYPE, b, q + i * info.values);
    if (info.values == 32) {  // one fp16 scale (and minimum) at the block's start: F16C converts it
      uint16_t h[2];
      std::memcpy(h, b, 4);
      s16[2 * i] = s16[2 * i + 1] = _cvtsh_ss(h[0]);
      if (TYPE == Q4_1) off[i] = _cvtsh_ss(h[1]);
    } else {
      kquant_scales_avx2(TYPE, b, s16 + i * info.values / 16, off + i * info.values / 32);
    }
  }
}

// block_scales of a super-block, 8 at a time (the same products, so the same floats)
HEARTH_AVX2 inline void kquant_scales_avx2(int64_t type, const uint8_t* b, float* s16, float* off) {
  if (type == Q6_K) {
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(uint16_t(b[208] | (b[209] << 8))));
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192));
    _mm256_storeu_ps(s16, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
    _mm256_storeu_ps(s16 + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(sc, 8)))));
    return;
  }
  // Q4_K: the twelve bytes of 6-bit scales and minimums unpacked into 8 scales, then 8 minimums
  uint32_t u[4];
  std::memcpy(u, b + 4, 12);
  const uint32_t low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, low2 = 0x03030303;
  u[3] = ((u[2] >> 4) & low4) | (((u[1] >> 6) & low2) << 4);
  const uint32_t mins_low = u[1] & low6;
  u[1] = (u[2] & low4) | (((u[0] >> 6) & low2) << 4);
  u[2] = mins_low;
  u[0] &= low6;
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(u));
  const __m256 d = _mm256_set1_ps(_cvtsh_ss(uint16_t(b[0] | (b[1] << 8))));
  const __m256 dmin = _mm256_set1_ps(_cvtsh_ss(uint16_t(b[2] | (b[3] << 8))));
  const __m256 scales = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)));
  _mm256_storeu_ps(s16, _mm256_permutevar8x32_ps(scales, _mm256_set_epi32(3, 3, 2, 2, 1, 1, 0, 0)));
  _mm256_storeu_ps(s16 + 8, _mm256_permutevar8x32_ps(scales, _mm256_set_epi32(7, 7, 6, 6, 5, 5, 4, 4)));
  const __m256 mins = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8))));
  _mm256_storeu_ps(off, _mm256_sub_ps(_mm256_setzero_ps(), mins));
}

void decode_row(int64_t type, const uint8_t* src, int64_t K, Row& row, bool simd) {
  if (simd) {
    switch (type) {
      case Q4_0: return decode_row_avx2<Q4_0>(src, K, row);
      case Q4_1: return decode_row_avx2<Q4_1>(src, K, row);
      case Q5_0: return decode_row_avx2<Q5_0>(src, K, row);
      case Q8_0: return decode_row_avx2<Q8_0>(src, K, row);
      case Q4_K: return decode_row_avx2<Q4_K>(src, K, row);
      case Q6_K: return decode_row_avx2<Q6_K>(src, K, row);
    }
  }
  const BlockInfo info = block_info(type);
  for (int64_t i = 0; i < K / info.values; ++i) {
    const uint8_t* b = src + i * info.bytes;
    block_values(type, b, row.q.data() + i * info.values);
    block_scales(type, b, row.s16.data() + i * info.values / 16, row.off.data() + i * info.values / 32);
  }
}

// ---- dot products of a decoded row with quantized activation rows ----

// Activation rows quantized to int8 with one scale per ABLOCK values (one float multiply per 128
// products instead of per 32: the products' inner loops are bound by instructions, not memory, and
// this took a third of them away; llama.cpp's K-quant products use blocks of 256), padded to KP.
constexpr int64_t ABLOCK = 128;

struct Acts {
  std::vector<int8_t> q;  // VNNI: stored as q + 128 (unsigned), so vpdpbusd takes them as they are
  std::vector<float> d;   // per ABLOCK values: the scale (amax / 127)
  std::vector<float> s;   // per 32 values: scale * sum of the values (for the weights' offsets)
  int64_t M, KP, nb;      // nb: blocks of ABLOCK per row
};

Acts quantize_acts(const at::Tensor& x2d, int64_t K, bool unsigned_values) {
  const int64_t M = x2d.size(0), KP = padded(K), nb = KP / ABLOCK;
  Acts a{std::vector<int8_t>(M * KP, 0), std::vector<float>(M * nb), std::vector<float>(M * KP / 32, 0.f), M, KP, nb};
  const float* x = x2d.data_ptr<float>();
  at::parallel_for(0, M, 16, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      const float* row = x + m * K;
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t start = b * ABLOCK, end = std::min(K, start + ABLOCK);
        float amax = 0.f;
        for (int64_t i = start; i < end; ++i) amax = std::max(amax, std::fabs(row[i]));
        const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
        a.d[m * nb + b] = d;
        for (int64_t i = start; i < end; ++i) {
          const int v = int(std::nearbyint(row[i] * id));
          a.q[m * KP + i] = int8_t(v);
          a.s[(m * KP + i) / 32] += float(v);
        }
        for (int64_t g = start / 32; g < (start + ABLOCK) / 32; ++g) a.s[m * KP / 32 + g] *= d;
      }
    }
  });
  if (unsigned_values)
    for (auto& v : a.q) v = int8_t(uint8_t(v) ^ 0x80);
  return a;
}

float offsets_dot_portable(const Row& w, const float* s, int64_t groups) {
  float total = 0.f;
  for (int64_t b = 0; b < groups; ++b) total += w.off[b] * s[b];
  return total;
}

HEARTH_AVX2 float hsum8(__m256 v);

// sum of the weights' offsets times the activations' block sums (groups is a multiple of 4: PAD / 32)
HEARTH_AVX2 float offsets_dot(const Row& w, const float* s, int64_t groups) {
  __m256 acc = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= groups; b += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(w.off.data() + b), _mm256_loadu_ps(s + b), acc);
  float total = hsum8(acc);
  for (; b < groups; ++b) total += w.off[b] * s[b];
  return total;
}

void rows_portable(const Row& w, const Acts& a, int64_t m0, int64_t rows, bool offsets, float* y, int64_t ldy) {
  for (int64_t m = m0; m < m0 + rows; ++m) {
    const int8_t* x = a.q.data() + m * a.KP;
    float acc = 0.f;
    for (int64_t g = 0; g < a.KP / 16; ++g) {
      int32_t s = 0;
      for (int i = 0; i < 16; ++i) s += int32_t(w.q[16 * g + i]) * int32_t(x[16 * g + i]);
      acc += w.s16[g] * a.d[m * a.nb + g * 16 / ABLOCK] * float(s);
    }
    if (offsets) acc += offsets_dot_portable(w, a.s.data() + m * a.KP / 32, a.KP / 32);
    y[m * ldy] += acc;
  }
}

HEARTH_AVX2 float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 32 values a step: maddubs takes |w| as its unsigned side and x with w's sign; lanes 0-3 of the
// 32-bit sums hold the first 16 values' products, lanes 4-7 the second's. Each activation block's
// partial sum is scaled once, at its end.
template <int MR>
HEARTH_AVX2 void rows_avx2(const Row& w, const Acts& a, int64_t m0, bool offsets, float* y, int64_t ldy) {
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i halves = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0);
  __m256 acc[MR];
  for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t blk = 0; blk < a.nb; ++blk) {
    __m256 part[MR];
    for (int m = 0; m < MR; ++m) part[m] = _mm256_setzero_ps();
    for (int64_t b = blk * (ABLOCK / QK); b < (blk + 1) * (ABLOCK / QK); ++b) {
      const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.q.data() + b * QK));
      const __m256i aw = _mm256_sign_epi8(wv, wv);
      const __m256 sv = _mm256_permutevar8x32_ps(
          _mm256_castps128_ps256(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(w.s16.data() + 2 * b)))), halves);
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q.data() + (m0 + m) * a.KP + b * QK));
        const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(x, wv)), ones);
        part[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), sv, part[m]);
      }
    }
    for (int m = 0; m < MR; ++m) acc[m] = _mm256_fmadd_ps(part[m], _mm256_set1_ps(a.d[(m0 + m) * a.nb + blk]), acc[m]);
  }
  for (int m = 0; m < MR; ++m) {
    const int64_t r = m0 + m;
    float total = hsum8(acc[m]);
    if (offsets) total += offsets_dot(w, a.s.data() + r * a.KP / 32, a.KP / 32);
    y[r * ldy] += total;
  }
}

#define HEARTH_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c")))

// 64 values a step. The activations come as x + 128 (unsigned): vpdpbusd's sum is then
// sum(x w) + 128 sum(w), so each step starts from -128 sum(w) (one vpdpbusd per weight step, shared
// by all rows). Lane l of the 16 sums covers values 4l..4l+3: lanes 4g..4g+3 are group g's.
template <int MR>
HEARTH_VNNI void rows_vnni(const Row& w, const Acts& a, int64_t m0, bool offsets, float* y, int64_t ldy) {
  constexpr int64_t STEPS = ABLOCK / CHUNK;  // 64-value steps per activation block
  const __m512i c128 = _mm512_set1_epi8(char(0x80)), zero = _mm512_setzero_si512();
  const __m512i groups = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  __m512 acc[MR];
  for (int m = 0; m < MR; ++m) acc[m] = _mm512_setzero_ps();
  for (int64_t blk = 0; blk < a.nb; ++blk) {
    __m512 part[MR];
    for (int m = 0; m < MR; ++m) part[m] = _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int64_t c = blk * STEPS; c < (blk + 1) * STEPS; ++c) {
      const __m512i wv = _mm512_loadu_si512(w.q.data() + c * CHUNK);
      const __m512i start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, c128, wv));
      const __m512 sv = _mm512_permutexvar_ps(groups, _mm512_castps128_ps512(_mm_loadu_ps(w.s16.data() + 4 * c)));
#pragma GCC unroll 4
      for (int m = 0; m < MR; ++m) {
        const __m512i sums = _mm512_dpbusd_epi32(start, _mm512_loadu_si512(a.q.data() + (m0 + m) * a.KP + c * CHUNK), wv);
        part[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), sv, part[m]);
      }
    }
    for (int m = 0; m < MR; ++m) acc[m] = _mm512_fmadd_ps(part[m], _mm512_set1_ps(a.d[(m0 + m) * a.nb + blk]), acc[m]);
  }
  for (int m = 0; m < MR; ++m) {
    const int64_t r = m0 + m;
    float total = _mm512_reduce_add_ps(acc[m]);
    if (offsets) total += offsets_dot(w, a.s.data() + r * a.KP / 32, a.KP / 32);
    y[r * ldy] += total;
  }
}

// y[m, n] += x[m] . W[n] for every activation row and weight rows n0..n1 of a GGUF tensor
void block_rows(int64_t type, const uint8_t* raw, int64_t row_bytes, int64_t K, const Acts& a, Path path,
                int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const bool offsets = block_info(type).offsets;
  Row row(K);
  for (int64_t n = n0; n < n1; ++n) {
    decode_row(type, raw + n * row_bytes, K, row, path != Path::Portable);
    float* out = y + n;
    if (path == Path::Avx512Vnni) {
      for (int64_t m0 = 0; m0 < a.M; m0 += 4) {
        switch (std::min<int64_t>(4, a.M - m0)) {
          case 1: rows_vnni<1>(row, a, m0, offsets, out, ldy); break;
          case 2: rows_vnni<2>(row, a, m0, offsets, out, ldy); break;
          case 3: rows_vnni<3>(row, a, m0, offsets, out, ldy); break;
          default: rows_vnni<4>(row, a, m0, offsets, out, ldy); break;
        }
      }
    } else if (path == Path::Avx2) {
      for (int64_t m0 = 0; m0 < a.M; m0 += 4) {
        switch (std::min<int64_t>(4, a.M - m0)) {
          case 1: rows_avx2<1>(row, a, m0, offsets, out, ldy); break;
          case 2: rows_avx2<2>(row, a, m0, offsets, out, ldy); break;
          case 3: rows_avx2<3>(row, a, m0, offsets, out, ldy); break;
          default: rows_avx2<4>(row, a, m0, offsets, out, ldy); break;
        }
      }
    } else {
      rows_portable(row, a, 0, a.M, offsets, out, ldy);
    }
  }
}

}  // namespace

// ---- Linear: parts side by side, plus a bias ----

enum class PartKind { Ggml, Q8, Q4, Dense };

struct Part {
  PartKind kind;
  int64_t type, N, K;
  std::vector<at::Tensor> tensors;  // Ggml: raw [N, row bytes] uint8; Q8: values, scales; Q4: + minimums; Dense: [N, K] float

  static Part ggml(int64_t type, const at::Tensor& raw, int64_t K) {
    TORCH_CHECK(raw.dtype() == at::kByte && raw.dim() == 2 && raw.is_contiguous(), "GGUF rows must be a contiguous uint8 [rows, bytes] tensor");
    const BlockInfo info = block_info(type);
    TORCH_CHECK(K % info.values == 0 && raw.size(1) == K / info.values * info.bytes,
                "GGUF rows of ", raw.size(1), " bytes do not hold ", K, " values of type ", type);
    return Part{PartKind::Ggml, type, raw.size(0), K, {raw}};
  }
  static Part q8(const at::Tensor& w, const at::Tensor& d, int64_t K) { return Part{PartKind::Q8, -1, w.size(0), K, {w, d}}; }
  static Part q4(const at::Tensor& w, const at::Tensor& d, const at::Tensor& m, int64_t K) {
    return Part{PartKind::Q4, -1, w.size(0), K, {w, d, m}};
  }
  static Part dense(const at::Tensor& w) {
    TORCH_CHECK(w.dtype() == at::kFloat && w.dim() == 2, "dense weights must be float32 [out, in]");
    return Part{PartKind::Dense, -1, w.size(0), w.size(1), {w.contiguous()}};
  }
};

struct Linear {
  std::vector<Part> parts;
  std::optional<at::Tensor> bias;
  int64_t N = 0, K = 0;

  Linear(std::vector<Part> parts_, std::optional<at::Tensor> bias_) : parts(std::move(parts_)), bias(std::move(bias_)) {
    TORCH_CHECK(!parts.empty(), "a linear layer needs at least one part");
    K = parts[0].K;
    for (const Part& p : parts) {
      TORCH_CHECK(p.K == K, "the parts of a linear layer must read the same input width");
      N += p.N;
    }
    TORCH_CHECK(!bias.has_value() || bias->numel() == N, "bias does not match the output width");
  }

  // y [M, N] = x [M, K] @ W^T (+ bias) (+ residual); `path`: "" for the best this CPU has
  at::Tensor apply(const at::Tensor& x, const std::optional<at::Tensor>& residual, const std::string& path) const {
    TORCH_CHECK(x.dtype() == at::kFloat && x.size(-1) == K, "activations must be float32 with ", K, " features");
    const at::Tensor x2 = x.reshape({-1, K}).contiguous();
    const int64_t M = x2.size(0);
    at::Tensor y;
    if (residual.has_value()) {
      TORCH_CHECK(residual->dtype() == at::kFloat && residual->numel() == M * N, "residual must be float32 (rows, out)");
      y = residual->reshape({M, N}).contiguous().clone();
    } else {
      y = at::zeros({M, N}, x2.options());
    }
    const Path chosen = path_for(path);
    std::optional<Acts> acts;  // quantized once for all block parts
    int64_t col = 0;
    for (const Part& p : parts) {
      if (p.kind == PartKind::Ggml) {
        if (!acts.has_value()) acts = quantize_acts(x2, K, chosen == Path::Avx512Vnni);
        const uint8_t* raw = p.tensors[0].data_ptr<uint8_t>();
        const int64_t row_bytes = p.tensors[0].size(1);
        float* out = y.data_ptr<float>() + col;
        const Acts& a = *acts;
        at::parallel_for(0, p.N, 8, [&](int64_t n0, int64_t n1) {
          block_rows(p.type, raw, row_bytes, K, a, chosen, n0, n1, out, N);
        });
      } else {
        at::Tensor part;
        if (p.kind == PartKind::Dense) {  // row by row: BLAS rounds an M-row product differently from M one-row ones
          part = at::empty({M, p.N}, x2.options());
          for (int64_t m = 0; m < M; ++m) part.narrow(0, m, 1).copy_(at::mm(x2.narrow(0, m, 1), p.tensors[0].t()));
        }
        else if (p.kind == PartKind::Q8) part = q8_matmul(x2, p.tensors[0], p.tensors[1], path, std::nullopt);
        else part = q4_matmul(x2, p.tensors[0], p.tensors[1], p.tensors[2], path, std::nullopt);
        y.narrow(1, col, p.N).add_(part);
      }
      col += p.N;
    }
    if (bias.has_value()) y.add_(*bias);
    return y;
  }
};

// The float values of some rows of a GGUF tensor (an embedding lookup, or a whole tensor for tests
// and for the fp32 model): [len(ids), K]
at::Tensor ggml_rows(int64_t type, const at::Tensor& raw, int64_t K, const at::Tensor& ids) {
  const Part part = Part::ggml(type, raw, K);
  const at::Tensor index = ids.to(at::kLong).contiguous();
  const int64_t* ip = index.data_ptr<int64_t>();
  const int64_t R = index.numel();
  at::Tensor out = at::empty({R, K}, at::dtype(at::kFloat));
  float* op = out.data_ptr<float>();
  const uint8_t* base = raw.data_ptr<uint8_t>();
  const int64_t row_bytes = raw.size(1);
  for (int64_t r = 0; r < R; ++r) TORCH_CHECK(ip[r] >= 0 && ip[r] < part.N, "row ", ip[r], " out of range");
  at::parallel_for(0, R, 64, [&](int64_t r0, int64_t r1) {
    Row row(K);
    for (int64_t r = r0; r < r1; ++r) {
      decode_row(type, base + ip[r] * row_bytes, K, row, false);
      for (int64_t i = 0; i < K; ++i) op[r * K + i] = row.s16[i / 16] * float(row.q[i]) + row.off[i / 32];
    }
  });
  return out;
}

at::Tensor ggml_dequantize(int64_t type, const at::Tensor& raw, int64_t K) {
  return ggml_rows(type, raw, K, at::arange(raw.size(0), at::dtype(at::kLong)));
}

// ---- a whole decode step in one call ----

// A SwiGLU decoder's weights and KV caches, held once; forward() runs the blocks, the final norm
// and the output projection for a step's rows. Per block: Linear QKV, O, gate/up, down and two
// norm scales.
struct Decoder {
  std::vector<Linear> linears;
  std::vector<at::Tensor> norms, k_caches, v_caches;
  std::optional<at::Tensor> final_norm;
  Linear output;
  int64_t heads, kv_heads;
  bool interleaved;
  double eps;

  // last_only: the logits of the last row alone (a prefill needs no more; the vocabulary's
  // projection over every row would be a large share of its work)
  at::Tensor forward(at::Tensor x, int64_t pos, const at::Tensor& cos, const at::Tensor& sin, bool last_only) const {
    for (size_t i = 0; i < k_caches.size(); ++i) {
      const at::Tensor qkv = linears[4 * i].apply(rms_norm(x, norms[2 * i], eps), std::nullopt, "");
      at::Tensor k = k_caches[i], v = v_caches[i];
      const at::Tensor mixed = attend(qkv, k, v, pos, cos, sin, heads, kv_heads, interleaved);
      x = linears[4 * i + 1].apply(mixed, x, "");
      const at::Tensor gate_up = linears[4 * i + 2].apply(rms_norm(x, norms[2 * i + 1], eps), std::nullopt, "");
      x = linears[4 * i + 3].apply(silu_mul(gate_up), x, "");
    }
    if (last_only) x = x.narrow(0, x.size(0) - 1, 1);
    if (final_norm.has_value()) x = rms_norm(x, *final_norm, eps);
    return output.apply(x, std::nullopt, "");
  }
};

void register_ggml(pybind11::module& m) {
  namespace py = pybind11;
  py::class_<Part>(m, "Part")
      .def_static("ggml", &Part::ggml, "a GGUF tensor's rows as they are in the file", py::arg("type"), py::arg("raw"), py::arg("K"))
      .def_static("q8", &Part::q8, "a q8 weight of blockquant.py", py::arg("w"), py::arg("d"), py::arg("K"))
      .def_static("q4", &Part::q4, "a q4 weight of blockquant.py", py::arg("w"), py::arg("d"), py::arg("m"), py::arg("K"))
      .def_static("dense", &Part::dense, "a float32 weight [out, in]", py::arg("w"))
      .def_readonly("N", &Part::N);
  py::class_<Linear>(m, "Linear")
      .def(py::init<std::vector<Part>, std::optional<at::Tensor>>(), py::arg("parts"), py::arg("bias") = py::none())
      .def("apply", &Linear::apply, "x @ W^T (+ bias) (+ residual)", py::arg("x"), py::arg("residual") = py::none(),
           py::arg("path") = "")
      .def_readonly("N", &Linear::N)
      .def_readonly("K", &Linear::K);
  py::class_<Decoder>(m, "Decoder")
      .def(py::init<std::vector<Linear>, std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>,
                    std::optional<at::Tensor>, Linear, int64_t, int64_t, bool, double>())
      .def("forward", &Decoder::forward, "logits for a step's rows at positions pos..", py::arg("x"), py::arg("pos"),
           py::arg("cos"), py::arg("sin"), py::arg("last_only") = false);
  m.def("ggml_rows", &ggml_rows, "float values of some rows of a GGUF tensor", py::arg("type"), py::arg("raw"), py::arg("K"),
        py::arg("ids"));
  m.def("ggml_dequantize", &ggml_dequantize, "every row of a GGUF tensor as float32", py::arg("type"), py::arg("raw"),
        py::arg("K"));
}

}  // namespace hearth
