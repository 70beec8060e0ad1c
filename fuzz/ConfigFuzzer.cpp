//===- ConfigFuzzer.cpp - libFuzzer target: config.json importer ----------===//
//
// Any bytes as a Hugging Face config.json (`nestor import-hf`): the strict JSON reader, the
// Python float literals, every field check, and the spec validator behind them.
//
//===----------------------------------------------------------------------===//
#include "nestor/HuggingFace.h"
#include "nestor/ParamCount.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  auto spec = nestor::hf::specFromNemotronHConfig(text, "config.json");
  if (!spec) {
    llvm::consumeError(spec.takeError());
    return 0;
  }
  (void)nestor::spec::parameterShapes(*spec);
  return 0;
}
