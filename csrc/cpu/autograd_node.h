// make_node<T>(): a new C++ autograd node of type T, held the way the installed torch holds
// nodes: c10::intrusive_ptr from torch 2.13, std::shared_ptr before. torch::autograd::set_history
// and collect_next_edges accept either.
#pragma once

#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/autograd/function.h>

#include <memory>
#include <type_traits>

namespace fastgen {

template <typename T>
auto make_node() {
  // Both branches depend on T, so only the one taken is compiled against the installed headers.
  if constexpr (std::is_base_of_v<c10::intrusive_ptr_target, T>) {
    return c10::make_intrusive<T>();
  } else {
    // torch::autograd::deleteNode (found by argument-dependent lookup, as it exists only in
    // these versions) frees long graphs without deep recursion, as torch's own nodes do.
    return std::shared_ptr<T>(new T(), [](T* node) { deleteNode(node); });
  }
}

}  // namespace fastgen
