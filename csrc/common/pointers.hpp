// Typed views of the raw addresses the Python side passes (tensor.data_ptr() as an integer).
#pragma once

#include <cstdint>

namespace celljepa {

// Read-only view: cptr<float>(a) is a const float*.
template <class T>
inline const T* cptr(std::uintptr_t a) {
  return reinterpret_cast<const T*>(a);
}

// Writable view: mptr<double>(a) is a double*.
template <class T>
inline T* mptr(std::uintptr_t a) {
  return reinterpret_cast<T*>(a);
}

}  // namespace celljepa
