// Float32 products on tensor cores in 3xTF32, shared by the tensor-core kernels (edistance.cu,
// masked_encode.cu) and their host emulations (*_emulate_cpu.cpp), so the tile logic is tested on machines
// without a GPU.
//
// A block of THREADS = 128 threads computes a 64 x 64 tile C += A·B over chunks of shared memory; each of
// the 4 warps owns a 32 x 32 quarter (2 x 2 WMMA m16n16k8 accumulators). Each float operand is split into
// hi = tf32(v) and lo = tf32(v - hi) and the quarter accumulates lo·hi + hi·lo + hi·hi in float32: float32
// accuracy (the dropped lo·lo term is below 2^-22 relative) at tensor-core speed. The split is element by
// element, so it does not depend on the fragments' register layout; loads and stores go through the WMMA
// API with the layouts given, never through a guessed fragment layout.
//
// Operand layouts (shared memory, float, leading dimension ld, a multiple of 4):
//   RowMajorA: A(m, k) = a[m * ld + k]     ColMajorA: A(m, k) = a[k * ld + m]
//   ColMajorB: B(k, n) = b[n * ld + k]     RowMajorB: B(k, n) = b[k * ld + n]
#pragma once

#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#include <mma.h>
#define CJ_TF32_HD __host__ __device__ __forceinline__
#else
#define CJ_TF32_HD inline
#endif

