// Host emulation of the tensor-core masked encoder (masked_encode.cu: forward_tc_kernel, grad_weight_tc_kernel):
// the block-level phases of masked_encode_tc.hpp run thread by thread between the kernels' barriers, and the
// warp MMAs as common/tf32_mma.hpp emulates them. Tests use it to check the fused gather, the mask and the
// tiling against the reference on machines without a GPU; it is not a fast path.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common/bindings.hpp"
#include "common/mask_params.hpp"
#include "common/pointers.hpp"
#include "masked_encode/masked_encode_tc.hpp"

namespace celljepa {
namespace me_tc {
namespace {

using tf32::Quarter;

void clear(Quarter* acc) {
  for (int w = 0; w < tf32::WARPS; ++w)
    for (auto& row : acc[w])
      for (float& v : row) v = 0.0f;
}

void forward_emulated(const i64* crow, const i64* col, const float* values, i64 n_rows, i64 G, const float* W,
                      i64 H, const float* bias, float* out, const MaskParams& p) {
  auto s = std::make_unique<FwdSmem>();
  auto quarters = std::make_unique<Quarter[]>(tf32::WARPS);
  std::vector<Cursor> cur(THREADS);
  for (i64 i0 = 0; i0 < n_rows; i0 += TILE) {
    for (i64 h0 = 0; h0 < H; h0 += TILE) {
      for (int tid = 0; tid < THREADS; ++tid) cur[tid] = fwd_cursor(crow, n_rows, i0, tid);
      clear(quarters.get());
      for (i64 g0 = 0; g0 < G; g0 += KC) {
        for (int tid = 0; tid < THREADS; ++tid) fwd_stage(*s, cur[tid], p, i0, col, values, W, G, H, g0, h0, tid);
        for (int w = 0; w < tf32::WARPS; ++w)
          for (int kk = 0; kk < KC; kk += tf32::MMA_K)
            tf32::warp_mma_host<tf32::kRowMajor, tf32::kRowMajor>(s->a, LDF, s->b, LDT, w, kk, quarters[w]);
      }
      tf32::store_host(quarters.get(), s->c, LDT);
      for (int tid = 0; tid < THREADS; ++tid) fwd_write(*s, bias, out, n_rows, H, i0, h0, tid);
    }
  }
}

void grad_weight_emulated(const i64* crow, const i64* col, const float* values, i64 n_rows, i64 G,
                          const float* dout, i64 H, float* dW, const MaskParams& p) {
  auto s = std::make_unique<GradSmem>();
  auto quarters = std::make_unique<Quarter[]>(tf32::WARPS);
  const i64 per = cells_per_slice(n_rows, G, H);
  for (i64 g0 = 0; g0 < G; g0 += TILE) {
    for (i64 h0 = 0; h0 < H; h0 += TILE) {
      for (i64 cs = 0; cs < n_rows; cs += per) {
        const i64 ce = imin(cs + per, n_rows);
        clear(quarters.get());
        for (i64 c0 = cs; c0 < ce; c0 += KC) {
          for (int tid = 0; tid < THREADS; ++tid) grad_stage(*s, p, crow, col, values, dout, H, c0, ce, g0, h0, tid);
          for (int w = 0; w < tf32::WARPS; ++w)
            for (int kk = 0; kk < KC; kk += tf32::MMA_K)
              tf32::warp_mma_host<tf32::kColMajor, tf32::kRowMajor>(s->a, LDT, s->b, LDT, w, kk, quarters[w]);
        }
        tf32::store_host(quarters.get(), s->c, LDT);
        for (int r = 0; r < TILE; ++r)  // the device adds each tile entry with one atomic
          for (int n = 0; n < TILE; ++n)
            if (g0 + r < G && h0 + n < H) dW[(g0 + r) * H + h0 + n] += s->c[r * LDT + n];
      }
    }
  }
}

}  // namespace
}  // namespace me_tc

void bind_masked_encode_tc_emulation(pybind11::module_& m) {
  namespace py = pybind11;
  using i64 = std::int64_t;
  m.def(
      "masked_encode_forward_tc_emulated",
      [](std::uintptr_t crow, std::uintptr_t col, std::uintptr_t values, i64 n_rows, std::uintptr_t weight,
         i64 hidden, std::uintptr_t bias, std::uintptr_t out, int kind, std::uint64_t seed, i64 cell_offset,
         std::uint64_t thr, i64 block_size, std::uintptr_t gene_to_module, i64 n_genes) {
        const auto p = make_mask_params(kind, seed, cell_offset, thr, block_size, gene_to_module);
        py::gil_scoped_release nogil;
        me_tc::forward_emulated(cptr<i64>(crow), cptr<i64>(col), cptr<float>(values), n_rows, n_genes,
                                cptr<float>(weight), hidden, cptr<float>(bias), mptr<float>(out), p);
      },
      py::arg("crow"), py::arg("col"), py::arg("values"), py::arg("n_rows"), py::arg("weight"), py::arg("hidden"),
      py::arg("bias"), py::arg("out"), py::arg("kind"), py::arg("seed"), py::arg("cell_offset"), py::arg("thr"),
      py::arg("block_size"), py::arg("gene_to_module"), py::arg("n_genes"),
      "Host emulation of the CUDA tensor-core forward of masked_encode (float32; tests only).");
  m.def(
      "masked_encode_grad_weight_tc_emulated",
      [](std::uintptr_t crow, std::uintptr_t col, std::uintptr_t values, i64 n_rows, std::uintptr_t dout, i64 hidden,
         std::uintptr_t dweight, int kind, std::uint64_t seed, i64 cell_offset, std::uint64_t thr, i64 block_size,
         std::uintptr_t gene_to_module, i64 n_genes) {
        const auto p = make_mask_params(kind, seed, cell_offset, thr, block_size, gene_to_module);
        py::gil_scoped_release nogil;
        me_tc::grad_weight_emulated(cptr<i64>(crow), cptr<i64>(col), cptr<float>(values), n_rows, n_genes,
                                    cptr<float>(dout), hidden, mptr<float>(dweight), p);
      },
      py::arg("crow"), py::arg("col"), py::arg("values"), py::arg("n_rows"), py::arg("dout"), py::arg("hidden"),
      py::arg("dweight"), py::arg("kind"), py::arg("seed"), py::arg("cell_offset"), py::arg("thr"),
      py::arg("block_size"), py::arg("gene_to_module"), py::arg("n_genes"),
      "Host emulation of the CUDA tensor-core grad_weight of masked_encode (float32; dweight += ...; tests only).");
}

}  // namespace celljepa
