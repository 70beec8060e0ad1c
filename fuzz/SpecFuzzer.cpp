//===- SpecFuzzer.cpp - libFuzzer target: spec parser and validator -------===//
//
// Any bytes as a spec file: parse (protobuf text format), validate, and for a valid spec every
// closed-form size the other commands derive from it (parameter count, parameter shapes).
// Bad input must give an llvm::Error, never a crash, a hang or unbounded memory.
//
//===----------------------------------------------------------------------===//
#include "nestor/ParamCount.h"
#include "nestor/Spec.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  auto spec = nestor::spec::parseSpecText(text, "fuzz.pbtxt");
  if (!spec) {
    llvm::consumeError(spec.takeError());
    return 0;
  }
  if (llvm::Error err = nestor::spec::validateSpec(*spec, "fuzz.pbtxt")) {
    llvm::consumeError(std::move(err));
    return 0;
  }
  (void)nestor::spec::countParams(nestor::spec::fixedSizes(*spec),
                                  nestor::spec::parentSizes(*spec));
  (void)nestor::spec::parameterShapes(*spec);
  return 0;
}
