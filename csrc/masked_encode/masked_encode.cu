// CUDA kernels and host launchers of the masked_encode op (see masked_encode.hpp).
//
// Float32 also has tensor-core kernels on sm_80+ (forward_tc_kernel, grad_weight_tc_kernel; the gather and
// the mask fused with 3xTF32 tiles, masked_encode_tc.hpp); the bindings take them for kernel == 1.
//
// One thread block per CSR row. The block stages a chunk of the row's nonzeros in shared memory
// (column id and value·keep, the keep bit computed with the same counter-based RNG as the CPU,
// mask_rng.hpp) and its threads own output columns h. grad_weight scatters with atomicAdd
// (float/double; sm_60+), so its summation order, and the last bits of dW, may vary run to run.
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "masked_encode/mask_rng.hpp"
#include "masked_encode/masked_encode.hpp"
#include "masked_encode/masked_encode_tc.hpp"

namespace celljepa {
namespace masked_encode_cuda {
namespace {

using mask_rng::RowMask;

constexpr int kChunk = 256;

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("masked_encode CUDA ") + what + ": " +
                                                   cudaGetErrorString(err));
}

inline int block_threads(std::int64_t hidden) {
  std::int64_t t = (hidden + 31) / 32 * 32;
  if (t < 64) t = 64;
  if (t > 256) t = 256;
  return static_cast<int>(t);
}

template <typename T>
__global__ void forward_kernel(const std::int64_t* __restrict__ crow, const std::int64_t* __restrict__ col,
                               const T* __restrict__ values, std::int64_t n_rows, const T* __restrict__ W,
                               std::int64_t H, const T* __restrict__ bias, T* __restrict__ out, MaskParams p) {
  __shared__ std::int64_t s_col[kChunk];
  __shared__ T s_val[kChunk];
  const std::int64_t i = blockIdx.x;
  if (i >= n_rows) return;
  const RowMask rm(p, static_cast<std::uint64_t>(p.cell_offset + i));
  const std::int64_t k0 = crow[i], k1 = crow[i + 1];
  for (std::int64_t h0 = 0; h0 < H; h0 += blockDim.x) {
    const std::int64_t h = h0 + threadIdx.x;
    T acc = (h < H && bias != nullptr) ? bias[h] : T(0);
    for (std::int64_t c = k0; c < k1; c += kChunk) {
      const int n = static_cast<int>((k1 - c) < kChunk ? (k1 - c) : kChunk);
      __syncthreads();
      for (int t = threadIdx.x; t < n; t += blockDim.x) {
        const std::int64_t g = col[c + t];
        s_col[t] = g;
        s_val[t] = rm.hidden(p, g) ? T(0) : values[c + t];
      }
      __syncthreads();
      if (h < H) {
        for (int t = 0; t < n; ++t) {
          const T v = s_val[t];
          if (v != T(0)) acc += v * W[s_col[t] * H + h];
        }
      }
    }
    if (h < H) out[i * H + h] = acc;
  }
}

template <typename T>
__global__ void grad_weight_kernel(const std::int64_t* __restrict__ crow, const std::int64_t* __restrict__ col,
                                   const T* __restrict__ values, std::int64_t n_rows, const T* __restrict__ dout,
                                   std::int64_t H, T* __restrict__ dW, MaskParams p) {
  __shared__ std::int64_t s_col[kChunk];
  __shared__ T s_val[kChunk];
  const std::int64_t i = blockIdx.x;
  if (i >= n_rows) return;
  const RowMask rm(p, static_cast<std::uint64_t>(p.cell_offset + i));
  const std::int64_t k0 = crow[i], k1 = crow[i + 1];
  for (std::int64_t h0 = 0; h0 < H; h0 += blockDim.x) {
    const std::int64_t h = h0 + threadIdx.x;
    const T d = h < H ? dout[i * H + h] : T(0);
    for (std::int64_t c = k0; c < k1; c += kChunk) {
      const int n = static_cast<int>((k1 - c) < kChunk ? (k1 - c) : kChunk);
      __syncthreads();
      for (int t = threadIdx.x; t < n; t += blockDim.x) {
        const std::int64_t g = col[c + t];
        s_col[t] = g;
        s_val[t] = rm.hidden(p, g) ? T(0) : values[c + t];
      }
      __syncthreads();
      if (h < H) {
        for (int t = 0; t < n; ++t) {
          const T v = s_val[t];
          if (v != T(0)) atomicAdd(dW + s_col[t] * H + h, v * d);
        }
      }
    }
  }
}

// One warp per nonzero (block = one row, warps stride over its nonzeros).
template <typename T>
__global__ void grad_values_kernel(const std::int64_t* __restrict__ crow, const std::int64_t* __restrict__ col,
                                   std::int64_t n_rows, const T* __restrict__ W, std::int64_t H,
                                   const T* __restrict__ dout, T* __restrict__ dvalues, MaskParams p) {
  const std::int64_t i = blockIdx.x;
  if (i >= n_rows) return;
  const RowMask rm(p, static_cast<std::uint64_t>(p.cell_offset + i));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  const T* d = dout + i * H;
  for (std::int64_t k = crow[i] + warp; k < crow[i + 1]; k += n_warps) {
    const std::int64_t g = col[k];
    if (rm.hidden(p, g)) {  // uniform across the warp
      if (lane == 0) dvalues[k] = T(0);
      continue;
    }
    const T* w = W + g * H;
    T s = T(0);
    for (std::int64_t h = lane; h < H; h += 32) s += d[h] * w[h];
    for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
    if (lane == 0) dvalues[k] = s;
  }
}

__global__ void mask_bits_kernel(const std::int64_t* __restrict__ cells, std::int64_t n_cells, std::int64_t G,
                                 std::uint8_t* __restrict__ out, MaskParams p) {
  const std::int64_t c = blockIdx.y;
  if (c >= n_cells) return;
  const RowMask rm(p, static_cast<std::uint64_t>(cells[c]));
  for (std::int64_t g = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < G;
       g += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    out[c * G + g] = rm.hidden(p, g) ? 1 : 0;
  }
}

// ---------------------------------------------------------------- tensor cores (float32, sm_80+)
// See masked_encode_tc.hpp: the CSR gather and mask fused with 3xTF32 tiles.

__global__ void __launch_bounds__(me_tc::THREADS)
    forward_tc_kernel(const std::int64_t* __restrict__ crow, const std::int64_t* __restrict__ col,
                      const float* __restrict__ values, std::int64_t n_rows, std::int64_t G,
                      const float* __restrict__ W, std::int64_t H, const float* __restrict__ bias,
                      float* __restrict__ out, MaskParams p) {
#if defined(__CUDA_ARCH__) && defined(CJ_TF32_MMA)
  __shared__ me_tc::FwdSmem sm;
  const int tid = threadIdx.x;
  const std::int64_t i0 = static_cast<std::int64_t>(blockIdx.x) * me_tc::TILE;
  const std::int64_t h0 = static_cast<std::int64_t>(blockIdx.y) * me_tc::TILE;
  me_tc::Cursor cur = me_tc::fwd_cursor(crow, n_rows, i0, tid);
  tf32::FragC acc[2][2];
  tf32::zero(acc);
  for (std::int64_t g0 = 0; g0 < G; g0 += me_tc::KC) {
    me_tc::fwd_stage(sm, cur, p, i0, col, values, W, G, H, g0, h0, tid);
    __syncthreads();
    tf32::warp_mma<tf32::kRowMajor, tf32::kRowMajor>(sm.a, me_tc::LDF, sm.b, me_tc::LDT, me_tc::KC, acc);
    __syncthreads();
  }
  tf32::store(acc, sm.c, me_tc::LDT);
  __syncthreads();
  me_tc::fwd_write(sm, bias, out, n_rows, H, i0, h0, tid);
#endif
}

__global__ void __launch_bounds__(me_tc::THREADS)
    grad_weight_tc_kernel(const std::int64_t* __restrict__ crow, const std::int64_t* __restrict__ col,
                          const float* __restrict__ values, std::int64_t n_rows, std::int64_t G,
                          const float* __restrict__ dout, std::int64_t H, float* __restrict__ dW, MaskParams p,
                          std::int64_t per_slice) {
#if defined(__CUDA_ARCH__) && defined(CJ_TF32_MMA)
  __shared__ me_tc::GradSmem sm;
  const int tid = threadIdx.x;
  const std::int64_t g0 = static_cast<std::int64_t>(blockIdx.x) * me_tc::TILE;
  const std::int64_t h0 = static_cast<std::int64_t>(blockIdx.y) * me_tc::TILE;
  const std::int64_t cs = static_cast<std::int64_t>(blockIdx.z) * per_slice;
  const std::int64_t ce = me_tc::imin(cs + per_slice, n_rows);
  tf32::FragC acc[2][2];
  tf32::zero(acc);
  for (std::int64_t c0 = cs; c0 < ce; c0 += me_tc::KC) {
    me_tc::grad_stage(sm, p, crow, col, values, dout, H, c0, ce, g0, h0, tid);
    __syncthreads();
    tf32::warp_mma<tf32::kColMajor, tf32::kRowMajor>(sm.a, me_tc::LDT, sm.b, me_tc::LDT, me_tc::KC, acc);
    __syncthreads();
  }
  tf32::store(acc, sm.c, me_tc::LDT);
  __syncthreads();
  for (int e = tid; e < me_tc::TILE * me_tc::TILE; e += me_tc::THREADS) {
    const int r = e / me_tc::TILE, n = e % me_tc::TILE;
    const float v = sm.c[r * me_tc::LDT + n];
    if (g0 + r < G && h0 + n < H && v != 0.0f) atomicAdd(dW + (g0 + r) * H + h0 + n, v);
  }
#endif
}

bool has_tf32_mma() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major >= 8;
}

