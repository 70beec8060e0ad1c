//===- JsonFuzzer.cpp - libFuzzer target: the JSON files of a run ---------===//
//
// Any bytes as one of the JSON object files Nestor reads back (state.json, importance.json,
// output markers, shard indexes): the strict reader every one of them goes through.
//
//===----------------------------------------------------------------------===//
#include "nestor/Checkpoint.h"

#include "nlohmann/json.hpp"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  auto object = nestor::ckpt::parseJsonObject(text, "state.json");
  if (!object) {
    llvm::consumeError(object.takeError());
    return 0;
  }
  (void)object->dump();
  return 0;
}
