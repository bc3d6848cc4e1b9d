// What the kernel sources share: qmatmul.cpp (the q8/q4 products, norms, attention) and ggml.cpp
// (GGUF's own block types and the decode-step Decoder).
#pragma once
#include <torch/extension.h>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hearth {

constexpr int64_t QK = 32;  // values per activation block (and per q8/q4 weight block)

enum class Path { Portable, Avx2, Avx512Vnni };

bool cpu_has_avx2();
bool cpu_has_avx512_vnni();
std::vector<std::string> instruction_sets();
// "" = the best this CPU has; a named path must be one it has
Path path_for(const std::string& name);
float half_to_float(uint16_t h);

// x [M, K] float -> xq [M, nb*32] int8 (zero padded), dx [M, nb] = amax / 127, sx [M, nb] = dx * sum(xq)
void quantize_rows(const float* x, int64_t M, int64_t K, int64_t nb, int8_t* xq, float* dx, float* sx);
void quantize_rows_avx2(const float* x, int64_t M, int64_t K, int64_t nb, int8_t* xq, float* dx, float* sx);

void register_ggml(pybind11::module& m);

}  // namespace hearth

at::Tensor q8_matmul(const at::Tensor& x, const at::Tensor& w, const at::Tensor& wd, const std::string& path,
                     const std::optional<at::Tensor>& residual);
at::Tensor q4_matmul(const at::Tensor& x, const at::Tensor& w, const at::Tensor& wd, const at::Tensor& wm,
                     const std::string& path, const std::optional<at::Tensor>& residual);
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& scale, double eps);
at::Tensor silu_mul(const at::Tensor& gate_up);
at::Tensor attend(const at::Tensor& qkv, at::Tensor& k_cache, at::Tensor& v_cache, int64_t pos,
                  const at::Tensor& cos, const at::Tensor& sin, int64_t H, int64_t KV, bool interleaved);
