// CPU (OpenMP) kernels of the edistance op.
//
// Two entry points, both streaming over tiles (never an N x N matrix):
//   * block_sums: for K blocks (group a of X, group b of Y) the float64 sum of pairwise distances;
//     a block with X == Y and a == b sums each unordered distinct pair once (upper triangle).
//   * loss: per condition k the sums [S_po, U_pp, U_oo] and, optionally, the analytic gradient of
//     L_k = 2 S_po / (n m) - 2 U_pp / (n (n-1)) - 2 U_oo / (m (m-1)) w.r.t. pred and obs rows.
// Squared distances come from the expanded form |x|^2 + |y|^2 - 2 x.y, floored at 0 (values below a few
// ulps of |x|^2 + |y|^2 count as 0, so coincident points have distance 0 and a zero subgradient). Dot
// products run through a 6 x (2 SIMD vectors) register microkernel over packed, k-major panels.
// Per-tile sums are float64; all indices are int64.
//
// Two kernels (argument `kernel`):
//   0 "tiles": the first kernel, kept as the reference of the second: raw rows of X against a packed
//     panel of Y, row norms of the raw data computed once. Its error grows with |x|^2 + |y|^2, so a
//     large common offset (or near-duplicate points far from the origin) loses every digit.
//   1 "centered" (the default): both tiles are packed, centred on the mean of the block's first group
//     (of the set's observed cells, for the loss), computed in float64, and the norms are those of the
//     packed (centred, rounded) values. Distances are translation invariant, so the result is the same
//     up to rounding, and the error now scales with the spread of the block, not its distance from the
//     origin (docs/kernels.md states the bound).
//
// The kernel body below this preamble is compiled twice (this file includes itself): once for the
// baseline ISA and once with AVX2 + FMA; the AVX2 copy is used when the CPU supports it.
#ifndef CELLJEPA_EDISTANCE_KERNEL_BODY

#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define CELLJEPA_X86 1
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/bindings.hpp"
#include "common/pointers.hpp"

namespace celljepa {
namespace edk {

using i64 = std::int64_t;

constexpr int MR = 6;     // microkernel rows
constexpr int FLOOR_ULPS = 8;  // squared distances below this many ulps of |x|^2 + |y|^2 count as 0
constexpr i64 TS = 256;   // tile edge (rows of X and columns of Y per work item)

typedef double D4 __attribute__((vector_size(32)));

template <class T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(32)));
  typedef std::int32_t itype __attribute__((vector_size(32)));
  static constexpr int L = 8;
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(32)));
  typedef std::int64_t itype __attribute__((vector_size(32)));
  static constexpr int L = 4;
};

// Work item of block_sums: block index, first row of the X tile, first column of the Y tile.
struct Item {
  i64 block, i0, j0;
};

}  // namespace edk
}  // namespace celljepa

#define CELLJEPA_EDISTANCE_KERNEL_BODY 1
#define CJ_ISA generic
#include __FILE__
#undef CJ_ISA

#ifdef CELLJEPA_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CJ_ISA avx2
#define CJ_AVX2 1
#include __FILE__
#undef CJ_AVX2
#undef CJ_ISA
#pragma GCC pop_options
#endif

