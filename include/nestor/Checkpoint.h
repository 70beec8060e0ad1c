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

#include "nlohmann/json_fwd.hpp"

#include <map>
#include <optional>
#include <string>

namespace nestor::spec {
class ModelSpec;
} // namespace nestor::spec

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

/// Parses `text` as one JSON object, strictly (nestor/Json.h: a repeated key is an error); the
/// errors name `name`: "NAME: not valid JSON: ...", "NAME: the key 'k' appears twice", "NAME: a
/// JSON array, not an object".
llvm::Expected<nlohmann::json> parseJsonObject(llvm::StringRef text, llvm::StringRef name);

/// readFileBytes + parseJsonObject.
llvm::Expected<nlohmann::json> readJsonObject(llvm::StringRef path);

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

//===----------------------------------------------------------------------===//
// Model weights: one policy for every command that loads them
//===----------------------------------------------------------------------===//

/// What a weight loader lets through beyond the model's own tensors. The driver's commands
/// share the two flags that set it (--allow-unknown-tensors, --allow-non-finite).
struct WeightPolicy {
  /// Drop tensors that are not parameters of the model (default: refuse the file).
  bool allowUnknown = false;
  /// Load NaN and infinite values (default: refuse the file, naming the tensor and index).
  bool allowNonFinite = false;
};

/// Checks `tensors`, read from `file`, against the parameters of `spec`
/// (spec::parameterShapes): each must be there with its shape; a tensor that is none of them
/// is refused (or, with policy.allowUnknown, dropped); a NaN or infinite value is refused with
/// the tensor and index (unless policy.allowNonFinite). `reference` names what the shapes come
/// from in messages ("the spec", "config.json"). Errors are bad input.
llvm::Error checkModelWeights(train::TensorMap &tensors, const spec::ModelSpec &spec,
                              llvm::StringRef file, const WeightPolicy &policy,
                              llvm::StringRef reference = "the spec");

/// readSafetensors + checkModelWeights: the weight loader of every command.
llvm::Expected<train::TensorMap> loadModelWeights(llvm::StringRef path, const spec::ModelSpec &spec,
                                                  const WeightPolicy &policy = {});

//===----------------------------------------------------------------------===//
// Output folders: a command writes only into a folder it made itself
//===----------------------------------------------------------------------===//

/// The file a command writes first into every output folder it creates: a JSON object with
/// the kind of folder ("run", "checkpoint", "slice", "hf-export", "hf-import"), the folder's
/// own name and the command that wrote it. It is how Nestor recognises what it may replace or
/// remove: by this marker, never by a file's name. A folder copied or renamed by the user
/// (its name is no longer the recorded one) is no longer Nestor's.
constexpr llvm::StringLiteral kOutputMarker = ".nestor-output.json";

/// The kind recorded by `dir`'s marker; std::nullopt when the folder has none, or one that
/// records another folder name.
std::optional<std::string> outputKind(llvm::StringRef dir);

/// Writes the marker of kind `kind` into `dir` (which exists), atomically; `command` is
/// recorded as the writer.
llvm::Error markOutput(llvm::StringRef dir, llvm::StringRef kind, llvm::StringRef command);

/// Checks that `command` (e.g. "nestor slice"), which writes outputs of `kind`, may write
/// into the folder `dir`; writes nothing. The folder:
///   - must not be one of `inputs` (folders or files the command reads), nor hold one;
///   - may be missing, or empty;
///   - when it already holds an output of the same kind (its marker says so), may be reused
///     only with `force` (each file the command writes then replaces its old one, atomically);
///   - is refused in every other case (another kind, or files Nestor did not write), `force`
///     or not.
/// `flag` names the option in messages ("--out"); every message says nothing was written.
llvm::Error checkOutputFolder(llvm::StringRef dir, llvm::StringRef kind,
                              llvm::ArrayRef<std::string> inputs, bool force,
                              llvm::StringRef flag = "--out");

/// checkOutputFolder, then creates `dir` when missing and writes its marker. Commands check
/// before their work (to fail fast) and claim just before they write.
llvm::Error claimOutputFolder(llvm::StringRef dir, llvm::StringRef kind, llvm::StringRef command,
                              llvm::ArrayRef<std::string> inputs, bool force,
                              llvm::StringRef flag = "--out");

/// Refuses an output file that is one of `inputs`, or an existing directory. `flag` names
/// the option in messages.
llvm::Error checkOutputFile(llvm::StringRef path, llvm::ArrayRef<std::string> inputs,
                            llvm::StringRef flag);

} // namespace nestor::ckpt

#endif // NESTOR_CHECKPOINT_H
