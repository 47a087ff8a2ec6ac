// CPU (OpenMP) kernels of the masked_encode op: h = (x ⊙ keep) · W + b for a CSR batch x.
//
// The keep mask is never materialised: each kernel recomputes it per nonzero from
// (seed, cell_offset + row, unit) with the counter-based RNG of mask_rng.hpp, so CPU, CUDA and the
// Python helper agree bit for bit. All index arithmetic is int64.
//
// Parallelisation (deterministic: results do not depend on the number of threads):
//   forward, grad_values: over rows (each row writes only its own output).
//   grad_weight: the kept nonzeros are transposed to CSC by a counting sort (entries of a gene stay in
//                row order), then over genes: each dW row is written by one thread, summed in row order.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common/bindings.hpp"
#include "common/mask_params.hpp"
#include "common/pointers.hpp"
#include "masked_encode/mask_rng.hpp"

namespace py = pybind11;

namespace celljepa {
namespace {

using mask_rng::MaskParams;
using mask_rng::RowMask;

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CJ_CLONES __attribute__((target_clones("avx2", "default")))
#define CJ_INLINE inline __attribute__((always_inline))
#else
#define CJ_CLONES
#define CJ_INLINE inline
#endif

template <typename T>
CJ_INLINE void axpy(T* __restrict y, const T* __restrict x, T a, std::int64_t n) {
#pragma omp simd
  for (std::int64_t h = 0; h < n; ++h) y[h] += a * x[h];
}

template <typename T>
CJ_INLINE T dot(const T* __restrict x, const T* __restrict y, std::int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (std::int64_t h = 0; h < n; ++h) s += x[h] * y[h];
  return s;
}

// Compact the kept nonzeros of row i into (kc, kv) without data-dependent branches; returns their count.
template <typename T>
CJ_INLINE std::int64_t compact_row(const std::int64_t* crow, const std::int64_t* col, const T* val, std::int64_t i,
                                   const MaskParams& p, std::int64_t* __restrict kc, T* __restrict kv) {
  const RowMask rm(p, static_cast<std::uint64_t>(p.cell_offset + i));
  const std::int64_t k0 = crow[i], k1 = crow[i + 1];
  std::int64_t n = 0;
  if (rm.all_kept) {
    for (std::int64_t k = k0; k < k1; ++k) {
      kc[n] = col[k];
      kv[n++] = val[k];
    }
    return n;
  }
  for (std::int64_t k = k0; k < k1; ++k) {
    const std::int64_t g = col[k];
    kc[n] = g;
    kv[n] = val[k];
    n += rm.hidden(p, g) ? 0 : 1;
  }
  return n;
}

// ------------------------------------------------------------------ forward (one row)
// o = bias + Σ kv[j] W[kc[j]], four nonzeros per pass so the output row is loaded/stored once per four.
template <typename T>
CJ_INLINE void forward_row_impl(const std::int64_t* __restrict kc, const T* __restrict kv, std::int64_t n,
                                const T* __restrict W, std::int64_t H, const T* bias, T* __restrict o) {
  if (bias) {
    std::copy(bias, bias + H, o);
  } else {
    std::fill(o, o + H, T(0));
  }
  std::int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const T* w0 = W + kc[j] * H;
    const T* w1 = W + kc[j + 1] * H;
    const T* w2 = W + kc[j + 2] * H;
    const T* w3 = W + kc[j + 3] * H;
    const T a0 = kv[j], a1 = kv[j + 1], a2 = kv[j + 2], a3 = kv[j + 3];
#pragma omp simd
    for (std::int64_t h = 0; h < H; ++h) o[h] += a0 * w0[h] + a1 * w1[h] + a2 * w2[h] + a3 * w3[h];
  }
  for (; j < n; ++j) axpy(o, W + kc[j] * H, kv[j], H);
}

CJ_CLONES void forward_row(const std::int64_t* kc, const float* kv, std::int64_t n, const float* W, std::int64_t H,
                           const float* bias, float* o) {
  forward_row_impl(kc, kv, n, W, H, bias, o);
}
CJ_CLONES void forward_row(const std::int64_t* kc, const double* kv, std::int64_t n, const double* W, std::int64_t H,
                           const double* bias, double* o) {
  forward_row_impl(kc, kv, n, W, H, bias, o);
}

template <typename T>
void forward(const std::int64_t* crow, const std::int64_t* col, const T* val, std::int64_t B, const T* W,
             std::int64_t H, const T* bias, T* out, const MaskParams& p) {
#pragma omp parallel
  {
    std::vector<std::int64_t> kc;
    std::vector<T> kv;
#pragma omp for schedule(dynamic, 8)
    for (std::int64_t i = 0; i < B; ++i) {
      const auto len = static_cast<std::size_t>(crow[i + 1] - crow[i]);
      if (kc.size() < len) {
        kc.resize(len);
        kv.resize(len);
      }
      const std::int64_t n = compact_row(crow, col, val, i, p, kc.data(), kv.data());
      forward_row(kc.data(), kv.data(), n, W, H, bias, out + i * H);
    }
  }
}

// ------------------------------------------------------------------ grad_weight
// Pass 1 (parallel over rows): the kept nonzeros of row i are compacted to the front of its CSR
// range (kc/kv[crow[i] - base ...], count kn[i]). Pass 2 (serial, O(nnz)): a counting sort by gene
// transposes them to CSC with the entries of each gene in row order. Pass 3 (parallel over genes):
// dW[g, :] = Σ kv · dout[row, :], accumulated in row order, so dW is bit-identical for any thread count.
template <typename T>
void grad_weight(const std::int64_t* crow, const std::int64_t* col, const T* val, std::int64_t B, const T* dh,
                 std::int64_t H, std::int64_t G, T* dW, const MaskParams& p) {
  const std::int64_t base = crow[0];
  const auto nnz = static_cast<std::size_t>(crow[B] - base);
  std::vector<std::int64_t> kc(nnz), kn(static_cast<std::size_t>(B));
  std::vector<T> kv(nnz);
#pragma omp parallel for schedule(dynamic, 16)
  for (std::int64_t i = 0; i < B; ++i) {
    const std::int64_t s = crow[i] - base;
    kn[i] = compact_row(crow, col, val, i, p, kc.data() + s, kv.data() + s);
  }
  std::vector<std::int64_t> gptr(static_cast<std::size_t>(G) + 1, 0);
  for (std::int64_t i = 0; i < B; ++i) {
    const std::int64_t s = crow[i] - base;
    for (std::int64_t j = s; j < s + kn[i]; ++j) ++gptr[kc[j] + 1];
  }
  for (std::int64_t g = 0; g < G; ++g) gptr[g + 1] += gptr[g];
  const auto kept = static_cast<std::size_t>(gptr[G]);
  std::vector<std::int64_t> trow(kept), fill(gptr.begin(), gptr.end() - 1);
  std::vector<T> tval(kept);
  for (std::int64_t i = 0; i < B; ++i) {
    const std::int64_t s = crow[i] - base;
    for (std::int64_t j = s; j < s + kn[i]; ++j) {
      const std::int64_t pos = fill[kc[j]]++;
      trow[pos] = i;
      tval[pos] = kv[j];
    }
  }
#pragma omp parallel for schedule(dynamic, 16)
  for (std::int64_t g = 0; g < G; ++g) {
    const std::int64_t s = gptr[g];
    forward_row(trow.data() + s, tval.data() + s, gptr[g + 1] - s, dh, H, static_cast<const T*>(nullptr), dW + g * H);
  }
}

// ------------------------------------------------------------------ grad_values
template <typename T>
CJ_INLINE void grad_values_row_impl(const std::int64_t* crow, const std::int64_t* col, std::int64_t i, const T* W,
                                    std::int64_t H, const T* dh, T* dv, const MaskParams& p) {
  const RowMask rm(p, static_cast<std::uint64_t>(p.cell_offset + i));
  const T* d = dh + i * H;
  for (std::int64_t k = crow[i]; k < crow[i + 1]; ++k) {
    const std::int64_t g = col[k];
    dv[k] = rm.hidden(p, g) ? T(0) : dot(d, W + g * H, H);
  }
}
CJ_CLONES void grad_values_row(const std::int64_t* crow, const std::int64_t* col, std::int64_t i, const float* W,
                               std::int64_t H, const float* dh, float* dv, const MaskParams& p) {
  grad_values_row_impl(crow, col, i, W, H, dh, dv, p);
}
CJ_CLONES void grad_values_row(const std::int64_t* crow, const std::int64_t* col, std::int64_t i, const double* W,
                               std::int64_t H, const double* dh, double* dv, const MaskParams& p) {
  grad_values_row_impl(crow, col, i, W, H, dh, dv, p);
}

template <typename T>
void grad_values(const std::int64_t* crow, const std::int64_t* col, std::int64_t B, const T* W, std::int64_t H,
                 const T* dh, T* dv, const MaskParams& p) {
#pragma omp parallel for schedule(dynamic, 8)
  for (std::int64_t i = 0; i < B; ++i) grad_values_row(crow, col, i, W, H, dh, dv, p);
}

// ------------------------------------------------------------------ mask helpers
void mask_bits(const std::int64_t* cells, std::int64_t n_cells, std::int64_t G, std::uint8_t* out,
               const MaskParams& p) {
#pragma omp parallel for schedule(static)
  for (std::int64_t c = 0; c < n_cells; ++c) {
    const RowMask rm(p, static_cast<std::uint64_t>(cells[c]));
    std::uint8_t* o = out + c * G;
    for (std::int64_t g = 0; g < G; ++g) o[g] = rm.hidden(p, g) ? 1 : 0;
  }
}

// CSR structure check: 0 ok, 1 crow[0] != 0 or crow[B] != nnz, 2 crow decreasing, 3 column out of
// range, 4 columns not strictly increasing within a row (unsorted or duplicate).
int check_csr(const std::int64_t* crow, const std::int64_t* col, std::int64_t B, std::int64_t nnz, std::int64_t G) {
  if (crow[0] != 0 || crow[B] != nnz) return 1;
  for (std::int64_t i = 0; i < B; ++i)
    if (crow[i + 1] < crow[i]) return 2;
  int bad = 0;
#pragma omp parallel for schedule(static) reduction(max : bad)
  for (std::int64_t i = 0; i < B; ++i) {
    std::int64_t prev = -1;
    for (std::int64_t k = crow[i]; k < crow[i + 1]; ++k) {
      const std::int64_t g = col[k];
      if (g < 0 || g >= G) bad = std::max(bad, 3);
      else if (g <= prev) bad = std::max(bad, 4);
      prev = g;
    }
  }
  return bad;
}


}  // namespace

