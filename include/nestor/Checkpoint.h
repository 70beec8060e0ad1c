//===- Checkpoint.h - safetensors files and atomic writes -------*- C++ -*-===//
//
// Checkpoints are safetensors files (https://github.com/huggingface/safetensors: an 8-byte
// little-endian header length, a JSON header naming each tensor's dtype, shape and byte range,
// then the raw little-endian data), so any tool that reads Hugging Face weights reads ours.
// Every write is atomic: the bytes go to a temporary file in the same directory, are flushed
// to disk, and the temporary is renamed over the target, so a crash at any point leaves either
// the old file or the new one, never a torn one.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_CHECKPOINT_H
#define NESTOR_CHECKPOINT_H

#include "nestor/Tensor.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <map>
#include <string>

namespace nestor::ckpt {

/// The safetensors `__metadata__` map (string to string).
using Metadata = std::map<std::string, std::string>;

/// Writes `contents` to `path` atomically (temporary file in the same directory, fsync,
/// rename, fsync of the directory). On failure the previous file, if any, is untouched and no
/// temporary is left behind. Errors name the path.
llvm::Error writeFileAtomic(llvm::StringRef path, llvm::StringRef contents);

/// Creates a new, empty temporary file beside `path` (same directory, hidden name with a random
/// suffix), open for writing as `*fd` (closed when `fd` is null), and returns its path; rename
/// it over `path` to publish it. Any character of `path` is literal ('%' included).
llvm::Expected<std::string> createTempFileBeside(llvm::StringRef path, int *fd = nullptr);

/// The whole of `path` as bytes. The file is read as volatile (a writer may be appending, as
/// the trainer does to metrics.jsonl); errors name the path ("PATH: cannot read: reason").
llvm::Expected<std::string> readFileBytes(llvm::StringRef path);

/// A tensor shape as it appears in messages: "[4, 8]".
std::string shapeString(llvm::ArrayRef<int64_t> shape);

/// The safetensors encoding of `tensors` (dtype F32, names in map order) with `metadata`.
std::string encodeSafetensors(const train::TensorMap &tensors, const Metadata &metadata = {});

/// Decodes a safetensors image; `name` is used in errors ("NAME: tensor 'x': ...").
/// Accepts F32, F64, F16 and BF16 tensors (converted to float32); rejects anything malformed:
/// a short file, a header length past the end, invalid JSON, unknown dtypes, shapes that do
/// not match the byte range, ranges out of bounds or overlapping.
llvm::Expected<train::TensorMap> decodeSafetensors(llvm::StringRef bytes, llvm::StringRef name,
                                                   Metadata *metadata = nullptr);

/// encodeSafetensors + writeFileAtomic.
llvm::Error writeSafetensors(llvm::StringRef path, const train::TensorMap &tensors,
                             const Metadata &metadata = {});
/// Reads and decodes `path`; errors name the path.
llvm::Expected<train::TensorMap> readSafetensors(llvm::StringRef path,
                                                 Metadata *metadata = nullptr);

} // namespace nestor::ckpt

#endif // NESTOR_CHECKPOINT_H