namespace celljepa {
namespace edk {
namespace py = pybind11;

static bool use_avx2() {
#ifdef CELLJEPA_X86
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

template <class T>
static void row_norms(const T* x, i64 n, i64 d, T* out) {
#pragma omp parallel for schedule(static)
  for (i64 i = 0; i < n; ++i) {
    const T* r = x + i * d;
    double s = 0.0;
    for (i64 k = 0; k < d; ++k) s += double(r[k]) * double(r[k]);
    out[i] = T(s);
  }
}

// One thread's packing buffers for tiles of up to ts rows: the Y panel and its norms, and (with_a) the X panel.
template <class T>
struct Scratch {
  typedef typename Vec<T>::type V;
  std::vector<V> packv, normv, apackv, anormv;
  T *pack, *pnorm, *apack, *anorm;
  Scratch(i64 ts, i64 d, bool with_a) {
    constexpr int NR = 2 * Vec<T>::L;
    const i64 dd = std::max<i64>(d, 1);
    packv.resize(static_cast<size_t>(((ts + NR - 1) / NR) * NR * dd / Vec<T>::L + 1));
    normv.resize(static_cast<size_t>(ts / Vec<T>::L + 2));
    if (with_a) {
      apackv.resize(static_cast<size_t>(((ts + MR - 1) / MR) * MR * dd / Vec<T>::L + 1));
      anormv.resize(static_cast<size_t>(ts / Vec<T>::L + 2));
    }
    pack = reinterpret_cast<T*>(packv.data());
    pnorm = reinterpret_cast<T*>(normv.data());
    apack = reinterpret_cast<T*>(apackv.data());
    anorm = reinterpret_cast<T*>(anormv.data());
  }
};

// The tiles of every block (a <= b): ts x ts pieces, only the upper triangle of tiles within a group.
static std::vector<Item> work_items(const i64* xoff, const i64* yoff, const i64* blocks, i64 nblocks, bool same_xy,
                                    i64 ts) {
  std::vector<Item> items;
  for (i64 b = 0; b < nblocks; ++b) {
    const i64 ga = blocks[2 * b], gb = blocks[2 * b + 1];
    const i64 na = xoff[ga + 1] - xoff[ga], nb = yoff[gb + 1] - yoff[gb];
    const bool same = same_xy && ga == gb;
    for (i64 i0 = 0; i0 < na; i0 += ts)
      for (i64 j0 = same ? i0 : 0; j0 < nb; j0 += ts) items.push_back({b, i0, j0});
  }
  return items;
}

// What a work item covers: its groups, their first rows, its rows and columns, and whether it is a diagonal tile.
struct Tile {
  i64 ga, xs, ys, mi, nj;
  bool diag;
};

static Tile tile_of(const Item& w, const i64* blocks, const i64* xoff, const i64* yoff, bool same_xy, i64 ts) {
  const i64 ga = blocks[2 * w.block], gb = blocks[2 * w.block + 1];
  const i64 xs = xoff[ga], ys = yoff[gb];
  const i64 mi = std::min(ts, xoff[ga + 1] - xs - w.i0), nj = std::min(ts, yoff[gb + 1] - ys - w.j0);
  return {ga, xs, ys, mi, nj, same_xy && ga == gb && w.i0 == w.j0};
}

// out[b] = the sum of the tile sums of block b (in item order: deterministic for any thread count).
static void add_parts(const std::vector<Item>& items, const std::vector<double>& part, i64 nblocks, double* out) {
  std::fill(out, out + nblocks, 0.0);
  for (size_t it = 0; it < items.size(); ++it) out[items[it].block] += part[it];
}

// Mean of rows [s, s + n) of a (d columns), summed in float64 and rounded to T (any centre is exact: it is
// subtracted from both sides of every distance; the rounded mean keeps the centred values small).
template <class T>
static void row_mean(const T* a, i64 s, i64 n, i64 d, double* acc, T* c) {
  std::fill(acc, acc + d, 0.0);
  for (i64 i = s; i < s + n; ++i) {
    const T* r = a + i * d;
    for (i64 k = 0; k < d; ++k) acc[k] += double(r[k]);
  }
  for (i64 k = 0; k < d; ++k) c[k] = T(acc[k] / double(std::max<i64>(n, 1)));
}

template <class T>
static void block_sums_centered(const T* x, const T* y, i64 d, const i64* xoff, const i64* yoff, const i64* blocks,
                                i64 nblocks, bool same_xy, bool squared, double* out) {
  const i64 ts = TS;
  // float64 centre of every group a block uses as its first group
  std::vector<i64> used;
  for (i64 b = 0; b < nblocks; ++b) used.push_back(blocks[2 * b]);
  std::sort(used.begin(), used.end());
  used.erase(std::unique(used.begin(), used.end()), used.end());
  std::vector<i64> slot(used.empty() ? 0 : static_cast<size_t>(used.back() + 1), -1);
  for (size_t u = 0; u < used.size(); ++u) slot[static_cast<size_t>(used[u])] = static_cast<i64>(u);
  std::vector<T> centre(used.size() * static_cast<size_t>(d));
  const std::vector<Item> items = work_items(xoff, yoff, blocks, nblocks, same_xy, ts);
  const i64 nitems = static_cast<i64>(items.size());
  std::vector<double> part(static_cast<size_t>(nitems), 0.0);
  const bool avx2 = use_avx2();
#pragma omp parallel
  {
    Scratch<T> tile(ts, d, true);
    T *pack = tile.pack, *pnorm = tile.pnorm, *apack = tile.apack, *anorm = tile.anorm;
    {  // the centres first, in the same parallel region (one region less matters for small groups)
      std::vector<double> acc(static_cast<size_t>(d));
#pragma omp for schedule(dynamic, 8)
      for (i64 u = 0; u < static_cast<i64>(used.size()); ++u) {
        const i64 g = used[static_cast<size_t>(u)];
        row_mean(x, xoff[g], xoff[g + 1] - xoff[g], d, acc.data(), centre.data() + u * d);
      }
    }
    i64 packed_ga = -1, packed_i0 = -1;  // the X tile this thread packed last: items run over b within a,
    // and guided scheduling hands out runs of consecutive items, so most items reuse it
#pragma omp for schedule(guided)
    for (i64 it = 0; it < nitems; ++it) {
      const Item& w = items[static_cast<size_t>(it)];
      const Tile t = tile_of(w, blocks, xoff, yoff, same_xy, ts);
      const i64 ga = t.ga, xs = t.xs, ys = t.ys, mi = t.mi, nj = t.nj;
      const bool diag = t.diag;
      const T* c = centre.data() + slot[static_cast<size_t>(ga)] * d;
      const bool repack = ga != packed_ga || w.i0 != packed_i0;
      packed_ga = ga;
      packed_i0 = w.i0;
      const T* xt = x + (xs + w.i0) * d;
      const T* yt = y + (ys + w.j0) * d;
      double s;
#ifdef CELLJEPA_X86
      if (avx2) {
        if (repack) avx2::pack_rows<T>(xt, mi, d, c, apack, anorm);
        avx2::pack_panels<T>(yt, nullptr, nj, d, c, pack, pnorm);
        s = avx2::tile_sum<T, true>(apack, anorm, mi, pack, pnorm, nj, d, diag, squared);
      } else
#endif
      {
        if (repack) generic::pack_rows<T>(xt, mi, d, c, apack, anorm);
        generic::pack_panels<T>(yt, nullptr, nj, d, c, pack, pnorm);
        s = generic::tile_sum<T, true>(apack, anorm, mi, pack, pnorm, nj, d, diag, squared);
      }
      part[static_cast<size_t>(it)] = s;
    }
  }
  add_parts(items, part, nblocks, out);
  (void)avx2;
}

template <class T>
static void block_sums(const T* x, i64 nx, const T* y, i64 ny, i64 d, const i64* xoff, const i64* yoff,
                       const i64* blocks, i64 nblocks, bool same_xy, bool squared, int kernel, double* out) {
  if (kernel == 1) {
    block_sums_centered<T>(x, y, d, xoff, yoff, blocks, nblocks, same_xy, squared, out);
    return;
  }
  // Row norms, once, only for the groups the blocks touch (rows of other groups are never read).
  // (uninitialised storage: pages of unused groups are never touched)
  std::unique_ptr<T[]> xn(new T[static_cast<size_t>(nx)]), yn_store;
  auto norms_of_used = [&](const T* a, const i64* off, int side, T* out) {
    std::vector<i64> used;
    for (i64 b = 0; b < nblocks; ++b) {
      used.push_back(blocks[2 * b + side]);
      if (same_xy) used.push_back(blocks[2 * b + 1 - side]);
    }
    std::sort(used.begin(), used.end());
    used.erase(std::unique(used.begin(), used.end()), used.end());
    for (i64 g : used) row_norms(a + off[g] * d, off[g + 1] - off[g], d, out + off[g]);
  };
  norms_of_used(x, xoff, 0, xn.get());
  const T* yn = xn.get();
  if (!same_xy) {
    yn_store.reset(new T[static_cast<size_t>(ny)]);
    norms_of_used(y, yoff, 1, yn_store.get());
    yn = yn_store.get();
  }
  const std::vector<Item> items = work_items(xoff, yoff, blocks, nblocks, same_xy, TS);
  const i64 nitems = static_cast<i64>(items.size());
  std::vector<double> part(static_cast<size_t>(nitems), 0.0);
  const bool avx2 = use_avx2();
#pragma omp parallel
  {
    Scratch<T> tile(TS, d, false);
    T *pack = tile.pack, *pnorm = tile.pnorm;
#pragma omp for schedule(dynamic, 1)
    for (i64 it = 0; it < nitems; ++it) {
      const Item& w = items[static_cast<size_t>(it)];
      const Tile t = tile_of(w, blocks, xoff, yoff, same_xy, TS);
      const i64 xs = t.xs, ys = t.ys, mi = t.mi, nj = t.nj;
      const bool diag = t.diag;
      const T* xt = x + (xs + w.i0) * d;
      const T* xnt = xn.get() + xs + w.i0;
      const T* yt = y + (ys + w.j0) * d;
      const T* ynt = yn + ys + w.j0;
      double s;
#ifdef CELLJEPA_X86
      if (avx2) {
        avx2::pack_panels<T>(yt, ynt, nj, d, nullptr, pack, pnorm);
        s = avx2::tile_sum<T, false>(xt, xnt, mi, pack, pnorm, nj, d, diag, squared);
      } else
#endif
      {
        generic::pack_panels<T>(yt, ynt, nj, d, nullptr, pack, pnorm);
        s = generic::tile_sum<T, false>(xt, xnt, mi, pack, pnorm, nj, d, diag, squared);
      }
      part[static_cast<size_t>(it)] = s;
    }
  }
  add_parts(items, part, nblocks, out);
  (void)avx2;
}

template <class T>
static void set_loss(const T* p, i64 np_, const T* o, i64 no, i64 d, const i64* poff, const i64* ooff, i64 nsets,
                     bool squared, int kernel, double* sums, T* gp, T* go) {
  const bool centred = kernel == 1;
  std::vector<T> pn, on;
  if (!centred) {
    pn.resize(static_cast<size_t>(np_));
    on.resize(static_cast<size_t>(no));
    row_norms(p, np_, d, pn.data());
    row_norms(o, no, d, on.data());
  }
  const i64 ts = TS;
  const bool avx2 = use_avx2();
  constexpr int NR = 2 * Vec<T>::L;
#pragma omp parallel
  {
    typedef typename Vec<T>::type V;
    Scratch<T> tile(ts, d, centred);
    T *pack = tile.pack, *pnorm = tile.pnorm, *apack = tile.apack, *anorm = tile.anorm;
    std::vector<V> wv(static_cast<size_t>(ts * (ts + NR) / Vec<T>::L + 1));
    std::vector<T> centre(centred ? static_cast<size_t>(d) : 0);
    std::vector<double> acc(centred ? static_cast<size_t>(d) : 0);
    T* wbuf = reinterpret_cast<T*>(wv.data());
#pragma omp for schedule(dynamic, 1)
    for (i64 k = 0; k < nsets; ++k) {
      const i64 ps = poff[k], n = poff[k + 1] - ps;
      const i64 os = ooff[k], m = ooff[k + 1] - os;
      const double cpo = 2.0 / (double(n) * double(m));
      const double cpp = n > 1 ? -2.0 / (double(n) * double(n - 1)) : 0.0;
      const double coo = m > 1 ? -2.0 / (double(m) * double(m - 1)) : 0.0;
      if (centred) row_mean(o, os, m, d, acc.data(), centre.data());  // every block of the set is centred on its observed mean
      const T* pnk = centred ? nullptr : pn.data() + ps;
      const T* onk = centred ? nullptr : on.data() + os;
      // (X, Y, same, coefficient, grad of X rows, grad of Y rows)
      struct Blk {
        const T *x, *xn;
        i64 nx;
        const T *y, *yn;
        i64 ny;
        bool same;
        double c;
        T *gx, *gy;
      };
      const Blk blks[3] = {
          {p + ps * d, pnk, n, o + os * d, onk, m, false, cpo, gp ? gp + ps * d : nullptr,
           go ? go + os * d : nullptr},
          {p + ps * d, pnk, n, p + ps * d, pnk, n, true, cpp, gp ? gp + ps * d : nullptr,
           gp ? gp + ps * d : nullptr},
          {o + os * d, onk, m, o + os * d, onk, m, true, coo, go ? go + os * d : nullptr,
           go ? go + os * d : nullptr},
      };
      for (int bi = 0; bi < 3; ++bi) {
        const Blk& B = blks[bi];
        double total = 0.0;
        for (i64 i0 = 0; i0 < B.nx; i0 += ts) {
          for (i64 j0 = B.same ? i0 : 0; j0 < B.ny; j0 += ts) {
            const i64 mi = std::min(ts, B.nx - i0), nj = std::min(ts, B.ny - j0);
            const bool diag = B.same && i0 == j0;
            const T* xt = B.x + i0 * d;
            const T* yt = B.y + j0 * d;
            T* gxt = B.gx ? B.gx + i0 * d : nullptr;
            T* gyt = B.gy ? B.gy + j0 * d : nullptr;
            const bool grads = (gxt || gyt) && B.c != 0.0;
            T* const w = grads ? wbuf : nullptr;
#ifdef CELLJEPA_X86
            if (avx2) {
              if (centred) {
                avx2::pack_rows<T>(xt, mi, d, centre.data(), apack, anorm);
                avx2::pack_panels<T>(yt, nullptr, nj, d, centre.data(), pack, pnorm);
                total += avx2::tile_loss<T, true>(apack, anorm, xt, mi, yt, pack, pnorm, nj, d, diag, squared, w,
                                                  T(B.c), gxt, gyt);
              } else {
                avx2::pack_panels<T>(yt, B.yn + j0, nj, d, nullptr, pack, pnorm);
                total += avx2::tile_loss<T, false>(xt, B.xn + i0, xt, mi, yt, pack, pnorm, nj, d, diag, squared, w,
                                                   T(B.c), gxt, gyt);
              }
            } else
#endif
            {
              if (centred) {
                generic::pack_rows<T>(xt, mi, d, centre.data(), apack, anorm);
                generic::pack_panels<T>(yt, nullptr, nj, d, centre.data(), pack, pnorm);
                total += generic::tile_loss<T, true>(apack, anorm, xt, mi, yt, pack, pnorm, nj, d, diag, squared,
                                                     w, T(B.c), gxt, gyt);
              } else {
                generic::pack_panels<T>(yt, B.yn + j0, nj, d, nullptr, pack, pnorm);
                total += generic::tile_loss<T, false>(xt, B.xn + i0, xt, mi, yt, pack, pnorm, nj, d, diag, squared,
                                                      w, T(B.c), gxt, gyt);
              }
            }
          }
        }
        sums[3 * k + bi] = total;
      }
    }
  }
  (void)avx2;
}

}  // namespace edk

void bind_edistance_cpu(pybind11::module_& m) {
  namespace py = pybind11;
  using edk::i64;
  m.def(
      "edistance_block_sums",
      [](std::uintptr_t x, i64 nx, std::uintptr_t y, i64 ny, i64 d, std::uintptr_t xoff, std::uintptr_t yoff,
         std::uintptr_t blocks, i64 nblocks, bool same_xy, bool squared, bool is_double, std::uintptr_t out,
         int kernel) {
        if (kernel != 0 && kernel != 1) throw std::invalid_argument("kernel must be 0 (tiles) or 1 (centered)");
        py::gil_scoped_release nogil;
        if (is_double)
          edk::block_sums<double>(cptr<double>(x), nx, cptr<double>(y), ny, d,
                                  cptr<i64>(xoff), cptr<i64>(yoff), cptr<i64>(blocks),
                                  nblocks, same_xy, squared, kernel, mptr<double>(out));
        else
          edk::block_sums<float>(cptr<float>(x), nx, cptr<float>(y), ny, d,
                                 cptr<i64>(xoff), cptr<i64>(yoff), cptr<i64>(blocks),
                                 nblocks, same_xy, squared, kernel, mptr<double>(out));
      },
      py::arg("x"), py::arg("nx"), py::arg("y"), py::arg("ny"), py::arg("d"), py::arg("x_offsets"),
      py::arg("y_offsets"), py::arg("blocks"), py::arg("n_blocks"), py::arg("same_xy"), py::arg("squared"),
      py::arg("is_double"), py::arg("out"), py::arg("kernel") = 1,
      "Float64 distance sums of K blocks (group a of X, group b of Y; int64 (K, 2) 'blocks'). Raw pointers "
      "to contiguous row-major data; X == Y blocks with a == b sum each unordered distinct pair once. "
      "kernel: 1 centred tiles (default), 0 the first kernel (raw rows; the reference of the first).");
  m.def(
      "edistance_set_loss",
      [](std::uintptr_t p, i64 np_, std::uintptr_t o, i64 no, i64 d, std::uintptr_t poff, std::uintptr_t ooff,
         i64 nsets, bool squared, bool is_double, std::uintptr_t sums, std::uintptr_t gp, std::uintptr_t go,
         int kernel) {
        if (kernel != 0 && kernel != 1) throw std::invalid_argument("kernel must be 0 (tiles) or 1 (centered)");
        py::gil_scoped_release nogil;
        if (is_double)
          edk::set_loss<double>(cptr<double>(p), np_, cptr<double>(o), no, d,
                                cptr<i64>(poff), cptr<i64>(ooff), nsets, squared, kernel,
                                mptr<double>(sums), mptr<double>(gp), mptr<double>(go));
        else
          edk::set_loss<float>(cptr<float>(p), np_, cptr<float>(o), no, d,
                               cptr<i64>(poff), cptr<i64>(ooff), nsets, squared, kernel,
                               mptr<double>(sums), mptr<float>(gp), mptr<float>(go));
      },
      py::arg("pred"), py::arg("n_pred"), py::arg("obs"), py::arg("n_obs"), py::arg("d"), py::arg("pred_offsets"),
      py::arg("obs_offsets"), py::arg("n_sets"), py::arg("squared"), py::arg("is_double"), py::arg("sums"),
      py::arg("grad_pred"), py::arg("grad_obs"), py::arg("kernel") = 1,
      "Per set k: sums[k] = [S_po, U_pp, U_oo] (float64) and, where grad pointers are non-zero (zero-filled by "
      "the caller), the gradient of L_k = 2 S_po/(nm) - 2 U_pp/(n(n-1)) - 2 U_oo/(m(m-1)) added into them.");
  m.def("edistance_isa", []() { return edk::use_avx2() ? std::string("avx2+fma") : std::string("baseline"); },
        "The instruction set the E-distance microkernels use on this CPU.");
}

}  // namespace celljepa

#else  // ------------------------------------------------------------ kernel body (compiled per ISA)

namespace celljepa {
namespace edk {
namespace CJ_ISA {

template <class T>
static inline __attribute__((always_inline)) typename Vec<T>::type vload(const T* p) {
  typename Vec<T>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <class T, bool PA = false>
static inline __attribute__((always_inline)) typename Vec<T>::type vsqrt(typename Vec<T>::type v) {
#ifdef CJ_AVX2
  if constexpr (sizeof(T) == 4 && PA) {
    // the centred kernel: x * rsqrt(x + FLT_MIN) with one Newton step; x = 0 gives 0 without a mask (the
    // added FLT_MIN changes no input above ~1e-31 by even one ulp)
    const __m256 x = (__m256)v;
    const __m256 xt = _mm256_add_ps(x, _mm256_set1_ps(std::numeric_limits<float>::min()));
    const __m256 r0 = _mm256_rsqrt_ps(xt);
    const __m256 y = _mm256_mul_ps(x, r0);
    // x * r with r = r0 (1.5 - 0.5 xt r0^2): y (1.5 - 0.5 (xt r0) r0)
    const __m256 h = _mm256_mul_ps(_mm256_mul_ps(xt, _mm256_set1_ps(0.5f)), r0);
    return (typename Vec<T>::type)_mm256_mul_ps(y, _mm256_fnmadd_ps(h, r0, _mm256_set1_ps(1.5f)));
  } else if constexpr (sizeof(T) == 4) {
    // x * rsqrt(x) with one Newton step (~23 bits, a few ulps): the exact vsqrtps would cost a third of the
    // tile time at d = 50. Inputs below FLT_MIN (never produced by the floor unless |x|^2 + |y|^2 is
    // itself tiny) map to 0.
    const __m256 x = (__m256)v;
    __m256 r = _mm256_rsqrt_ps(x);
    const __m256 hx = _mm256_mul_ps(x, _mm256_set1_ps(0.5f));
    r = _mm256_mul_ps(r, _mm256_fnmadd_ps(_mm256_mul_ps(hx, r), r, _mm256_set1_ps(1.5f)));
    const __m256 ok = _mm256_cmp_ps(x, _mm256_set1_ps(std::numeric_limits<float>::min()), _CMP_GE_OQ);
    return (typename Vec<T>::type)_mm256_and_ps(_mm256_mul_ps(x, r), ok);
  } else {
    return (typename Vec<T>::type)_mm256_sqrt_pd((__m256d)v);
  }
#else
  for (int l = 0; l < Vec<T>::L; ++l) v[l] = std::sqrt(v[l]);
  return v;
#endif
}

template <class T>
static inline __attribute__((always_inline)) D4 to_d4(typename Vec<T>::type v) {
  if constexpr (sizeof(T) == 4) {
    D4 lo = {double(v[0]), double(v[1]), double(v[2]), double(v[3])};
    D4 hi = {double(v[4]), double(v[5]), double(v[6]), double(v[7])};
    return lo + hi;
  } else {
    return v;
  }
}

// Pack n rows of A (row-major, d columns) into k-major panels of W rows, zero padded. With a centre c
// (float64, d entries) the packed values are the rounded a - c and their norms are computed from them
// (float64 sums); without one, the values are copied and the norms taken from an.
template <class T, int W>
static void pack_k_major(const T* a, const T* an, i64 n, i64 d, const T* c, T* pack, T* norm) {
  const i64 np = (n + W - 1) / W;
  for (i64 pi = 0; pi < np; ++pi) {
    T* dst = pack + pi * d * W;
    const T* src[W];
    const i64 rows = std::min<i64>(W, n - pi * W);
    for (int r = 0; r < W; ++r) {
      const i64 j = pi * W + r;
      src[r] = a + std::min<i64>(j, n - 1) * d;
      if (j >= n) {
        norm[j] = T(0);
      } else if (c) {
        // a SIMD reduction over the same rounded values the panel holds (a scalar float64 chain would cost
        // more than the tile's dot products at large d)
        double s = 0.0;
        const T* row = src[r];
#pragma omp simd reduction(+ : s)
        for (i64 k = 0; k < d; ++k) {
          const double v = double(row[k] - c[k]);
          s += v * v;
        }
        norm[j] = T(s * (1.0 - FLOOR_ULPS * double(std::numeric_limits<T>::epsilon())));  // see sqdist
      } else {
        norm[j] = an[j];
      }
    }
    // k outer, rows inner: sequential writes and W sequential read streams (a row-by-row scatter with stride W
    // touches a new cache line per element)
    for (i64 k = 0; k < d; ++k) {
      T* out = dst + k * W;
      const T ck = c ? c[k] : T(0);
      for (int r = 0; r < W; ++r) out[r] = r < rows ? src[r][k] - ck : T(0);
    }
  }
}

// Y tile: panels of NR columns (the microkernel's two SIMD vectors).
template <class T>
static void pack_panels(const T* y, const T* yn, i64 nj, i64 d, const T* c, T* pack, T* pnorm) {
  pack_k_major<T, 2 * Vec<T>::L>(y, yn, nj, d, c, pack, pnorm);
}

// X tile of the centred kernel: panels of MR rows.
template <class T>
static void pack_rows(const T* x, i64 mi, i64 d, const T* c, T* apack, T* anorm) {
  pack_k_major<T, MR>(x, nullptr, mi, d, c, apack, anorm);
}

// acc[r][h] = dot(row r of A, columns of the panel half h), over d. A is either MR row pointers (PA false)
// or one packed k-major panel of MR rows (PA true: ap[k * MR + r]).
template <class T, bool PA>
static inline __attribute__((always_inline)) void micro(const T* const* ar, const T* ap, const T* bp, i64 d,
                                                         typename Vec<T>::type (&acc)[MR][2]) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::L;
  V a0 = {}, a1 = {}, a2 = {}, a3 = {}, a4 = {}, a5 = {}, a6 = {}, a7 = {}, a8 = {}, a9 = {}, a10 = {}, a11 = {};
  const T *r0 = ar[0], *r1 = ar[1], *r2 = ar[2], *r3 = ar[3], *r4 = ar[4], *r5 = ar[5];
  for (i64 k = 0; k < d; ++k) {
    const V b0 = vload<T>(bp + k * 2 * L), b1 = vload<T>(bp + k * 2 * L + L);
    const T* a = ap + k * MR;
    T s;
    s = PA ? a[0] : r0[k]; a0 += s * b0; a1 += s * b1;
    s = PA ? a[1] : r1[k]; a2 += s * b0; a3 += s * b1;
    s = PA ? a[2] : r2[k]; a4 += s * b0; a5 += s * b1;
    s = PA ? a[3] : r3[k]; a6 += s * b0; a7 += s * b1;
    s = PA ? a[4] : r4[k]; a8 += s * b0; a9 += s * b1;
    s = PA ? a[5] : r5[k]; a10 += s * b0; a11 += s * b1;
  }
  acc[0][0] = a0; acc[0][1] = a1; acc[1][0] = a2; acc[1][1] = a3; acc[2][0] = a4; acc[2][1] = a5;
  acc[3][0] = a6; acc[3][1] = a7; acc[4][0] = a8; acc[4][1] = a9; acc[5][0] = a10; acc[5][1] = a11;
}

// Squared distance from the expanded form, floored: values below 8 ulps of |x|^2 + |y|^2 are 0. In the
// centred kernel (PA) the norms come pre-scaled by (1 - 8 eps) (pack_k_major), so max(nn' - 2 dot, 0) is the
// same floor in two operations instead of four: it subtracts 8 eps (|x|^2 + |y|^2) from every squared distance,
// inside the rounding error of the expanded form.
template <class T, bool PA = false>
static inline __attribute__((always_inline)) typename Vec<T>::type sqdist(T an, typename Vec<T>::type bn,
                                                                          typename Vec<T>::type dot) {
  typedef typename Vec<T>::type V;
  typedef typename Vec<T>::itype IV;
  const V nn = an + bn;
  const V d2 = nn - T(2) * dot;
  if constexpr (PA) {
#ifdef CJ_AVX2
    if constexpr (sizeof(T) == 4)
      return (V)_mm256_max_ps((__m256)d2, _mm256_setzero_ps());
    else
      return (V)_mm256_max_pd((__m256d)d2, _mm256_setzero_pd());
#else
    const V zero = d2 * T(0);
    return (V)(d2 > zero ? (IV)d2 : (IV)zero);
#endif
  } else {
    const T tol = T(FLOOR_ULPS) * std::numeric_limits<T>::epsilon();
    const IV keep = d2 > tol * nn;
    return (V)((IV)d2 & keep);
  }
}

// Column-validity mask of one panel half: lanes with local column index j0 + l < nj (and > row when diag).
template <class T>
static inline __attribute__((always_inline)) typename Vec<T>::itype colmask(i64 j0, i64 nj, bool diag, i64 row) {
  typedef typename Vec<T>::itype IV;
  IV m;
  for (int l = 0; l < Vec<T>::L; ++l) {
    const i64 j = j0 + l;
    m[l] = (j < nj && (!diag || j > row)) ? -1 : 0;
  }
  return m;
}

// A's MR rows starting at row i: row pointers and norms (raw rows), or the packed panel (PA).
template <class T, bool PA>
static inline __attribute__((always_inline)) const T* rows_of(const T* x, const T* xn, i64 i, i64 rv, i64 d,
                                                               const T* (&ar)[MR], T (&an)[MR]) {
  for (int r = 0; r < MR; ++r) {
    const i64 idx = i + std::min<i64>(r, rv - 1);
    ar[r] = PA ? x : x + idx * d;
    an[r] = xn[idx];
  }
  return PA ? x + (i / MR) * d * MR : x;
}

// Sum of distances between mi rows of X (norms xn; packed in MR-row panels when PA) and nj packed columns;
// diag: only column > row.
template <class T, bool PA, bool SQ>
static double tile_sum_impl(const T* x, const T* xn, i64 mi, const T* pack, const T* pnorm, i64 nj, i64 d,
                            bool diag) {
  typedef typename Vec<T>::type V;
  typedef typename Vec<T>::itype IV;
  constexpr int L = Vec<T>::L;
  constexpr int NR = 2 * L;
  D4 total = {};
  for (i64 i = 0; i < mi; i += MR) {
    const i64 rv = std::min<i64>(MR, mi - i);
    const T* ar[MR];
    T an[MR];
    const T* ap = rows_of<T, PA>(x, xn, i, rv, d, ar, an);
    for (i64 j = 0; j < nj; j += NR) {
      if (diag && j + NR - 1 <= i) continue;  // every column <= every row: lower triangle
      V acc[MR][2];
      micro<T, PA>(ar, ap, pack + j * d, d, acc);
      const V bn0 = vload<T>(pnorm + j), bn1 = vload<T>(pnorm + j + L);
      const bool full = rv == MR && j + NR <= nj && !(diag && j < i + MR);
      V s = {};
      if (full) {  // (a branch of its own, unrolled: the accumulators stay in registers)
#pragma GCC unroll 6
        for (int r = 0; r < MR; ++r) {
          V d0 = sqdist<T, PA>(an[r], bn0, acc[r][0]);
          V d1 = sqdist<T, PA>(an[r], bn1, acc[r][1]);
          if constexpr (!SQ) {
            d0 = vsqrt<T, PA>(d0);
            d1 = vsqrt<T, PA>(d1);
          }
          s += d0 + d1;
        }
      } else {
        for (int r = 0; r < rv; ++r) {
          V d0 = sqdist<T, PA>(an[r], bn0, acc[r][0]);
          V d1 = sqdist<T, PA>(an[r], bn1, acc[r][1]);
          if constexpr (!SQ) {
            d0 = vsqrt<T, PA>(d0);
            d1 = vsqrt<T, PA>(d1);
          }
          d0 = (V)((IV)d0 & colmask<T>(j, nj, diag, i + r));
          d1 = (V)((IV)d1 & colmask<T>(j + L, nj, diag, i + r));
          s += d0 + d1;
        }
      }
      total += to_d4<T>(s);
    }
  }
  return (total[0] + total[1]) + (total[2] + total[3]);
}

template <class T, bool PA>
static double tile_sum(const T* x, const T* xn, i64 mi, const T* pack, const T* pnorm, i64 nj, i64 d, bool diag,
                       bool squared) {
  return squared ? tile_sum_impl<T, PA, true>(x, xn, mi, pack, pnorm, nj, d, diag)
                 : tile_sum_impl<T, PA, false>(x, xn, mi, pack, pnorm, nj, d, diag);
}

// As tile_sum, and with wbuf the gradient: gx_i += c sum_j w_ij (x_i - y_j), gy_j -= c sum_i w_ij (x_i - y_j)
// where w = 1/dist (0 at dist 0) or 2 for squared distances. gx / gy may alias (within-set tiles).
// x / xn as in tile_sum; xraw: the raw rows of X (for the gradient).
template <class T, bool PA>
static double tile_loss(const T* x, const T* xn, const T* xraw, i64 mi, const T* y, const T* pack, const T* pnorm,
                        i64 nj, i64 d, bool diag, bool squared, T* wbuf, T c, T* gx, T* gy) {
  typedef typename Vec<T>::type V;
  typedef typename Vec<T>::itype IV;
  constexpr int L = Vec<T>::L;
  constexpr int NR = 2 * L;
  const i64 ldw = ((nj + NR - 1) / NR) * NR;
  if (wbuf) std::fill(wbuf, wbuf + mi * ldw, T(0));
  D4 total = {};
  for (i64 i = 0; i < mi; i += MR) {
    const i64 rv = std::min<i64>(MR, mi - i);
    const T* ar[MR];
    T an[MR];
    const T* ap = rows_of<T, PA>(x, xn, i, rv, d, ar, an);
    for (i64 j = 0; j < nj; j += NR) {
      if (diag && j + NR - 1 <= i) continue;
      V acc[MR][2];
      micro<T, PA>(ar, ap, pack + j * d, d, acc);
      const V bn0 = vload<T>(pnorm + j), bn1 = vload<T>(pnorm + j + L);
      V s = {};
      for (int r = 0; r < rv; ++r) {
        const IV m0 = colmask<T>(j, nj, diag, i + r), m1 = colmask<T>(j + L, nj, diag, i + r);
        V q0 = (V)((IV)sqdist<T, PA>(an[r], bn0, acc[r][0]) & m0);
        V q1 = (V)((IV)sqdist<T, PA>(an[r], bn1, acc[r][1]) & m1);
        V w0, w1;
        if (squared) {
          w0 = (V)((IV)(q0 * T(0) + T(2)) & m0);
          w1 = (V)((IV)(q1 * T(0) + T(2)) & m1);
        } else {
          q0 = vsqrt<T, PA>(q0);
          q1 = vsqrt<T, PA>(q1);
          const IV nz0 = q0 > T(0), nz1 = q1 > T(0);
          const V one = q0 * T(0) + T(1);
          w0 = (V)((IV)(one / (V)((IV)q0 | ~nz0 & (IV)one)) & nz0);
          w1 = (V)((IV)(one / (V)((IV)q1 | ~nz1 & (IV)one)) & nz1);
        }
        s += q0 + q1;
        if (wbuf) {
          std::memcpy(wbuf + (i + r) * ldw + j, &w0, sizeof(V));
          std::memcpy(wbuf + (i + r) * ldw + j + L, &w1, sizeof(V));
        }
      }
      total += to_d4<T>(s);
    }
  }
  if (wbuf) {
    for (i64 i = 0; i < mi; ++i) {
      const T* xi = xraw + i * d;
      const T* wi = wbuf + i * ldw;
      for (i64 j = 0; j < nj; ++j) {
        const T w = wi[j];
        if (w == T(0)) continue;
        const T cw = c * w;
        const T* yj = y + j * d;
        T* gxi = gx ? gx + i * d : nullptr;
        T* gyj = gy ? gy + j * d : nullptr;
        if (gxi && gyj) {
#pragma omp simd
          for (i64 k = 0; k < d; ++k) {
            const T diff = cw * (xi[k] - yj[k]);
            gxi[k] += diff;
            gyj[k] -= diff;
          }
        } else if (gxi) {
#pragma omp simd
          for (i64 k = 0; k < d; ++k) gxi[k] += cw * (xi[k] - yj[k]);
        } else {
#pragma omp simd
          for (i64 k = 0; k < d; ++k) gyj[k] -= cw * (xi[k] - yj[k]);
        }
      }
    }
  }
  return (total[0] + total[1]) + (total[2] + total[3]);
}

}  // namespace CJ_ISA
}  // namespace edk
}  // namespace celljepa

#endif
