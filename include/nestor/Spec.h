//===- Spec.h - Loading and validating Nestor model specs -------*- C++ -*-===//
//
// A model spec is a protobuf text file (schema: lib/spec/nestor_spec.proto). Loading parses it,
// fills documented defaults, and validates every structural rule of METHOD.md §1-§2, returning a
// diagnostic that names the file and line:column (parse errors) or the offending field (semantic
// errors).
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_SPEC_H
#define NESTOR_SPEC_H

#include "lib/spec/nestor_spec.pb.h"
#include "nestor/ParamFormula.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace nestor::spec {

/// Returns the layer kinds of a pattern; fails on any character other than 'M', '*', '-'.
llvm::Expected<std::vector<LayerKind>> parsePattern(llvm::StringRef pattern);

char layerKindChar(LayerKind kind);
llvm::StringRef layerKindName(LayerKind kind);

/// Parses spec text. `fileName` is only used in diagnostics ("file:line:col: message").
llvm::Expected<ModelSpec> parseSpecText(llvm::StringRef text, llvm::StringRef fileName);

/// Checks every structural rule; the error names `fileName` and the offending field path, e.g.
/// "tiny.pbtxt: elastic.mamba_num_heads.choices[1]: 6 is not a multiple of n_groups (4)".
llvm::Error validateSpec(const ModelSpec &spec, llvm::StringRef fileName);

/// Reads, parses and validates a spec file. Missing, empty or binary files are errors.
llvm::Expected<ModelSpec> loadSpecFile(llvm::StringRef path);

/// Where a path named in a spec (e.g. `data.text_files`) lies: relative paths are relative to the
/// directory of the spec file, so a spec and its data move together.
std::string resolveSpecRelativePath(llvm::StringRef specPath, llvm::StringRef path);

/// Values of optional fields with their documented defaults applied.
double layerNormEpsilon(const Architecture &arch);
int64_t routerHiddenSize(const Elastic &elastic);
double routerLeakyReluSlope(const Elastic &elastic);

} // namespace nestor::spec

#endif // NESTOR_SPEC_H
