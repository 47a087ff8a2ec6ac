// The tensor-core masked encoder (float32): the CSR gather and the mask fused with a tiled 3xTF32 matmul
// (common/tf32_mma.hpp), written once for the CUDA kernels (masked_encode.cu) and their host emulation
// (masked_encode_tc_emulate_cpu.cpp).
//
// forward: one block per 64 cells x 64 hidden units of out = (x * keep) W + b. Per chunk of KC genes,
//   thread t < 64 owns cell row t: it walks its sorted CSR row with a cursor, zeroes its row of the staged A
//   tile (64 cells x KC genes) and writes the kept values (mask bits from the same counter-based RNG as every
//   backend, mask_rng.hpp); all threads stage the W tile (KC genes x 64 units). The dense x and keep mask
//   never exist outside shared memory, and W is read once per 64 cells instead of once per nonzero.
// grad_weight: one block per 64 genes x 64 hidden units x one slice of cells of dW += (x * keep)^T dout.
//   Per chunk of KC cells, thread t < KC finds in its cell's row the nonzeros in the block's 64 genes
//   (binary search, then a scan) and writes them to the staged A^T tile; threads KC .. stage the dout
//   tile. Each block adds its finished 64 x 64 tile to dW once (atomics per tile, not per nonzero).
#pragma once

#include <cstdint>

#include "common/tf32_mma.hpp"
#include "masked_encode/mask_rng.hpp"

#if defined(__CUDACC__)
#define CJ_ME_HD __host__ __device__ __forceinline__
#else
#define CJ_ME_HD inline
#endif

namespace celljepa {
namespace me_tc {

using i64 = std::int64_t;
using mask_rng::MaskParams;
using mask_rng::RowMask;

constexpr int TILE = tf32::TILE;  // 64 cells (forward) or genes (grad_weight) x 64 hidden units per block
constexpr int KC = 32;            // genes (forward) or cells (grad_weight) per staged chunk
constexpr int THREADS = tf32::THREADS;
constexpr int LDF = KC + 4;       // forward A: a[cell * LDF + gene]     (row-major A, 64 x KC)
constexpr int LDT = TILE + 4;     // W / dout / A^T tiles and the output tile: 64 + 4 floats per row
static_assert(THREADS > KC && THREADS >= TILE, "row owners and stagers");

struct FwdSmem {
  alignas(32) float a[TILE * LDF];  // x * keep: 64 cells x KC genes
  alignas(32) float b[KC * LDT];    // W: KC genes x 64 units (row-major B)
  alignas(32) float c[TILE * LDT];  // the output tile
};

struct GradSmem {
  alignas(32) float a[KC * LDT];    // x * keep: KC cells x 64 genes = A^T (col-major A, A(gene, cell))
  alignas(32) float b[KC * LDT];    // dout: KC cells x 64 units (row-major B)
  alignas(32) float c[TILE * LDT];  // the dW tile
};

CJ_ME_HD i64 imin(i64 a, i64 b) { return a < b ? a : b; }

// A forward row owner's cursor into its CSR row.
struct Cursor {
  i64 k, end;
};

CJ_ME_HD Cursor fwd_cursor(const i64* crow, i64 n_rows, i64 i0, int tid) {
  const i64 i = i0 + tid;
  Cursor c{0, 0};
  if (tid < TILE && i < n_rows) {
    c.k = crow[i];
    c.end = crow[i + 1];
  }
  return c;
}

// Forward chunk g0 .. g0 + KC: thread tid < 64 writes its cell's row of A (kept values, zeros elsewhere) and
// advances its cursor; every thread stages part of the W tile (zero beyond n_genes / hidden).
CJ_ME_HD void fwd_stage(FwdSmem& s, Cursor& cur, const MaskParams& p, i64 i0, const i64* col, const float* values,
                        const float* W, i64 G, i64 H, i64 g0, i64 h0, int tid) {
  if (tid < TILE) {
    float* row = s.a + tid * LDF;
    for (int kk = 0; kk < KC; ++kk) row[kk] = 0.0f;
    if (cur.k < cur.end && col[cur.k] < g0 + KC) {
      const RowMask rm(p, static_cast<std::uint64_t>(p.cell_offset + i0 + tid));
      while (cur.k < cur.end && col[cur.k] < g0 + KC) {
        const i64 g = col[cur.k];
        if (!rm.hidden(p, g)) row[g - g0] = values[cur.k];
        ++cur.k;
      }
    }
  }
  for (int e = tid; e < KC * TILE; e += THREADS) {
    const int kk = e / TILE, n = e % TILE;
    const i64 g = g0 + kk, h = h0 + n;
    s.b[kk * LDT + n] = (g < G && h < H) ? W[g * H + h] : 0.0f;
  }
}

// Forward output: out[i, h] = c + bias for the valid cells and units.
CJ_ME_HD void fwd_write(const FwdSmem& s, const float* bias, float* out, i64 n_rows, i64 H, i64 i0, i64 h0,
                        int tid) {
  for (int e = tid; e < TILE * TILE; e += THREADS) {
    const int r = e / TILE, n = e % TILE;
    const i64 i = i0 + r, h = h0 + n;
    if (i < n_rows && h < H) out[i * H + h] = s.c[r * LDT + n] + (bias != nullptr ? bias[h] : 0.0f);
  }
}

// grad_weight chunk of cells c0 .. c0 + KC (below c1): thread tid < KC writes its cell's kept values in genes
// g0 .. g0 + 64 to A^T (zeros elsewhere); threads KC .. stage the dout tile (zero beyond c1 / hidden).
CJ_ME_HD void grad_stage(GradSmem& s, const MaskParams& p, const i64* crow, const i64* col, const float* values,
                         const float* dout, i64 H, i64 c0, i64 c1, i64 g0, i64 h0, int tid) {
  if (tid < KC) {
    float* row = s.a + tid * LDT;
    for (int m = 0; m < TILE; ++m) row[m] = 0.0f;
    const i64 cell = c0 + tid;
    if (cell < c1) {
      i64 lo = crow[cell], hi = crow[cell + 1];
      while (lo < hi) {  // first nonzero with gene >= g0
        const i64 mid = lo + (hi - lo) / 2;
        if (col[mid] < g0)
          lo = mid + 1;
        else
          hi = mid;
      }
      const i64 end = crow[cell + 1];
      if (lo < end && col[lo] < g0 + TILE) {
        const RowMask rm(p, static_cast<std::uint64_t>(p.cell_offset + cell));
        for (i64 k = lo; k < end && col[k] < g0 + TILE; ++k)
          if (!rm.hidden(p, col[k])) row[col[k] - g0] = values[k];
      }
    }
  } else {
    for (int e = tid - KC; e < KC * TILE; e += THREADS - KC) {
      const int kk = e / TILE, n = e % TILE;
      const i64 cell = c0 + kk, h = h0 + n;
      s.b[kk * LDT + n] = (cell < c1 && h < H) ? dout[cell * H + h] : 0.0f;
    }
  }
}

// Cells per grad_weight slice: enough slices that the grid fills a large GPU, a multiple of KC.
inline i64 cells_per_slice(i64 n_rows, i64 G, i64 H) {
  const i64 tiles = ((G + TILE - 1) / TILE) * ((H + TILE - 1) / TILE);
  i64 slices = (1024 + tiles - 1) / tiles;  // about 1024 blocks in all
  if (slices < 1) slices = 1;
  i64 per = (n_rows + slices - 1) / slices;
  per = ((per + KC - 1) / KC) * KC;
  return per < KC ? KC : per;
}

}  // namespace me_tc
}  // namespace celljepa
