// Host emulation of the tensor-core E-distance kernel (edistance.cu, block_sums_tc_kernel): the same
// block-level phases (edistance_tc.hpp) run thread by thread between the kernel's barriers, and the warp
// MMAs are computed as the hardware defines them (common/tf32_mma.hpp: 3xTF32 split, each m16n16k8
// product summed exactly and added to the float32 accumulator). Tests use it to check the kernel's tiling, masking and epilogue
// against the float64 reference on machines without a GPU; it is not a fast path.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>

#include "common/bindings.hpp"
#include "common/pointers.hpp"
#include "edistance/edistance_tc.hpp"

namespace celljepa {
namespace ed_tc {
namespace {

// One warp's 32 x 32 quarter, kk .. kk + 8 of the staged chunk: acc += lo·hi, then hi·lo, then hi·hi,
// per 16 x 16 fragment (the device's order).
using tf32::Quarter;

void block_sums_emulated(const float* x, i64 d, const float* means, const i64* off, const i64* blocks,
                         const i64* items, i64 n_items, bool squared, double* part) {
  auto s = std::make_unique<Smem>();
  float nacc[THREADS];
  auto quarters = std::make_unique<Quarter[]>(WARPS);  // the warps' accumulators
  Quarter* acc = quarters.get();
  for (i64 it = 0; it < n_items; ++it) {
    const Item t = decode(off, blocks, items, means, d, it);
    for (float& v : nacc) v = 0.0f;
    for (int warp = 0; warp < WARPS; ++warp)
      for (auto& row : acc[warp])
        for (float& v : row) v = 0.0f;
    for (i64 k0 = 0; k0 < d; k0 += KC) {
      for (int tid = 0; tid < THREADS; ++tid) stage(*s, x, d, t, k0, tid);
      const int kn = (int)imin((i64)KC, d - k0);
      for (int tid = 0; tid < THREADS; ++tid) nacc[tid] = norm_part(*s, tid, kn, nacc[tid]);
      for (int warp = 0; warp < WARPS; ++warp)
        for (int kk = 0; kk < kn; kk += tf32::MMA_K)
          tf32::warp_mma_host<tf32::kRowMajor, tf32::kColMajor>(s->a, LDA, s->b, LDA, warp, kk, acc[warp]);
    }
    tf32::store_host(acc, s->c, LDC);
    for (int tid = 0; tid < THREADS; ++tid) store_norm(*s, tid, nacc[tid]);
    double total = 0.0;
    for (int tid = 0; tid < THREADS; ++tid) total += epilogue(*s, t, squared, tid);
    part[it] = total;
  }
}

}  // namespace
}  // namespace ed_tc

void bind_edistance_tc_emulation(pybind11::module_& m) {
  namespace py = pybind11;
  using i64 = std::int64_t;
  m.def(
      "edistance_block_sums_tc_emulated",
      [](std::uintptr_t x, i64 d, std::uintptr_t means, std::uintptr_t offsets, std::uintptr_t blocks,
         std::uintptr_t items, i64 n_items, bool squared, std::uintptr_t part) {
        py::gil_scoped_release nogil;
        ed_tc::block_sums_emulated(cptr<float>(x), d, cptr<float>(means), cptr<i64>(offsets), cptr<i64>(blocks),
                                   cptr<i64>(items), n_items, squared, mptr<double>(part));
      },
      py::arg("x"), py::arg("d"), py::arg("means"), py::arg("offsets"), py::arg("blocks"), py::arg("items"),
      py::arg("n_items"), py::arg("squared"), py::arg("part"),
      "Host emulation of the CUDA tensor-core block-sums kernel (float32; tests only): part[it] per work item.");
  m.attr("edistance_tc_tile") = ed_tc::TILE;
}

}  // namespace celljepa