template <typename T>
void launch_forward(const std::int64_t* crow, const std::int64_t* col, const T* values, std::int64_t n_rows,
                    const T* W, std::int64_t H, const T* bias, T* out, const MaskParams& p, std::uintptr_t stream) {
  if (n_rows <= 0) return;
  forward_kernel<T><<<static_cast<unsigned>(n_rows), block_threads(H), 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      crow, col, values, n_rows, W, H, bias, out, p);
  check(cudaGetLastError(), "forward launch");
}

template <typename T>
void launch_grad_weight(const std::int64_t* crow, const std::int64_t* col, const T* values, std::int64_t n_rows,
                        const T* dout, std::int64_t H, T* dW, const MaskParams& p, std::uintptr_t stream) {
  if (n_rows <= 0) return;
  grad_weight_kernel<T><<<static_cast<unsigned>(n_rows), block_threads(H), 0,
                          reinterpret_cast<cudaStream_t>(stream)>>>(crow, col, values, n_rows, dout, H, dW, p);
  check(cudaGetLastError(), "grad_weight launch");
}

template <typename T>
void launch_grad_values(const std::int64_t* crow, const std::int64_t* col, std::int64_t n_rows, const T* W,
                        std::int64_t H, const T* dout, T* dvalues, const MaskParams& p, std::uintptr_t stream) {
  if (n_rows <= 0) return;
  grad_values_kernel<T><<<static_cast<unsigned>(n_rows), 128, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      crow, col, n_rows, W, H, dout, dvalues, p);
  check(cudaGetLastError(), "grad_values launch");
}

}  // namespace

