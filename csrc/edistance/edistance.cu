// CUDA kernels of the edistance op: tiled pairwise distance sums and the E-distance set loss.
//
// One thread block per work item = one TILE x TILE tile of pairs (items built on the host side in
// Python, so no N x N buffer ever exists). Both operand tiles are staged through shared memory in
// chunks of KC features; each of the 256 threads holds a 4 x 4 register tile of dot products.
// Squared distances use the expanded form |x|^2 + |y|^2 - 2 x.y with float64 row norms rounded to
// the input dtype, floored at 0 (below 8 ulps of |x|^2 + |y|^2 counts as 0). Each block reduces its
// tile sum in float64 and writes it to part[item]; the caller sums parts per block (second pass).
//
// Float32 block sums have a second kernel on sm_80+, block_sums_tc_kernel: the same work items, the dot
// products on tensor cores in 3xTF32 (edistance_tc.hpp, which its host emulation shares). The launcher
// takes it for kernel == 1 and falls back to the SIMT kernel on older devices and for float64.
#include "edistance/edistance.hpp"

#include <cuda_runtime.h>

#include "edistance/edistance_tc.hpp"

#include <cfloat>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace celljepa {
namespace cuda_ed {
namespace {

using i64 = std::int64_t;
constexpr int KC = 16;        // features per shared-memory chunk
constexpr int THREADS = 256;  // 16 x 16 threads, 4 x 4 outputs each

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("celljepa._cuda edistance: ") + what + ": " +
                                                   cudaGetErrorString(err));
}

template <class T>
__device__ __forceinline__ T eps_of();
template <>
__device__ __forceinline__ float eps_of<float>() {
  return FLT_EPSILON;
}
template <>
__device__ __forceinline__ double eps_of<double>() {
  return DBL_EPSILON;
}

template <class T>
__global__ void norms_kernel(const T* __restrict__ x, i64 n, i64 d, T* __restrict__ out) {
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    const T* r = x + i * d;
    double s = 0.0;
    for (i64 k = 0; k < d; ++k) s += double(r[k]) * double(r[k]);
    out[i] = T(s);
  }
}

template <class T>
__device__ __forceinline__ T floored_sq(T an, T bn, T dot) {
  const T nn = an + bn;
  const T d2 = nn - T(2) * dot;
  return d2 > T(8) * eps_of<T>() * nn ? d2 : T(0);
}

// Sum over the block's NT threads, valid in thread 0; ends with a barrier (shared memory is free again).
template <int NT = THREADS>
__device__ __forceinline__ double block_reduce(double v, double* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  double s = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < NT / 32; ++w) s += red[w];
  __syncthreads();
  return s;
}

