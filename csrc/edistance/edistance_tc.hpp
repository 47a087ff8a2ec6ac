// The tensor-core E-distance tile (float32), written once for the CUDA kernel (edistance.cu) and for its
// host emulation (edistance_tc_emulate_cpu.cpp), so the tile logic is tested on machines without a GPU.
//
// One thread block of THREADS threads per work item (block, row0, col0) = one TILE x TILE tile of pairs
// (the same work items as the SIMT kernel). As the C++ kernel does, both row tiles are centred on the mean
// of the block's first group (x' = x - c in float32; distances do not change, and the expanded form then
// loses digits to the spread of the groups, not to their distance from the origin). Per chunk of KC
// features the block stages both centred tiles in shared memory (rows r >= mi / features beyond d are
// zero); thread t accumulates the squared norm of staged row t from the same values the products use, and
// each of the 4 warps owns a 32 x 32 quarter of the tile as 2 x 2 WMMA m16n16k8 accumulators. Products are 3xTF32: each float is split into
// hi = tf32(v) and lo = tf32(v - hi) and the tile accumulates lo·hi + hi·lo + hi·hi in float32, which
// keeps float32 accuracy (the dropped lo·lo term is below 2^-22 relative) at tensor-core speed. The
// accumulators are stored to shared memory and the epilogue (expanded squared distance floored at 0,
// sqrt, float64 sums, the diagonal mask) reads them from there: no N x N buffer, one float64 per tile.
//
// The block-level phases below (decode, stage_norms, stage, epilogue) are plain code shared by the
// device kernel and the emulation; only the warp-level MMA and the block reduction differ.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "common/tf32_mma.hpp"

#if defined(__CUDACC__)
#define CJ_TC_HD __host__ __device__ __forceinline__
#else
#define CJ_TC_HD inline
#endif

namespace celljepa {
namespace ed_tc {

using i64 = std::int64_t;

constexpr int TILE = tf32::TILE;        // pairs per tile edge (equals cuda_ed::TILE: the work items are shared)
constexpr int KC = 32;                  // features staged per chunk (a multiple of the MMA depth 8)
constexpr int WARPS = tf32::WARPS;      // 2 x 2 warps, each a 32 x 32 quarter of the tile
constexpr int THREADS = tf32::THREADS;
constexpr int LDA = KC + 4;             // row stride of the staged tiles (floats; multiple of 4 as WMMA needs)
constexpr int LDC = TILE + 4;           // row stride of the stored dot products

struct Smem {
  alignas(32) float a[TILE * LDA];  // x rows: a[r * LDA + k]           (WMMA matrix_a, row-major)
  alignas(32) float b[TILE * LDA];  // y rows: b[c * LDA + k] = B(k, c) (WMMA matrix_b, col-major)
  alignas(32) float c[TILE * LDC];  // dot products: c[r * LDC + c]
  float an[TILE], bn[TILE];         // squared norms of the centred rows
  double red[WARPS];
};

static_assert(THREADS == 2 * TILE, "thread t owns the norm of staged row t (x rows, then y rows)");

struct Item {
  i64 xs, ys;       // first row of the tile in x (rows) and in x (columns)
  const float* mu;  // the centre: mean of the block's first group (d floats)
  int mi, nj;       // valid rows, valid columns (<= TILE)
  bool diag;        // a tile on the diagonal of a within-group block: only pairs column > row count
};

CJ_TC_HD i64 imin(i64 a, i64 b) { return a < b ? a : b; }

// Work item it; means: (groups, d) float32 group means.
CJ_TC_HD Item decode(const i64* off, const i64* blocks, const i64* items, const float* means, i64 d, i64 it) {
  const i64 b = items[3 * it], i0 = items[3 * it + 1], j0 = items[3 * it + 2];
  const i64 ga = blocks[2 * b], gb = blocks[2 * b + 1];
  Item t;
  t.xs = off[ga] + i0;
  t.ys = off[gb] + j0;
  t.mu = means + ga * d;
  t.mi = (int)imin((i64)TILE, off[ga + 1] - off[ga] - i0);
  t.nj = (int)imin((i64)TILE, off[gb + 1] - off[gb] - j0);
  t.diag = ga == gb && i0 == j0;
  return t;
}

// Features k0 .. k0 + KC of both centred row tiles; zero outside the valid rows and beyond d.
CJ_TC_HD void stage(Smem& s, const float* x, i64 d, const Item& t, i64 k0, int tid) {
  for (int e = tid; e < TILE * KC; e += THREADS) {
    const int r = e / KC, kk = e % KC;
    const i64 k = k0 + kk;
    const float c = k < d ? t.mu[k] : 0.0f;
    s.a[r * LDA + kk] = (r < t.mi && k < d) ? x[(t.xs + r) * d + k] - c : 0.0f;
    s.b[r * LDA + kk] = (r < t.nj && k < d) ? x[(t.ys + r) * d + k] - c : 0.0f;
  }
}

// Thread tid's running squared norm of staged row tid (x rows, then y rows) over the chunk's kn features.
CJ_TC_HD float norm_part(const Smem& s, int tid, int kn, float acc) {
  const float* row = tid < TILE ? s.a + tid * LDA : s.b + (tid - TILE) * LDA;
  for (int kk = 0; kk < kn; ++kk) acc = fmaf(row[kk], row[kk], acc);
  return acc;
}

CJ_TC_HD void store_norm(Smem& s, int tid, float v) {
  if (tid < TILE)
    s.an[tid] = v;
  else
    s.bn[tid - TILE] = v;
}

// Squared distance from the expanded form, 0 when within 8 ulps of |x|^2 + |y|^2 (as the SIMT kernel).
CJ_TC_HD float floored_sq(float an, float bn, float dot) {
  const float nn = an + bn;
  const float d2 = nn - 2.0f * dot;
  return d2 > 8.0f * FLT_EPSILON * nn ? d2 : 0.0f;
}

// This thread's float64 sum over its entries of the stored tile (column tid % TILE, every other row pair).
CJ_TC_HD double epilogue(const Smem& s, const Item& t, bool squared, int tid) {
  const int col = tid % TILE;
  double acc = 0.0;
  if (col >= t.nj) return acc;
  const float bn = s.bn[col];
  for (int r = tid / TILE; r < t.mi; r += THREADS / TILE) {
    if (t.diag && col <= r) continue;
    const float q = floored_sq(s.an[r], bn, s.c[r * LDC + col]);
    acc += squared ? double(q) : double(sqrtf(q));
  }
  return acc;
}

}  // namespace ed_tc
}  // namespace celljepa
