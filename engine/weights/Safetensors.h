//===- Safetensors.h - Reading safetensors weights without LLVM -*- C++ -*-===//
//
// The safetensors decoder (https://github.com/huggingface/safetensors: an 8-byte little-endian
// header length, a JSON header naming each tensor's dtype, shape and byte range, then the
// data). It is the one decoder: the runtime's executables read their weights with it, and the
// checkpoint layer (nestor/Checkpoint.h) wraps it for the tools. Its input is untrusted: every
// length, offset and shape is checked before it is used, and each error names the file and the
// tensor it is about. F32, F64, F16 and BF16 tensors are read, converted to float32.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_ENGINE_SAFETENSORS_H
#define NESTOR_ENGINE_SAFETENSORS_H

#include "engine/Status.h"
#include "nestor/Tensor.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nestor::engine {

/// The safetensors `__metadata__` map (string to string), and its key in the header.
using WeightsMetadata = std::map<std::string, std::string>;
inline constexpr std::string_view kSafetensorsMetadataKey = "__metadata__";

/// Decodes a safetensors image into `tensors` (cleared first); `name` (the file) prefixes
/// every error: "NAME: tensor 'x': ...". `metadata`, when given, receives `__metadata__`.
Status decodeSafetensors(std::string_view bytes, const std::string &name, train::TensorMap &tensors,
                         WeightsMetadata *metadata = nullptr);

/// Reads and decodes the safetensors file at `path` (mapped, not copied, before decoding).
Result<train::TensorMap> readSafetensorsFile(const std::string &path,
                                             WeightsMetadata *metadata = nullptr);

/// The element count of `shape`, or nullopt if an extent is negative or the product overflows.
std::optional<uint64_t> elementCount(const std::vector<int64_t> &shape);

/// "[2, 3]".
std::string shapeString(const std::vector<int64_t> &shape);

/// When `tensor` holds a NaN or an infinity: "tensor 'NAME' holds NaN at index 53 [3, 5] (2 of
/// its 384 values are not finite)", naming the first (its flat and row-major index); else
/// std::nullopt. Every weight loader refuses such weights with this message.
std::optional<std::string> nonFiniteProblem(const std::string &name, const train::Tensor &tensor);

} // namespace nestor::engine

#endif // NESTOR_ENGINE_SAFETENSORS_H
