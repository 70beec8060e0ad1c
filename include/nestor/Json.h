//===- Json.h - Strict JSON parsing for the files Nestor reads ---*- C++ -*-===//
//
// nlohmann::json keeps the last of repeated keys without a word; in a checkpoint header or a
// model config a repeated key is ambiguous (which did the writer mean?), so the readers parse
// through here and refuse it, each with its own message. Standard library and nlohmann only:
// the runtime's weights reader (engine/weights) uses it too.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_JSON_H
#define NESTOR_JSON_H

#include "nlohmann/json.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace nestor::json {

struct StrictParse {
  nlohmann::json value;
  /// The parser's message on invalid JSON (bad syntax, or a number that overflows a double),
  /// without nlohmann's "[json.exception...] " prefix.
  std::optional<std::string> syntaxError;
  /// The first key that appears twice within one object.
  std::optional<std::string> repeatedKey;
};

/// Parses `text`; never throws.
StrictParse parseStrict(std::string_view text);

} // namespace nestor::json

#endif // NESTOR_JSON_H
