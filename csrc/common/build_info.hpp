// Build facts shared by the CPU and CUDA bindings: compiler, OpenMP, thread count.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace celljepa {

inline pybind11::dict host_build_info() {
  pybind11::dict info;
#ifdef CELLJEPA_CXX_COMPILER
  info["compiler"] = std::string(CELLJEPA_CXX_COMPILER);
#else
  info["compiler"] = std::string("unknown");
#endif
  info["cxx_standard"] = static_cast<long>(__cplusplus);
#ifdef _OPENMP
  info["openmp"] = true;
  info["openmp_version"] = static_cast<long>(_OPENMP);
  info["threads"] = omp_get_max_threads();
#else
  info["openmp"] = false;
  info["openmp_version"] = pybind11::none();
  info["threads"] = 1;
#endif
  return info;
}

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace celljepa
