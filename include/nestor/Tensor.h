//===- Tensor.h - Named float32 host tensors ---------------------*- C++ -*-===//
//
// The host-side currency of training, checkpoints and slicing: a shape and its float32 values
// (row-major), kept by parameter name.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_TENSOR_H
#define NESTOR_TENSOR_H

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace nestor::train {

/// A row-major float32 tensor.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};
/// Tensors by name (ordered, so iteration and files are deterministic).
using TensorMap = std::map<std::string, Tensor>;

} // namespace nestor::train

#endif // NESTOR_TENSOR_H
