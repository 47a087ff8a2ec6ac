// Counter-based mask RNG shared by the CPU (_core) and CUDA (_cuda) masked_encode kernels and
// mirrored bit for bit in Python (celljepa.kernels.masked_encode._unit_hash).
//
// Definition (all arithmetic modulo 2^64, ">>" logical):
//   mix64(z)            = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^ (z >> 31)
//                         (the splitmix64 finaliser, a bijection of uint64)
//   row_key(seed, cell) = mix64(mix64(seed ^ 0x5DEECE66DA3B7C9F) ^ cell)          cell = cell_offset + row
//   hash(key, unit)     = mix64(key ^ mix64(unit + 0x9E3779B97F4A7C15))
//   hidden(key, unit)   = (hash(key, unit) >> 11) < thr,   thr = ceil(ratio * 2^53)
// i.e. u = (hash >> 11) / 2^53 is uniform on [0, 1) and the unit is hidden iff u < ratio.
// Units per mask kind: random → gene index g; block → (g + phase) / block_size with
// phase = (hash(key, 2^64 - 2) >> 11) % block_size (a per-cell random shift of the block grid);
// module → the module id as int64 reinterpreted as uint64 (−1, "no module", is one bucket).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CJ_MASK_HD __host__ __device__ __forceinline__
#else
#define CJ_MASK_HD inline
#endif

namespace celljepa {
namespace mask_rng {

enum Kind : int { kNone = 0, kRandom = 1, kBlock = 2, kModule = 3 };

constexpr std::uint64_t kSeedSalt = 0x5DEECE66DA3B7C9FULL;
constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
constexpr std::uint64_t kPhaseUnit = 0xFFFFFFFFFFFFFFFEULL;

CJ_MASK_HD std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

CJ_MASK_HD std::uint64_t row_key(std::uint64_t seed, std::uint64_t cell) {
  return mix64(mix64(seed ^ kSeedSalt) ^ cell);
}

CJ_MASK_HD std::uint64_t unit_hash(std::uint64_t key, std::uint64_t unit) {
  return mix64(key ^ mix64(unit + kGolden));
}

CJ_MASK_HD bool unit_hidden(std::uint64_t key, std::uint64_t unit, std::uint64_t thr) {
  return (unit_hash(key, unit) >> 11) < thr;
}

// Everything a kernel needs to decide hidden/kept for one (cell, gene).
struct MaskParams {
  int kind;                 // Kind
  std::uint64_t seed;
  std::int64_t cell_offset;  // global cell index = cell_offset + row
  std::uint64_t thr;        // ceil(ratio * 2^53); 0 hides nothing
  std::int64_t block_size;  // block kind only (>= 1)
  const std::int32_t* gene_to_module;  // module kind only (length G, values >= -1)
};

// Per-row state: the row key and, for blocks, the phase.
struct RowMask {
  std::uint64_t key;
  std::uint64_t phase;
  bool all_kept;

  CJ_MASK_HD RowMask(const MaskParams& p, std::uint64_t cell) {
    all_kept = (p.kind == kNone) || (p.thr == 0);
    key = row_key(p.seed, cell);
    phase = 0;
    if (p.kind == kBlock && !all_kept) {
      phase = (unit_hash(key, kPhaseUnit) >> 11) % static_cast<std::uint64_t>(p.block_size);
    }
  }

  CJ_MASK_HD bool hidden(const MaskParams& p, std::int64_t g) const {
    if (all_kept) return false;
    std::uint64_t unit;
    if (p.kind == kRandom) {
      unit = static_cast<std::uint64_t>(g);
    } else if (p.kind == kBlock) {
      unit = (static_cast<std::uint64_t>(g) + phase) / static_cast<std::uint64_t>(p.block_size);
    } else {
      unit = static_cast<std::uint64_t>(static_cast<std::int64_t>(p.gene_to_module[g]));
    }
    return unit_hidden(key, unit, p.thr);
  }
};

}  // namespace mask_rng
}  // namespace celljepa