// Dot products of the TILE x TILE tile: rows xs.. (mi valid) against rows ys.. (nj valid).
template <class T, int KC>
__device__ __forceinline__ void tile_dots(const T* __restrict__ x, i64 xs, int mi, const T* __restrict__ y, i64 ys,
                                          int nj, i64 d, T (*As)[TILE + 1], T (*Bs)[TILE + 1], T (&acc)[4][4]) {
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
  for (int a = 0; a < 4; ++a)
#pragma unroll
    for (int b = 0; b < 4; ++b) acc[a][b] = T(0);
  for (i64 k0 = 0; k0 < d; k0 += KC) {
    for (int e = threadIdx.x; e < TILE * KC; e += THREADS) {
      const int r = e / KC, kk = e % KC;
      const i64 k = k0 + kk;
      As[kk][r] = (r < mi && k < d) ? x[(xs + r) * d + k] : T(0);
      Bs[kk][r] = (r < nj && k < d) ? y[(ys + r) * d + k] : T(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < KC; ++kk) {
      T av[4], bv[4];
#pragma unroll
      for (int a = 0; a < 4; ++a) av[a] = As[kk][ty + 16 * a];
#pragma unroll
      for (int b = 0; b < 4; ++b) bv[b] = Bs[kk][tx + 16 * b];
#pragma unroll
      for (int a = 0; a < 4; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) acc[a][b] = fma(av[a], bv[b], acc[a][b]);
    }
    __syncthreads();
  }
}

template <class T>
__global__ void __launch_bounds__(THREADS) block_sums_kernel(const T* __restrict__ x, i64 d, const T* __restrict__ nrm,
                                                             const i64* __restrict__ off, const i64* __restrict__ blocks,
                                                             const i64* __restrict__ items, i64 n_items, bool squared,
                                                             double* __restrict__ part) {
  __shared__ T As[KC][TILE + 1];
  __shared__ T Bs[KC][TILE + 1];
  __shared__ double red[THREADS / 32];
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  for (i64 it = blockIdx.x; it < n_items; it += gridDim.x) {
    const i64 b = items[3 * it], i0 = items[3 * it + 1], j0 = items[3 * it + 2];
    const i64 ga = blocks[2 * b], gb = blocks[2 * b + 1];
    const i64 xs = off[ga] + i0, ys = off[gb] + j0;
    const int mi = (int)min((i64)TILE, off[ga + 1] - off[ga] - i0);
    const int nj = (int)min((i64)TILE, off[gb + 1] - off[gb] - j0);
    const bool diag = ga == gb && i0 == j0;
    T acc[4][4];
    tile_dots<T, KC>(x, xs, mi, x, ys, nj, d, As, Bs, acc);
    double s = 0.0;
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const int r = ty + 16 * a;
      if (r >= mi) continue;
      const T an = nrm[xs + r];
#pragma unroll
      for (int c4 = 0; c4 < 4; ++c4) {
        const int c = tx + 16 * c4;
        if (c >= nj || (diag && c <= r)) continue;
        const T q = floored_sq<T>(an, nrm[ys + c], acc[a][c4]);
        s += squared ? double(q) : double(sqrt(q));
      }
    }
    s = block_reduce(s, red);
    if (threadIdx.x == 0) part[it] = s;
  }
}

