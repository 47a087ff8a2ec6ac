// Host launchers of the CUDA E-distance kernels (plain C++ declarations; definitions in edistance.cu).
// Every pointer is a device pointer to contiguous row-major data; sizes and indices are int64;
// `stream` is a cudaStream_t passed as an integer (torch.cuda.current_stream().cuda_stream).
#pragma once

#include <cstdint>

namespace celljepa {
namespace cuda_ed {

// Tile edge of one work item (TILE x TILE pairs per thread block); the Python side builds the items.
constexpr int TILE = 64;

// part[it] = float64 distance sum of work item it = (block, row0, col0) over the tile of block
// (group a, group b) = blocks[block]; on a == b only pairs with column > row are summed.
// `norms` (n entries, dtype of x) is scratch for the row norms. kernel: 1 = tensor cores (3xTF32, float32 on
// sm_80+, each block centred on its first group's mean from `means`, (groups, d) float32; float64, older
// devices and means == nullptr take the SIMT kernel), 0 = the SIMT kernel ("tiles", the reference).
void block_sums(const void* x, std::int64_t n, std::int64_t d, void* norms, const std::int64_t* offsets,
                const std::int64_t* blocks, const std::int64_t* items, std::int64_t n_items, bool squared,
                bool is_double, double* part, int kernel, const void* means, std::uintptr_t stream);

// Set loss: items (I, 4) = (set, kind, row0, col0) with kind 0 pred-obs, 1 pred-pred, 2 obs-obs.
// part[it] = float64 distance sum of the tile; when grad_pred / grad_obs are non-null (zero-filled)
// the gradient of L_k = 2 S_po/(nm) - 2 U_pp/(n(n-1)) - 2 U_oo/(m(m-1)) is added to them (atomics).
void set_loss(const void* pred, std::int64_t n_pred, const void* obs, std::int64_t n_obs, std::int64_t d,
              void* pred_norms, void* obs_norms, const std::int64_t* pred_offsets, const std::int64_t* obs_offsets,
              const std::int64_t* items, std::int64_t n_items, bool squared, bool is_double, double* part,
              void* grad_pred, void* grad_obs, std::uintptr_t stream);

}  // namespace cuda_ed
}  // namespace celljepa