void bind_masked_encode_cpu(py::module_& m) {
  const char* mask_doc =
      " Mask arguments: kind (0 none, 1 random, 2 block, 3 module), seed (uint64), cell_offset (int64), "
      "thr = ceil(ratio * 2^53), block_size, gene_to_module (int32 pointer or 0).";
  m.def(
      "masked_encode_forward",
      [](std::uintptr_t crow, std::uintptr_t col, std::uintptr_t values, std::int64_t n_rows, std::uintptr_t weight,
         std::int64_t hidden, std::uintptr_t bias, std::uintptr_t out, bool is_double, int kind, std::uint64_t seed,
         std::int64_t cell_offset, std::uint64_t thr, std::int64_t block_size, std::uintptr_t gene_to_module) {
        const auto p = make_mask_params(kind, seed, cell_offset, thr, block_size, gene_to_module);
        py::gil_scoped_release nogil;
        if (is_double)
          forward(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), cptr<double>(values), n_rows, cptr<double>(weight),
                  hidden, cptr<double>(bias), mptr<double>(out), p);
        else
          forward(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), cptr<float>(values), n_rows, cptr<float>(weight),
                  hidden, cptr<float>(bias), mptr<float>(out), p);
      },
      py::arg("crow"), py::arg("col"), py::arg("values"), py::arg("n_rows"), py::arg("weight"), py::arg("hidden"),
      py::arg("bias"), py::arg("out"), py::arg("is_double"), py::arg("kind"), py::arg("seed"), py::arg("cell_offset"),
      py::arg("thr"), py::arg("block_size"), py::arg("gene_to_module"),
      (std::string("out[i] = bias + sum over kept nonzeros of row i of values[k] * weight[col[k]] (raw pointers; "
                    "bias may be 0).") + mask_doc).c_str());
  m.def(
      "masked_encode_grad_weight",
      [](std::uintptr_t crow, std::uintptr_t col, std::uintptr_t values, std::int64_t n_rows, std::uintptr_t dout,
         std::int64_t hidden, std::int64_t n_genes, std::uintptr_t dweight, bool is_double, int kind,
         std::uint64_t seed, std::int64_t cell_offset, std::uint64_t thr, std::int64_t block_size,
         std::uintptr_t gene_to_module) {
        const auto p = make_mask_params(kind, seed, cell_offset, thr, block_size, gene_to_module);
        py::gil_scoped_release nogil;
        if (is_double)
          grad_weight(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), cptr<double>(values), n_rows, cptr<double>(dout),
                      hidden, n_genes, mptr<double>(dweight), p);
        else
          grad_weight(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), cptr<float>(values), n_rows, cptr<float>(dout),
                      hidden, n_genes, mptr<float>(dweight), p);
      },
      py::arg("crow"), py::arg("col"), py::arg("values"), py::arg("n_rows"), py::arg("dout"), py::arg("hidden"),
      py::arg("n_genes"), py::arg("dweight"), py::arg("is_double"), py::arg("kind"), py::arg("seed"),
      py::arg("cell_offset"), py::arg("thr"), py::arg("block_size"), py::arg("gene_to_module"),
      (std::string("dweight (n_genes x hidden, overwritten) = (x * keep)^T dout, deterministic.") + mask_doc).c_str());
  m.def(
      "masked_encode_grad_values",
      [](std::uintptr_t crow, std::uintptr_t col, std::int64_t n_rows, std::uintptr_t weight, std::int64_t hidden,
         std::uintptr_t dout, std::uintptr_t dvalues, bool is_double, int kind, std::uint64_t seed,
         std::int64_t cell_offset, std::uint64_t thr, std::int64_t block_size, std::uintptr_t gene_to_module) {
        const auto p = make_mask_params(kind, seed, cell_offset, thr, block_size, gene_to_module);
        py::gil_scoped_release nogil;
        if (is_double)
          grad_values(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), n_rows, cptr<double>(weight), hidden,
                      cptr<double>(dout), mptr<double>(dvalues), p);
        else
          grad_values(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), n_rows, cptr<float>(weight), hidden,
                      cptr<float>(dout), mptr<float>(dvalues), p);
      },
      py::arg("crow"), py::arg("col"), py::arg("n_rows"), py::arg("weight"), py::arg("hidden"), py::arg("dout"),
      py::arg("dvalues"), py::arg("is_double"), py::arg("kind"), py::arg("seed"), py::arg("cell_offset"),
      py::arg("thr"), py::arg("block_size"), py::arg("gene_to_module"),
      (std::string("dvalues[k] = keep(k) * <dout[row k], weight[col k]>.") + mask_doc).c_str());
  m.def(
      "mask_bits",
      [](std::uintptr_t cells, std::int64_t n_cells, std::int64_t n_genes, std::uintptr_t out, int kind,
         std::uint64_t seed, std::uint64_t thr, std::int64_t block_size, std::uintptr_t gene_to_module) {
        const auto p = make_mask_params(kind, seed, 0, thr, block_size, gene_to_module);
        py::gil_scoped_release nogil;
        mask_bits(cptr<std::int64_t>(cells), n_cells, n_genes, mptr<std::uint8_t>(out), p);
      },
      py::arg("cells"), py::arg("n_cells"), py::arg("n_genes"), py::arg("out"), py::arg("kind"), py::arg("seed"),
      py::arg("thr"), py::arg("block_size"), py::arg("gene_to_module"),
      "out (uint8, n_cells x n_genes) = 1 where gene g of global cell cells[c] is hidden.");
  m.def(
      "check_csr",
      [](std::uintptr_t crow, std::uintptr_t col, std::int64_t n_rows, std::int64_t nnz, std::int64_t n_genes) {
        py::gil_scoped_release nogil;
        return check_csr(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), n_rows, nnz, n_genes);
      },
      py::arg("crow"), py::arg("col"), py::arg("n_rows"), py::arg("nnz"), py::arg("n_genes"),
      "CSR check: 0 ok, 1 bad crow ends, 2 crow decreasing, 3 column out of range, 4 columns not strictly "
      "increasing within a row.");
  m.def(
      "mask_unit_hash",
      [](std::uint64_t seed, std::uint64_t cell, std::uint64_t unit) {
        return mask_rng::unit_hash(mask_rng::row_key(seed, cell), unit);
      },
      py::arg("seed"), py::arg("cell"), py::arg("unit"),
      "The raw 64-bit mask hash of (seed, global cell, unit) (see mask_rng.hpp).");
}

}  // namespace celljepa
