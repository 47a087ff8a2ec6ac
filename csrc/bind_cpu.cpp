// pybind11 entry point of celljepa._core, the CPU (OpenMP) kernels.
#include <pybind11/pybind11.h>

#include "common/bindings.hpp"
#include "common/build_info.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "celljepa CPU kernels (C++17, OpenMP when available)";
  m.def(
      "build_info",
      []() {
        py::dict info = celljepa::host_build_info();
        info["backend"] = "cpu";
        info["cuda_version"] = py::none();
        return info;
      },
      "Compiler, OpenMP status and version, and the number of OpenMP threads available.");
  m.def("max_threads", &celljepa::max_threads, "Threads an OpenMP parallel region would use now.");
  celljepa::bind_edistance_cpu(m);
  celljepa::bind_masked_encode_cpu(m);
  celljepa::bind_edistance_tc_emulation(m);
  celljepa::bind_masked_encode_tc_emulation(m);
}
