// Host launchers of the CUDA masked_encode kernels (defined in masked_encode.cu, bound in
// masked_encode_cuda.cpp). All pointers are device pointers; `stream` is a cudaStream_t as an integer.
//
//   forward:  out[i, :] = bias + Σ_{k in row i, kept} values[k] · W[col[k], :]
//   grad_w:   dW[g, :] += Σ_{k: col[k] = g, kept} values[k] · dout[row(k), :]   (dW must be zeroed)
//   grad_values: dvalues[k] = kept(k) · <dout[row(k), :], W[col[k], :]>
#pragma once

#include <cstdint>

#include "masked_encode/mask_rng.hpp"

namespace celljepa {
namespace masked_encode_cuda {

using mask_rng::MaskParams;

void forward(const std::int64_t* crow, const std::int64_t* col, const float* values, std::int64_t n_rows,
             const float* weight, std::int64_t hidden, const float* bias, float* out, const MaskParams& mask,
             std::uintptr_t stream);
void forward(const std::int64_t* crow, const std::int64_t* col, const double* values, std::int64_t n_rows,
             const double* weight, std::int64_t hidden, const double* bias, double* out, const MaskParams& mask,
             std::uintptr_t stream);

void grad_weight(const std::int64_t* crow, const std::int64_t* col, const float* values, std::int64_t n_rows,
                 const float* dout, std::int64_t hidden, float* dweight, const MaskParams& mask, std::uintptr_t stream);
void grad_weight(const std::int64_t* crow, const std::int64_t* col, const double* values, std::int64_t n_rows,
                 const double* dout, std::int64_t hidden, double* dweight, const MaskParams& mask,
                 std::uintptr_t stream);

void grad_values(const std::int64_t* crow, const std::int64_t* col, std::int64_t n_rows, const float* weight,
                 std::int64_t hidden, const float* dout, float* dvalues, const MaskParams& mask, std::uintptr_t stream);
void grad_values(const std::int64_t* crow, const std::int64_t* col, std::int64_t n_rows, const double* weight,
                 std::int64_t hidden, const double* dout, double* dvalues, const MaskParams& mask,
                 std::uintptr_t stream);

// Tensor-core forward / grad_weight (float32, sm_80+; masked_encode_tc.hpp). They return false, launching
// nothing, on devices without tf32 tensor cores (the caller then runs the kernels above).
bool forward_tc(const std::int64_t* crow, const std::int64_t* col, const float* values, std::int64_t n_rows,
                std::int64_t n_genes, const float* weight, std::int64_t hidden, const float* bias, float* out,
                const MaskParams& mask, std::uintptr_t stream);
bool grad_weight_tc(const std::int64_t* crow, const std::int64_t* col, const float* values, std::int64_t n_rows,
                    std::int64_t n_genes, const float* dout, std::int64_t hidden, float* dweight,
                    const MaskParams& mask, std::uintptr_t stream);

// hidden[c * n_genes + g] = 1 if gene g of global cell cells[c] is hidden, else 0.
void mask_bits(const std::int64_t* cells, std::int64_t n_cells, std::int64_t n_genes, std::uint8_t* hidden,
               const MaskParams& mask, std::uintptr_t stream);

}  // namespace masked_encode_cuda
}  // namespace celljepa
