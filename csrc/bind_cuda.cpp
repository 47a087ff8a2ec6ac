// pybind11 entry point of celljepa._cuda, the CUDA kernels (runtime linked statically).
#include <pybind11/pybind11.h>

#include "common/bindings.hpp"
#include "common/build_info.hpp"
#include "device/device_cuda.hpp"

namespace py = pybind11;

namespace {

std::string version_string(int v) {
  if (v <= 0) return std::string();
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "celljepa CUDA kernels";
  m.def(
      "build_info",
      []() {
        py::dict info = celljepa::host_build_info();
        auto rt = celljepa::cuda::query_runtime();
        info["backend"] = "cuda";
#ifdef CELLJEPA_CUDA_COMPILER
        info["cuda_compiler"] = std::string(CELLJEPA_CUDA_COMPILER);
#endif
#ifdef CELLJEPA_CUDA_ARCHITECTURES
        info["cuda_architectures"] = std::string(CELLJEPA_CUDA_ARCHITECTURES);
#endif
        info["cuda_version"] = version_string(rt.compiled_version);
        info["cuda_runtime_version"] = version_string(rt.runtime_version);
        info["cuda_driver_version"] = version_string(rt.driver_version);
        info["cudart"] = "static";
        info["device_count"] = rt.device_count;
        info["device_status"] = rt.status;
        py::list names;
        for (int d = 0; d < rt.device_count; ++d) names.append(celljepa::cuda::device_name(d));
        info["devices"] = names;
        return info;
      },
      "Compiler, CUDA versions (compiled, runtime, driver), visible devices and OpenMP status.");
  m.def(
      "device_count", []() { return celljepa::cuda::query_runtime().device_count; },
      "Number of CUDA devices visible to the statically linked runtime (0 without a GPU or driver).");
  celljepa::bind_edistance_cuda(m);
  celljepa::bind_masked_encode_cuda(m);
}
