// pybind11 bindings of the CUDA masked_encode kernels (host code; launchers live in masked_encode.cu).
// Same signatures as the CPU bindings in masked_encode_cpu.cpp plus a trailing `stream`
// (cudaStream_t as an integer, e.g. torch.cuda.current_stream().cuda_stream). Pointers are device
// pointers; grad_weight accumulates into dweight, which the caller must zero.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>

#include "common/bindings.hpp"
#include "common/mask_params.hpp"
#include "common/pointers.hpp"
#include "masked_encode/masked_encode.hpp"

namespace py = pybind11;

namespace celljepa {
namespace {

using mask_rng::MaskParams;
namespace mc = masked_encode_cuda;


}  // namespace

void bind_masked_encode_cuda(py::module_& m) {
  m.def(
      "masked_encode_forward",
      [](std::uintptr_t crow, std::uintptr_t col, std::uintptr_t values, std::int64_t n_rows, std::uintptr_t weight,
         std::int64_t hidden, std::uintptr_t bias, std::uintptr_t out, bool is_double, int kind, std::uint64_t seed,
         std::int64_t cell_offset, std::uint64_t thr, std::int64_t block_size, std::uintptr_t gene_to_module,
         std::uintptr_t stream, int kernel, std::int64_t n_genes) {
        const auto p = make_mask_params(kind, seed, cell_offset, thr, block_size, gene_to_module);
        py::gil_scoped_release nogil;
        if (!is_double && kernel == 1 &&
            mc::forward_tc(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), cptr<float>(values), n_rows, n_genes,
                           cptr<float>(weight), hidden, cptr<float>(bias), mptr<float>(out), p, stream))
          return;
        if (is_double)
          mc::forward(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), cptr<double>(values), n_rows,
                      cptr<double>(weight), hidden, cptr<double>(bias), mptr<double>(out), p, stream);
        else
          mc::forward(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), cptr<float>(values), n_rows, cptr<float>(weight),
                      hidden, cptr<float>(bias), mptr<float>(out), p, stream);
      },
      py::arg("crow"), py::arg("col"), py::arg("values"), py::arg("n_rows"), py::arg("weight"), py::arg("hidden"),
      py::arg("bias"), py::arg("out"), py::arg("is_double"), py::arg("kind"), py::arg("seed"), py::arg("cell_offset"),
      py::arg("thr"), py::arg("block_size"), py::arg("gene_to_module"), py::arg("stream"), py::arg("kernel") = 0,
      py::arg("n_genes") = 0,
      "CUDA forward of masked_encode (device pointers, asynchronous on `stream`); kernel 1 = tensor cores\n"
      "(float32, sm_80+; needs n_genes, the rows of weight), 0 = one block per cell.");
  m.def(
      "masked_encode_grad_weight",
      [](std::uintptr_t crow, std::uintptr_t col, std::uintptr_t values, std::int64_t n_rows, std::uintptr_t dout,
         std::int64_t hidden, std::uintptr_t dweight, bool is_double, int kind, std::uint64_t seed,
         std::int64_t cell_offset, std::uint64_t thr, std::int64_t block_size, std::uintptr_t gene_to_module,
         std::uintptr_t stream, int kernel, std::int64_t n_genes) {
        const auto p = make_mask_params(kind, seed, cell_offset, thr, block_size, gene_to_module);
        py::gil_scoped_release nogil;
        if (!is_double && kernel == 1 &&
            mc::grad_weight_tc(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), cptr<float>(values), n_rows,
                               n_genes, cptr<float>(dout), hidden, mptr<float>(dweight), p, stream))
          return;
        if (is_double)
          mc::grad_weight(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), cptr<double>(values), n_rows,
                          cptr<double>(dout), hidden, mptr<double>(dweight), p, stream);
        else
          mc::grad_weight(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), cptr<float>(values), n_rows,
                          cptr<float>(dout), hidden, mptr<float>(dweight), p, stream);
      },
      py::arg("crow"), py::arg("col"), py::arg("values"), py::arg("n_rows"), py::arg("dout"), py::arg("hidden"),
      py::arg("dweight"), py::arg("is_double"), py::arg("kind"), py::arg("seed"), py::arg("cell_offset"),
      py::arg("thr"), py::arg("block_size"), py::arg("gene_to_module"), py::arg("stream"), py::arg("kernel") = 0,
      py::arg("n_genes") = 0,
      "CUDA grad of the weight: dweight (zeroed by the caller) += (x * keep)^T dout; kernel 1 = tensor cores\n"
      "(float32, sm_80+: one atomic add per tile entry), 0 = atomics per nonzero.");
  m.def(
      "masked_encode_grad_values",
      [](std::uintptr_t crow, std::uintptr_t col, std::int64_t n_rows, std::uintptr_t weight, std::int64_t hidden,
         std::uintptr_t dout, std::uintptr_t dvalues, bool is_double, int kind, std::uint64_t seed,
         std::int64_t cell_offset, std::uint64_t thr, std::int64_t block_size, std::uintptr_t gene_to_module,
         std::uintptr_t stream) {
        const auto p = make_mask_params(kind, seed, cell_offset, thr, block_size, gene_to_module);
        py::gil_scoped_release nogil;
        if (is_double)
          mc::grad_values(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), n_rows, cptr<double>(weight), hidden,
                          cptr<double>(dout), mptr<double>(dvalues), p, stream);
        else
          mc::grad_values(cptr<std::int64_t>(crow), cptr<std::int64_t>(col), n_rows, cptr<float>(weight), hidden,
                          cptr<float>(dout), mptr<float>(dvalues), p, stream);
      },
      py::arg("crow"), py::arg("col"), py::arg("n_rows"), py::arg("weight"), py::arg("hidden"), py::arg("dout"),
      py::arg("dvalues"), py::arg("is_double"), py::arg("kind"), py::arg("seed"), py::arg("cell_offset"),
      py::arg("thr"), py::arg("block_size"), py::arg("gene_to_module"), py::arg("stream"),
      "CUDA grad of the values: dvalues[k] = keep(k) * <dout[row k], weight[col k]>.");
  m.def(
      "mask_bits",
      [](std::uintptr_t cells, std::int64_t n_cells, std::int64_t n_genes, std::uintptr_t out, int kind,
         std::uint64_t seed, std::uint64_t thr, std::int64_t block_size, std::uintptr_t gene_to_module,
         std::uintptr_t stream) {
        const auto p = make_mask_params(kind, seed, 0, thr, block_size, gene_to_module);
        py::gil_scoped_release nogil;
        mc::mask_bits(cptr<std::int64_t>(cells), n_cells, n_genes, mptr<std::uint8_t>(out), p, stream);
      },
      py::arg("cells"), py::arg("n_cells"), py::arg("n_genes"), py::arg("out"), py::arg("kind"), py::arg("seed"),
      py::arg("thr"), py::arg("block_size"), py::arg("gene_to_module"), py::arg("stream"),
      "CUDA hidden mask (uint8, n_cells x n_genes; device pointers) of global cells `cells`.");
}

}  // namespace celljepa
