// Registration functions each op provides for the CPU (_core) and CUDA (_cuda) modules.
#pragma once

#include <pybind11/pybind11.h>

namespace celljepa {

void bind_edistance_cpu(pybind11::module_& m);
void bind_masked_encode_cpu(pybind11::module_& m);
void bind_edistance_tc_emulation(pybind11::module_& m);
void bind_masked_encode_tc_emulation(pybind11::module_& m);
void bind_edistance_cuda(pybind11::module_& m);
void bind_masked_encode_cuda(pybind11::module_& m);

}  // namespace celljepa
