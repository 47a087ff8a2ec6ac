// Plain-C++ view of the CUDA runtime facts, so the binding needs no CUDA headers.
#pragma once

#include <string>

namespace celljepa {
namespace cuda {

struct CudaRuntimeInfo {
  int compiled_version = 0;  // CUDART_VERSION the module was built against
  int runtime_version = 0;   // statically linked runtime
  int driver_version = 0;    // 0 when no driver is installed
  int device_count = 0;
  std::string status;        // "ok" or the CUDA error that made device_count 0
};

CudaRuntimeInfo query_runtime();
std::string device_name(int device);

}  // namespace cuda
}  // namespace celljepa