namespace celljepa {
namespace tf32 {

constexpr int TILE = 64;             // output tile edge
constexpr int MMA_K = 8;             // m16n16k8 (tf32)
constexpr int WARPS = 4;             // 2 x 2 warps
constexpr int THREADS = 32 * WARPS;  // threads per block

enum Layout { kRowMajor = 0, kColMajor = 1 };

// Element (m, k) of A / (k, n) of B in shared memory for a layout.
template <int L>
CJ_TF32_HD int a_index(int m, int k, int ld) {
  return L == kRowMajor ? m * ld + k : k * ld + m;
}
template <int L>
CJ_TF32_HD int b_index(int k, int n, int ld) {
  return L == kRowMajor ? k * ld + n : n * ld + k;
}

// Round to TF32 (10 explicit mantissa bits), to nearest with ties away from zero: cvt.rna.tf32.f32, what
// wmma::__float_to_tf32 does on the device.
inline float round_host(float v) {
  std::uint32_t u;
  static_assert(sizeof(u) == sizeof(v), "float is 32 bits");
  __builtin_memcpy(&u, &v, sizeof(u));
  if ((u & 0x7f800000u) != 0x7f800000u) {  // finite: round the 13 dropped bits
    u += 0x1000u;
    u &= 0xffffe000u;
  }
  __builtin_memcpy(&v, &u, sizeof(u));
  return v;
}

using Quarter = float[32][32];

// Host emulation of one warp's step kk .. kk + 8: acc += lo·hi, then hi·lo, then hi·hi per output, each
// m16n16k8 product summed exactly and added to the float32 accumulator (the device's order of the three).
template <int LA, int LB>
void warp_mma_host(const float* a, int lda, const float* b, int ldb, int warp, int kk, Quarter& acc) {
  const int r0 = (warp >> 1) * 32, c0 = (warp & 1) * 32;
  for (int i = 0; i < 32; ++i) {
    for (int j = 0; j < 32; ++j) {
      float ah[MMA_K], al[MMA_K], bh[MMA_K], bl[MMA_K];
      for (int k = 0; k < MMA_K; ++k) {
        const float av = a[a_index<LA>(r0 + i, kk + k, lda)], bv = b[b_index<LB>(kk + k, c0 + j, ldb)];
        ah[k] = round_host(av);
        al[k] = round_host(av - ah[k]);
        bh[k] = round_host(bv);
        bl[k] = round_host(bv - bh[k]);
      }
      const float* pa[3] = {al, ah, ah};
      const float* pb[3] = {bh, bl, bh};
      for (int m = 0; m < 3; ++m) {
        double dot = 0.0;
        for (int k = 0; k < MMA_K; ++k) dot += double(pa[m][k]) * double(pb[m][k]);
        acc[i][j] = float(double(acc[i][j]) + dot);
      }
    }
  }
}

// Host: the quarters of all warps into C (row-major, leading dimension ldc).
inline void store_host(const Quarter* acc, float* c, int ldc) {
  for (int warp = 0; warp < WARPS; ++warp) {
    const int r0 = (warp >> 1) * 32, c0 = (warp & 1) * 32;
    for (int i = 0; i < 32; ++i)
      for (int j = 0; j < 32; ++j) c[(r0 + i) * ldc + c0 + j] = acc[warp][i][j];
  }
}

// Device side: sm_80+ (tf32 WMMA); on older architectures the kernels compile without it (their launchers
// never start them there).
#if defined(__CUDACC__) && (!defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800)
#define CJ_TF32_MMA 1
template <int L>
using WLayout = typename std::conditional<L == kRowMajor, nvcuda::wmma::row_major, nvcuda::wmma::col_major>::type;
template <int LA>
using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, MMA_K, nvcuda::wmma::precision::tf32, WLayout<LA>>;
template <int LB>
using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, MMA_K, nvcuda::wmma::precision::tf32, WLayout<LB>>;
using FragC = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, MMA_K, float>;

// hi = tf32(v), lo = tf32(v - hi), element by element.
template <class Frag>
__device__ __forceinline__ void split(Frag& hi, Frag& lo) {
#pragma unroll
  for (int e = 0; e < hi.num_elements; ++e) {
    const float v = hi.x[e];
    const float h = nvcuda::wmma::__float_to_tf32(v);
    hi.x[e] = h;
    lo.x[e] = nvcuda::wmma::__float_to_tf32(v - h);
  }
}

__device__ __forceinline__ void zero(FragC (&acc)[2][2]) {
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) nvcuda::wmma::fill_fragment(acc[i][j], 0.0f);
}

// This warp's quarter: acc += A(:, 0..kn) · B(0..kn, :) from shared memory (kn rounded up to 8; the staged
// operands are zero beyond their valid extent). Needs sm_80+.
template <int LA, int LB>
__device__ __forceinline__ void warp_mma(const float* a, int lda, const float* b, int ldb, int kn,
                                         FragC (&acc)[2][2]) {
  namespace wmma = nvcuda::wmma;
  const int warp = threadIdx.x >> 5;
  const int r0 = (warp >> 1) * 32, c0 = (warp & 1) * 32;
  for (int kk = 0; kk < kn; kk += MMA_K) {
    FragA<LA> ah[2], al[2];
    FragB<LB> bh[2], bl[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      wmma::load_matrix_sync(ah[i], a + a_index<LA>(r0 + 16 * i, kk, lda), lda);
      split(ah[i], al[i]);
      wmma::load_matrix_sync(bh[i], b + b_index<LB>(kk, c0 + 16 * i, ldb), ldb);
      split(bh[i], bl[i]);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wmma::mma_sync(acc[i][j], al[i], bh[j], acc[i][j]);
        wmma::mma_sync(acc[i][j], ah[i], bl[j], acc[i][j]);
        wmma::mma_sync(acc[i][j], ah[i], bh[j], acc[i][j]);
      }
  }
}

// The quarter into C (row-major, leading dimension ldc, a multiple of 4).
__device__ __forceinline__ void store(FragC (&acc)[2][2], float* c, int ldc) {
  const int warp = threadIdx.x >> 5;
  const int r0 = (warp >> 1) * 32, c0 = (warp & 1) * 32;
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      nvcuda::wmma::store_matrix_sync(c + (r0 + 16 * i) * ldc + c0 + 16 * j, acc[i][j], ldc,
                                      nvcuda::wmma::mem_row_major);
}
#endif

}  // namespace tf32
}  // namespace celljepa
