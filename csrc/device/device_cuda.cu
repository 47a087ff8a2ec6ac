// CUDA runtime queries used by celljepa._cuda.build_info(); safe on machines without a GPU.
#include <cuda_runtime.h>

#include "device/device_cuda.hpp"

namespace celljepa {
namespace cuda {

CudaRuntimeInfo query_runtime() {
  CudaRuntimeInfo info;
  info.compiled_version = CUDART_VERSION;
  cudaRuntimeGetVersion(&info.runtime_version);
  if (cudaDriverGetVersion(&info.driver_version) != cudaSuccess) info.driver_version = 0;
  cudaError_t err = cudaGetDeviceCount(&info.device_count);
  if (err != cudaSuccess) {
    info.device_count = 0;
    info.status = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later calls start clean
  } else {
    info.status = "ok";
  }
  return info;
}

std::string device_name(int device) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    return std::string();
  }
  return std::string(prop.name);
}

}  // namespace cuda
}  // namespace celljepa
