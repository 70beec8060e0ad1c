//===- ByteTokenizer.h - One token per byte ----------------------*- C++ -*-===//
//
// The byte tokenizer (vocabulary 256): a byte's token is its value; the control bytes 0x01 and
// 0x02, which the data generator never writes, mark the start and end of a document, and kPad
// (0) fills the end of evaluation rows. Standard library only: the runtime's executables
// tokenize with it too.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_BYTETOKENIZER_H
#define NESTOR_BYTETOKENIZER_H

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nestor::data {

constexpr int32_t kPad = 0, kBos = 1, kEos = 2;
constexpr int32_t kByteVocabSize = 256;

inline std::vector<int32_t> encodeBytes(std::string_view text) {
  std::vector<int32_t> tokens;
  tokens.reserve(text.size());
  for (unsigned char c : text)
    tokens.push_back(c);
  return tokens;
}

/// Bytes back to text; kBos/kEos/kPad and tokens outside the byte range are dropped.
inline std::string decodeBytes(const std::vector<int32_t> &tokens) {
  std::string text;
  text.reserve(tokens.size());
  for (int32_t t : tokens)
    if (t != kPad && t != kBos && t != kEos && t >= 0 && t < kByteVocabSize)
      text.push_back(static_cast<char>(t));
  return text;
}

} // namespace nestor::data

#endif // NESTOR_BYTETOKENIZER_H