bool forward_tc(const std::int64_t* crow, const std::int64_t* col, const float* values, std::int64_t n_rows,
                std::int64_t n_genes, const float* weight, std::int64_t hidden, const float* bias, float* out,
                const MaskParams& mask, std::uintptr_t stream) {
  if (!has_tf32_mma()) return false;
  if (n_rows <= 0 || hidden <= 0) return true;
  const std::int64_t hy = (hidden + me_tc::TILE - 1) / me_tc::TILE;
  if (hy > 65535) throw std::invalid_argument("masked_encode forward_tc: hidden too large");
  dim3 grid(static_cast<unsigned>((n_rows + me_tc::TILE - 1) / me_tc::TILE), static_cast<unsigned>(hy));
  forward_tc_kernel<<<grid, me_tc::THREADS, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      crow, col, values, n_rows, n_genes, weight, hidden, bias, out, mask);
  check(cudaGetLastError(), "forward_tc launch");
  return true;
}

bool grad_weight_tc(const std::int64_t* crow, const std::int64_t* col, const float* values, std::int64_t n_rows,
                    std::int64_t n_genes, const float* dout, std::int64_t hidden, float* dweight,
                    const MaskParams& mask, std::uintptr_t stream) {
  if (!has_tf32_mma()) return false;
  if (n_rows <= 0 || hidden <= 0 || n_genes <= 0) return true;
  const std::int64_t per = me_tc::cells_per_slice(n_rows, n_genes, hidden);
  const std::int64_t gx = (n_genes + me_tc::TILE - 1) / me_tc::TILE, hy = (hidden + me_tc::TILE - 1) / me_tc::TILE;
  const std::int64_t sz = (n_rows + per - 1) / per;
  if (hy > 65535 || sz > 65535) throw std::invalid_argument("masked_encode grad_weight_tc: grid too large");
  dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(hy), static_cast<unsigned>(sz));
  grad_weight_tc_kernel<<<grid, me_tc::THREADS, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      crow, col, values, n_rows, n_genes, dout, hidden, dweight, mask, per);
  check(cudaGetLastError(), "grad_weight_tc launch");
  return true;
}

