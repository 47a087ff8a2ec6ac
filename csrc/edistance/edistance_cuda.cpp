// pybind11 bindings of the CUDA edistance kernels (host code; launchers live in edistance.cu).
#include "edistance/edistance.hpp"

#include <pybind11/pybind11.h>

#include <cstdint>

#include "common/bindings.hpp"
#include "common/pointers.hpp"

namespace celljepa {

void bind_edistance_cuda(pybind11::module_& m) {
  namespace py = pybind11;
  using i64 = std::int64_t;
  m.attr("edistance_tile") = cuda_ed::TILE;
  m.def(
      "edistance_block_sums",
      [](std::uintptr_t x, i64 n, i64 d, std::uintptr_t norms, std::uintptr_t offsets, std::uintptr_t blocks,
         std::uintptr_t items, i64 n_items, bool squared, bool is_double, std::uintptr_t part, std::uintptr_t stream,
         int kernel, std::uintptr_t means) {
        py::gil_scoped_release nogil;
        cuda_ed::block_sums(cptr<void>(x), n, d, mptr<void>(norms), cptr<i64>(offsets),
                            cptr<i64>(blocks), cptr<i64>(items), n_items, squared, is_double,
                            mptr<double>(part), kernel, cptr<void>(means), stream);
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("norms"), py::arg("offsets"), py::arg("blocks"),
      py::arg("items"), py::arg("n_items"), py::arg("squared"), py::arg("is_double"), py::arg("part"),
      py::arg("stream"), py::arg("kernel") = 0, py::arg("means") = 0,
      "Per work item (block, row0, col0) the float64 distance sum of one TILE x TILE tile (device pointers);\n"
      "kernel 1 = tensor cores (float32, sm_80+; means: (groups, d) float32 group means, the centres),\n"
      "0 = SIMT tiles.");
  m.def(
      "edistance_set_loss",
      [](std::uintptr_t pred, i64 n_pred, std::uintptr_t obs, i64 n_obs, i64 d, std::uintptr_t pred_norms,
         std::uintptr_t obs_norms, std::uintptr_t pred_offsets, std::uintptr_t obs_offsets, i64 n_sets,
         std::uintptr_t items, i64 n_items, bool squared, bool is_double, std::uintptr_t part,
         std::uintptr_t grad_pred, std::uintptr_t grad_obs, std::uintptr_t stream) {
        (void)n_sets;
        py::gil_scoped_release nogil;
        cuda_ed::set_loss(cptr<void>(pred), n_pred, cptr<void>(obs), n_obs, d, mptr<void>(pred_norms),
                          mptr<void>(obs_norms), cptr<i64>(pred_offsets), cptr<i64>(obs_offsets),
                          cptr<i64>(items), n_items, squared, is_double, mptr<double>(part),
                          mptr<void>(grad_pred), mptr<void>(grad_obs), stream);
      },
      py::arg("pred"), py::arg("n_pred"), py::arg("obs"), py::arg("n_obs"), py::arg("d"), py::arg("pred_norms"),
      py::arg("obs_norms"), py::arg("pred_offsets"), py::arg("obs_offsets"), py::arg("n_sets"), py::arg("items"),
      py::arg("n_items"), py::arg("squared"), py::arg("is_double"), py::arg("part"), py::arg("grad_pred"),
      py::arg("grad_obs"), py::arg("stream"),
      "Set-loss tiles (set, kind, row0, col0): float64 partial sums and atomically added gradients.");
}

}  // namespace celljepa