template <class T>
__global__ void __launch_bounds__(THREADS) set_loss_kernel(const T* __restrict__ p, const T* __restrict__ o, i64 d,
                                                           const T* __restrict__ pn, const T* __restrict__ on,
                                                           const i64* __restrict__ poff, const i64* __restrict__ ooff,
                                                           const i64* __restrict__ items, i64 n_items, bool squared,
                                                           double* __restrict__ part, T* gp, T* go) {
  constexpr int KCL = sizeof(T) == 8 ? 8 : KC;  // keeps static shared memory under 48 KiB for double
  __shared__ T As[KCL][TILE + 1];
  __shared__ T Bs[KCL][TILE + 1];
  __shared__ T W[TILE][TILE + 1];
  __shared__ T rs[TILE], cs[TILE];
  __shared__ double red[THREADS / 32];
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  for (i64 it = blockIdx.x; it < n_items; it += gridDim.x) {
    const i64 k = items[4 * it], kind = items[4 * it + 1], i0 = items[4 * it + 2], j0 = items[4 * it + 3];
    const i64 n = poff[k + 1] - poff[k], m = ooff[k + 1] - ooff[k];
    const T *x, *y, *xn, *yn;
    T *gx, *gy;
    i64 xs, ys, nx, ny;
    double c;
    if (kind == 0) {
      x = p; xn = pn; xs = poff[k]; nx = n; y = o; yn = on; ys = ooff[k]; ny = m; gx = gp; gy = go;
      c = 2.0 / (double(n) * double(m));
    } else if (kind == 1) {
      x = y = p; xn = yn = pn; xs = ys = poff[k]; nx = ny = n; gx = gy = gp;
      c = n > 1 ? -2.0 / (double(n) * double(n - 1)) : 0.0;
    } else {
      x = y = o; xn = yn = on; xs = ys = ooff[k]; nx = ny = m; gx = gy = go;
      c = m > 1 ? -2.0 / (double(m) * double(m - 1)) : 0.0;
    }
    xs += i0;
    ys += j0;
    const int mi = (int)min((i64)TILE, nx - i0), nj = (int)min((i64)TILE, ny - j0);
    const bool diag = kind != 0 && i0 == j0;
    T acc[4][4];
    tile_dots<T, KCL>(x, xs, mi, y, ys, nj, d, As, Bs, acc);
    const bool grads = (gx != nullptr || gy != nullptr) && c != 0.0;
    double s = 0.0;
#pragma unroll
    for (int a = 0; a < 4; ++a) {
      const int r = ty + 16 * a;
#pragma unroll
      for (int c4 = 0; c4 < 4; ++c4) {
        const int cc = tx + 16 * c4;
        T w = T(0);
        if (r < mi && cc < nj && !(diag && cc <= r)) {
          T q = floored_sq<T>(xn[xs + r], yn[ys + cc], acc[a][c4]);
          if (squared) {
            w = T(2);
          } else {
            q = sqrt(q);
            w = q > T(0) ? T(1) / q : T(0);
          }
          s += double(q);
        }
        W[r][cc] = w;
      }
    }
    s = block_reduce(s, red);  // contains __syncthreads: W is complete afterwards
    if (threadIdx.x == 0) part[it] = s;
    if (grads) {
      const T ct = T(c);
      if (threadIdx.x < TILE) {
        T t = T(0);
        for (int j = 0; j < TILE; ++j) t += W[threadIdx.x][j];
        rs[threadIdx.x] = t;
      } else if (threadIdx.x < 2 * TILE) {
        const int j = threadIdx.x - TILE;
        T t = T(0);
        for (int i = 0; i < TILE; ++i) t += W[i][j];
        cs[j] = t;
      }
      __syncthreads();
      for (i64 k0 = 0; k0 < d; k0 += KCL) {
        for (int e = threadIdx.x; e < TILE * KCL; e += THREADS) {
          const int r = e / KCL, kk = e % KCL;
          const i64 kf = k0 + kk;
          As[kk][r] = (r < mi && kf < d) ? x[(xs + r) * d + kf] : T(0);
          Bs[kk][r] = (r < nj && kf < d) ? y[(ys + r) * d + kf] : T(0);
        }
        __syncthreads();
        const int row = threadIdx.x & (TILE - 1);
        for (int kk = threadIdx.x / TILE; kk < KCL; kk += THREADS / TILE) {
          const i64 kf = k0 + kk;
          if (kf >= d) break;
          if (gx != nullptr && row < mi) {
            T t = T(0);
            for (int j = 0; j < TILE; ++j) t += W[row][j] * Bs[kk][j];
            atomicAdd(gx + (xs + row) * d + kf, ct * (rs[row] * As[kk][row] - t));
          }
          if (gy != nullptr && row < nj) {
            T t = T(0);
            for (int i = 0; i < TILE; ++i) t += W[i][row] * As[kk][i];
            atomicAdd(gy + (ys + row) * d + kf, ct * (cs[row] * Bs[kk][row] - t));
          }
        }
        __syncthreads();
      }
    }
  }
}

// Float32 block sums on tensor cores (see edistance_tc.hpp): one block of ed_tc::THREADS per work item.
__global__ void __launch_bounds__(ed_tc::THREADS)
    block_sums_tc_kernel(const float* __restrict__ x, i64 d, const float* __restrict__ means,
                         const i64* __restrict__ off, const i64* __restrict__ blocks, const i64* __restrict__ items,
                         i64 n_items, bool squared, double* __restrict__ part) {
#if defined(__CUDA_ARCH__) && defined(CJ_TF32_MMA)
  namespace tc = ed_tc;
  __shared__ tc::Smem sm;
  const int tid = threadIdx.x;
  for (i64 it = blockIdx.x; it < n_items; it += gridDim.x) {
    const tc::Item t = tc::decode(off, blocks, items, means, d, it);
    float nacc = 0.0f;
    tf32::FragC acc[2][2];
    tf32::zero(acc);
    for (i64 k0 = 0; k0 < d; k0 += tc::KC) {
      tc::stage(sm, x, d, t, k0, tid);
      __syncthreads();
      const int kn = (int)tc::imin((i64)tc::KC, d - k0);
      nacc = tc::norm_part(sm, tid, kn, nacc);
      tf32::warp_mma<tf32::kRowMajor, tf32::kColMajor>(sm.a, tc::LDA, sm.b, tc::LDA, kn, acc);
      __syncthreads();
    }
    tf32::store(acc, sm.c, tc::LDC);
    tc::store_norm(sm, tid, nacc);
    __syncthreads();
    const double s = block_reduce<tc::THREADS>(tc::epilogue(sm, t, squared, tid), sm.red);
    if (tid == 0) part[it] = s;
  }
#endif  // tf32 WMMA needs sm_80+: the launcher does not start this kernel on older devices
}

