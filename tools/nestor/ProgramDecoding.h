//===- ProgramDecoding.h - A compiled decode step over loaded weights -*- C++ -*-===//
//
// What `nestor generate` and `nestor bench --decode` share: an engine::ProgramDecoder of the
// compiled inference entry points (`@decode_step`, `@prefill_<C>`) reading the float32 weights
// of a checkpoint in place.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_TOOLS_NESTOR_PROGRAMDECODING_H
#define NESTOR_TOOLS_NESTOR_PROGRAMDECODING_H

#include "engine/decode/ProgramDecoder.h"
#include "nestor/Trainer.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace nestor::cli {

/// A ProgramDecoder of the entry points `functions` (compileInference; a decode step alone
/// converts) reading `weights` (which must outlive it) at the router `choices` (axis -> chosen
/// index per row; none: the parent's sizes).
llvm::Expected<std::unique_ptr<engine::ProgramDecoder>>
programDecoder(llvm::ArrayRef<program::Function> functions, const train::TensorMap &weights,
               const std::map<std::string, std::vector<int64_t>> &choices);

} // namespace nestor::cli

#endif // NESTOR_TOOLS_NESTOR_PROGRAMDECODING_H
