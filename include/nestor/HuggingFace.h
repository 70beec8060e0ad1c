//===- HuggingFace.h - Hugging Face NemotronH export and import -*- C++ -*-===//
//
// A dense Nestor model folder (`spec.pbtxt` + `model.safetensors`, as `nestor slice` writes it)
// and a Hugging Face NemotronH folder (`config.json` + `model.safetensors`) hold the same model:
// the spec's architecture fields are NemotronH's config fields and the weights already carry
// NemotronH tensor names. Two things differ:
//
// - Mamba's `mixer.conv1d.weight` is [C, K] in Nestor and [C, 1, K] (a depthwise nn.Conv1d) in
//   Hugging Face; export and import reshape it (the values are the same bytes).
// - A heterogeneous dense model (`architecture.layer_overrides`: layers of one kind with
//   different sizes) has no stock NemotronH form. Its config.json carries every layer's size
//   explicitly in per-layer lists, one entry per layer of the pattern, null for layers of
//   another kind:
//       "intermediate_size_per_layer"      MLP layers' FFN width
//       "num_attention_heads_per_layer"    attention layers' query heads
//       "mamba_num_heads_per_layer"        Mamba layers' heads
//       "mamba_head_dim_per_layer"         Mamba layers' head width
//   and the scalar fields hold the maximum over the layers of their kind. Stock transformers
//   NemotronH reads only the scalar fields, so it cannot load such a model (the weight shapes
//   disagree and it refuses); a serving stack needs a loader that reads the lists. A homogeneous
//   model's config has no lists and loads anywhere.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_HUGGINGFACE_H
#define NESTOR_HUGGINGFACE_H

#include "nestor/Checkpoint.h"
#include "nestor/Spec.h"
#include "nestor/Tensor.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <map>
#include <string>
#include <vector>

namespace nestor::hf {

/// The config.json of the dense spec `dense` (no elastic section). Fails, naming the field,
/// on an elastic spec or layer_overrides that do not have one entry per layer.
llvm::Expected<std::string> nemotronHConfig(const spec::ModelSpec &dense);

/// The dense spec (name and architecture only) described by the NemotronH config text `json`.
/// Errors name `fileName` and the field: invalid JSON, a model_type other than nemotron_h,
/// missing or wrongly typed fields, a pattern with layer kinds Nestor lacks, per-layer lists of
/// the wrong length or with sizes that break a group constraint. The spec validates.
///
/// The spec is in the form `nestor slice` writes: a model whose lists hold one size per layer
/// kind gets no layer_overrides; otherwise every layer's override states all the sizes of its
/// kind (and none of another). A spec in that form, each scalar the maximum over its layers,
/// comes back identical through nemotronHConfig; any other keeps every layer's sizes.
llvm::Expected<spec::ModelSpec> specFromNemotronHConfig(llvm::StringRef json,
                                                        llvm::StringRef fileName);

/// The tensors of a dense spec and their shapes in Nestor's form (conv1d.weight [C, K]), with
/// each layer's own sizes.
std::map<std::string, std::vector<int64_t>> denseTensorShapes(const spec::Architecture &arch);

/// A Hugging Face folder's contents: config.json text and the weights in Hugging Face form.
struct HuggingFaceModel {
  std::string config;
  train::TensorMap tensors;
};

/// A dense Nestor model: its spec and its weights in Nestor's form.
struct DenseModel {
  spec::ModelSpec spec;
  train::TensorMap tensors;
};

/// Reads DIR/spec.pbtxt and DIR/model.safetensors and converts them; fails (bad input) naming
/// the file and the field or tensor when the spec is elastic or a tensor of the spec is missing,
/// extra or has another shape.
llvm::Expected<HuggingFaceModel> loadDenseAsHuggingFace(llvm::StringRef denseDir,
                                                        const ckpt::WeightPolicy &policy = {});

/// Reads HF_DIR/config.json and HF_DIR/model.safetensors (or the shards that
/// model.safetensors.index.json names; F16, BF16 and F64 become float32) and converts them;
/// fails (bad input) naming the file and the field or tensor.
llvm::Expected<DenseModel> loadHuggingFaceAsDense(llvm::StringRef hfDir,
                                                  const ckpt::WeightPolicy &policy = {});

/// Writes OUT/model.safetensors and then OUT/config.json, each atomically (config.json last,
/// so a folder with a config is complete).
llvm::Error writeHuggingFaceFolder(const HuggingFaceModel &model, llvm::StringRef outDir);

/// Writes OUT/model.safetensors and then OUT/spec.pbtxt, each atomically; `source` is named in
/// the spec's header comment.
llvm::Error writeDenseFolder(const DenseModel &model, llvm::StringRef outDir,
                             llvm::StringRef source);

/// The kinds of output folder `nestor export --format hf` and `nestor import-hf` write
/// (ckpt::claimOutputFolder).
constexpr llvm::StringLiteral kExportKind = "hf-export";
constexpr llvm::StringLiteral kImportKind = "hf-import";

/// `nestor export DIR --format hf --out OUT`: checks OUT (ckpt::checkOutputFolder: not the input,
/// not a foreign folder, an earlier export only with `force`), loadDenseAsHuggingFace, claims
/// OUT, writeHuggingFaceFolder. Nothing is written when the input is refused.
llvm::Error exportHuggingFace(llvm::StringRef denseDir, llvm::StringRef outDir, bool force = false,
                              const ckpt::WeightPolicy &policy = {});

/// `nestor import-hf HF_DIR --out OUT`: the same steps with loadHuggingFaceAsDense and
/// writeDenseFolder.
llvm::Error importHuggingFace(llvm::StringRef hfDir, llvm::StringRef outDir, bool force = false,
                              const ckpt::WeightPolicy &policy = {});

} // namespace nestor::hf

#endif // NESTOR_HUGGINGFACE_H
