// Mask arguments of the masked_encode bindings (CPU and CUDA), checked once and packed into MaskParams.
#pragma once

#include <cstdint>
#include <stdexcept>

#include "common/pointers.hpp"
#include "masked_encode/mask_rng.hpp"

namespace celljepa {

inline mask_rng::MaskParams make_mask_params(int kind, std::uint64_t seed, std::int64_t cell_offset,
                                             std::uint64_t thr, std::int64_t block_size,
                                             std::uintptr_t gene_to_module) {
  if (kind < mask_rng::kNone || kind > mask_rng::kModule) throw std::invalid_argument("masked_encode: bad mask kind");
  if (kind == mask_rng::kBlock && block_size < 1) throw std::invalid_argument("masked_encode: block_size must be >= 1");
  if (kind == mask_rng::kModule && gene_to_module == 0)
    throw std::invalid_argument("masked_encode: module mask needs gene_to_module");
  return mask_rng::MaskParams{kind, seed, cell_offset, thr, block_size, cptr<std::int32_t>(gene_to_module)};
}

}  // namespace celljepa