// Whether the current device has tf32 tensor cores (compute capability 8.0 or newer).
bool has_tf32_mma() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) !=
                                                cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major >= 8;
}

unsigned grid_for(i64 n_items) { return (unsigned)(n_items < (i64(1) << 30) ? n_items : (i64(1) << 30)); }

template <class T>
void launch_norms(const T* x, i64 n, i64 d, T* out, cudaStream_t s) {
  if (n <= 0) return;
  const i64 blocks = (n + 255) / 256;
  norms_kernel<T><<<(unsigned)(blocks < 65535 * 16 ? blocks : 65535 * 16), 256, 0, s>>>(x, n, d, out);
  check(cudaGetLastError(), "norms kernel launch");
}

}  // namespace

void block_sums(const void* x, i64 n, i64 d, void* norms, const i64* offsets, const i64* blocks, const i64* items,
                i64 n_items, bool squared, bool is_double, double* part, int kernel, const void* means,
                std::uintptr_t stream) {
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (n_items <= 0) return;
  static_assert(ed_tc::TILE == TILE, "the tensor-core kernel takes the SIMT kernel's work items");
  if (!is_double && kernel == 1 && means != nullptr && has_tf32_mma()) {
    block_sums_tc_kernel<<<grid_for(n_items), ed_tc::THREADS, 0, s>>>(static_cast<const float*>(x), d,
                                                                       static_cast<const float*>(means), offsets,
                                                                       blocks, items, n_items, squared, part);
  } else if (is_double) {
    launch_norms<double>(static_cast<const double*>(x), n, d, static_cast<double*>(norms), s);
    block_sums_kernel<double><<<grid_for(n_items), THREADS, 0, s>>>(
        static_cast<const double*>(x), d, static_cast<const double*>(norms), offsets, blocks, items, n_items, squared,
        part);
  } else {
    launch_norms<float>(static_cast<const float*>(x), n, d, static_cast<float*>(norms), s);
    block_sums_kernel<float><<<grid_for(n_items), THREADS, 0, s>>>(
        static_cast<const float*>(x), d, static_cast<const float*>(norms), offsets, blocks, items, n_items, squared,
        part);
  }
  check(cudaGetLastError(), "block_sums kernel launch");
}

void set_loss(const void* pred, i64 n_pred, const void* obs, i64 n_obs, i64 d, void* pred_norms, void* obs_norms,
              const i64* pred_offsets, const i64* obs_offsets, const i64* items, i64 n_items, bool squared,
              bool is_double, double* part, void* grad_pred, void* grad_obs, std::uintptr_t stream) {
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (n_items <= 0) return;
  if (is_double) {
    launch_norms<double>(static_cast<const double*>(pred), n_pred, d, static_cast<double*>(pred_norms), s);
    launch_norms<double>(static_cast<const double*>(obs), n_obs, d, static_cast<double*>(obs_norms), s);
    set_loss_kernel<double><<<grid_for(n_items), THREADS, 0, s>>>(
        static_cast<const double*>(pred), static_cast<const double*>(obs), d, static_cast<const double*>(pred_norms),
        static_cast<const double*>(obs_norms), pred_offsets, obs_offsets, items, n_items, squared, part,
        static_cast<double*>(grad_pred), static_cast<double*>(grad_obs));
  } else {
    launch_norms<float>(static_cast<const float*>(pred), n_pred, d, static_cast<float*>(pred_norms), s);
    launch_norms<float>(static_cast<const float*>(obs), n_obs, d, static_cast<float*>(obs_norms), s);
    set_loss_kernel<float><<<grid_for(n_items), THREADS, 0, s>>>(
        static_cast<const float*>(pred), static_cast<const float*>(obs), d, static_cast<const float*>(pred_norms),
        static_cast<const float*>(obs_norms), pred_offsets, obs_offsets, items, n_items, squared, part,
        static_cast<float*>(grad_pred), static_cast<float*>(grad_obs));
  }
  check(cudaGetLastError(), "set_loss kernel launch");
}

}  // namespace cuda_ed
}  // namespace celljepa