void forward(const std::int64_t* crow, const std::int64_t* col, const float* values, std::int64_t n_rows,
             const float* weight, std::int64_t hidden, const float* bias, float* out, const MaskParams& mask,
             std::uintptr_t stream) {
  launch_forward(crow, col, values, n_rows, weight, hidden, bias, out, mask, stream);
}
void forward(const std::int64_t* crow, const std::int64_t* col, const double* values, std::int64_t n_rows,
             const double* weight, std::int64_t hidden, const double* bias, double* out, const MaskParams& mask,
             std::uintptr_t stream) {
  launch_forward(crow, col, values, n_rows, weight, hidden, bias, out, mask, stream);
}
void grad_weight(const std::int64_t* crow, const std::int64_t* col, const float* values, std::int64_t n_rows,
                 const float* dout, std::int64_t hidden, float* dweight, const MaskParams& mask, std::uintptr_t stream) {
  launch_grad_weight(crow, col, values, n_rows, dout, hidden, dweight, mask, stream);
}
void grad_weight(const std::int64_t* crow, const std::int64_t* col, const double* values, std::int64_t n_rows,
                 const double* dout, std::int64_t hidden, double* dweight, const MaskParams& mask,
                 std::uintptr_t stream) {
  launch_grad_weight(crow, col, values, n_rows, dout, hidden, dweight, mask, stream);
}
void grad_values(const std::int64_t* crow, const std::int64_t* col, std::int64_t n_rows, const float* weight,
                 std::int64_t hidden, const float* dout, float* dvalues, const MaskParams& mask, std::uintptr_t stream) {
  launch_grad_values(crow, col, n_rows, weight, hidden, dout, dvalues, mask, stream);
}
void grad_values(const std::int64_t* crow, const std::int64_t* col, std::int64_t n_rows, const double* weight,
                 std::int64_t hidden, const double* dout, double* dvalues, const MaskParams& mask,
                 std::uintptr_t stream) {
  launch_grad_values(crow, col, n_rows, weight, hidden, dout, dvalues, mask, stream);
}

void mask_bits(const std::int64_t* cells, std::int64_t n_cells, std::int64_t n_genes, std::uint8_t* hidden,
               const MaskParams& mask, std::uintptr_t stream) {
  if (n_cells <= 0 || n_genes <= 0) return;
  std::int64_t gx = (n_genes + 255) / 256;
  if (gx > 65535) gx = 65535;
  if (n_cells > 65535) throw std::invalid_argument("masked_encode mask_bits: at most 65535 cells per call");
  dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(n_cells));
  mask_bits_kernel<<<grid, 256, 0, reinterpret_cast<cudaStream_t>(stream)>>>(cells, n_cells, n_genes, hidden, mask);
  check(cudaGetLastError(), "mask_bits launch");
}

}  // namespace masked_encode_cuda
}  // namespace celljepa
