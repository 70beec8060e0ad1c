//===- CheckpointTest.cpp - safetensors files and atomic writes -----------===//
//
// Round trips are compared bit for bit; the wider dtypes are decoded from bytes built here by
// hand, so the decoder is checked against the format rather than against our own encoder; each
// malformed header must be rejected with a message naming the file and the problem; and the
// atomic write must leave either the old file or the new one, with no temporaries, even when a
// write or the rename fails.
//
//===----------------------------------------------------------------------===//
#include "nestor/Checkpoint.h"
#include "nestor/ParamCount.h"
#include "nestor/Spec.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include "nlohmann/json.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstring>
#include <limits>
#include <sys/resource.h>
#include <unistd.h>

using namespace nestor;
using namespace nestor::ckpt;
using nestor::train::Tensor;
using nestor::train::TensorMap;

namespace {

/// A safetensors image from a header text and a data section.
std::string buildFile(llvm::StringRef header, llvm::StringRef data) {
  char length[8];
  llvm::support::endian::write64le(length, header.size());
  return std::string(length, 8) + header.str() + data.str();
}

template <typename T> void appendLE(std::string &out, T value) {
  char bytes[sizeof(T)];
  if constexpr (sizeof(T) == 2)
    llvm::support::endian::write16le(bytes, value);
  else
    llvm::support::endian::write64le(bytes, value);
  out.append(bytes, sizeof(T));
}

uint64_t bitsOf(double d) {
  uint64_t bits;
  std::memcpy(&bits, &d, sizeof(bits));
  return bits;
}

std::string errorOf(llvm::Error err) {
  return err ? llvm::toString(std::move(err)) : std::string("<success>");
}
template <typename T> std::string errorOf(llvm::Expected<T> value) {
  return value ? std::string("<success>") : llvm::toString(value.takeError());
}

class CheckpointFiles : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("nestor-ckpt-test", dir));
  }
  void TearDown() override { llvm::sys::fs::remove_directories(dir); }

  std::string pathOf(llvm::StringRef name) const {
    llvm::SmallString<256> p(dir);
    llvm::sys::path::append(p, name);
    return std::string(p);
  }

  std::vector<std::string> list(llvm::StringRef directory) const {
    std::vector<std::string> names;
    std::error_code ec;
    for (llvm::sys::fs::directory_iterator it(directory, ec), end; it != end && !ec;
         it.increment(ec))
      names.push_back(llvm::sys::path::filename(it->path()).str());
    EXPECT_FALSE(ec) << ec.message();
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string contentsOf(llvm::StringRef path) const {
    auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                              /*RequiresNullTerminator=*/false);
    EXPECT_TRUE(bool(buffer)) << path.str();
    return buffer ? (*buffer)->getBuffer().str() : std::string();
  }

  llvm::SmallString<256> dir;
};

TensorMap sampleTensors() {
  TensorMap tensors;
  tensors["backbone.embeddings.weight"] = {{2, 3},
                                           {1.0f, -0.0f, 1e-40f /* subnormal */,
                                            std::numeric_limits<float>::infinity(),
                                            std::numeric_limits<float>::max(), -3.14159265f}};
  tensors["backbone.norm.weight"] = {{5}, {0.5f, 0.25f, -7.0f, 123456.789f, 1e-7f}};
  tensors["router.temperature"] = {{}, {3.25f}};
  tensors["empty"] = {{0, 4}, {}};
  return tensors;
}

void expectBitIdentical(const TensorMap &expected, const TensorMap &actual) {
  ASSERT_EQ(expected.size(), actual.size());
  for (const auto &[name, tensor] : expected) {
    auto it = actual.find(name);
    ASSERT_NE(it, actual.end()) << name;
    EXPECT_EQ(it->second.shape, tensor.shape) << name;
    ASSERT_EQ(it->second.data.size(), tensor.data.size()) << name;
    if (tensor.data.empty()) // memcmp of an empty vector's null data() is undefined
      continue;
    EXPECT_EQ(0, std::memcmp(it->second.data.data(), tensor.data.data(),
                             tensor.data.size() * sizeof(float)))
        << name;
  }
}

//===----------------------------------------------------------------------===//
// Encoding
//===----------------------------------------------------------------------===//

TEST_F(CheckpointFiles, RoundTripIsBitExact) {
  TensorMap tensors = sampleTensors();
  Metadata metadata = {{"format", "pt"}, {"step", "1200"}, {"budget", "6B"}};
  std::string path = pathOf("model.safetensors");
  ASSERT_FALSE(writeSafetensors(path, tensors, metadata));

  Metadata readBack = {{"stale", "entry"}};
  llvm::Expected<TensorMap> read = readSafetensors(path, &readBack);
  ASSERT_TRUE(bool(read)) << llvm::toString(read.takeError());
  expectBitIdentical(tensors, *read);
  EXPECT_EQ(readBack, metadata);
}

TEST(Safetensors, HeaderIsJsonAndDataIsAligned) {
  // Names of every length modulo 8 exercise every amount of padding.
  for (int extra = 0; extra < 8; ++extra) {
    TensorMap tensors = sampleTensors();
    tensors[std::string(1 + extra, 'x')] = {{3}, {1, 2, 3}};
    std::string bytes = encodeSafetensors(tensors, {{"k", "v"}});
    ASSERT_GE(bytes.size(), 8u);
    uint64_t headerBytes = llvm::support::endian::read64le(bytes.data());
    EXPECT_EQ((8 + headerBytes) % 8, 0u) << "extra " << extra;

    nlohmann::json header = nlohmann::json::parse(bytes.substr(8, headerBytes));
    ASSERT_TRUE(header.is_object());
    EXPECT_EQ(header["__metadata__"], nlohmann::json({{"k", "v"}}));

    // The ranges tile the data section in name order, which ends the file.
    uint64_t offset = 0;
    for (const auto &[name, tensor] : tensors) {
      const nlohmann::json &entry = header.at(name);
      EXPECT_EQ(entry.at("dtype"), "F32") << name;
      EXPECT_EQ(entry.at("shape").get<std::vector<int64_t>>(), tensor.shape) << name;
      uint64_t end = offset + 4 * tensor.data.size();
      EXPECT_EQ(entry.at("data_offsets"), nlohmann::json({offset, end})) << name;
      offset = end;
    }
    EXPECT_EQ(bytes.size(), 8 + headerBytes + offset);
  }
}

TEST(Safetensors, EmptyMapEncodesAndDecodes) {
  std::string bytes = encodeSafetensors({});
  Metadata metadata = {{"stale", "entry"}};
  llvm::Expected<TensorMap> read = decodeSafetensors(bytes, "empty.safetensors", &metadata);
  ASSERT_TRUE(bool(read)) << llvm::toString(read.takeError());
  EXPECT_TRUE(read->empty());
  EXPECT_TRUE(metadata.empty());
}

TEST_F(CheckpointFiles, WriteRejectsShapeDataMismatch) {
  std::string path = pathOf("bad.safetensors");
  TensorMap tensors = {{"w", {{2, 3}, {1, 2, 3, 4, 5}}}};
  std::string message = errorOf(writeSafetensors(path, tensors));
  EXPECT_NE(message.find(path + ": tensor 'w': shape [2, 3] needs 6 floats but it holds 5"),
            std::string::npos)
      << message;
  EXPECT_TRUE(list(dir).empty());

  message = errorOf(writeSafetensors(path, {{"__metadata__", {{1}, {1}}}}));
  EXPECT_NE(message.find("reserved"), std::string::npos) << message;
}

//===----------------------------------------------------------------------===//
// Decoding other dtypes
//===----------------------------------------------------------------------===//

TEST(Safetensors, DecodesF64F16AndBF16) {
  std::string data;
  for (double d : {0.1, -3.5, 1e300})
    appendLE<uint64_t>(data, bitsOf(d));
  // 1.5, -2.0, 65504 (largest half), 2^-24 (smallest subnormal), 2^-14 * 1023/1024 (largest
  // subnormal), -0, -inf.
  for (uint16_t h : {0x3E00, 0xC000, 0x7BFF, 0x0001, 0x03FF, 0x8000, 0xFC00})
    appendLE<uint16_t>(data, h);
  // 1.0, -3.140625, 2^-133 (a bf16 subnormal), +inf.
  for (uint16_t b : {0x3F80, 0xC049, 0x0001, 0x7F80})
    appendLE<uint16_t>(data, b);
  std::string header = R"({"d":{"dtype":"F64","shape":[3],"data_offsets":[0,24]},)"
                       R"("h":{"dtype":"F16","shape":[7,1],"data_offsets":[24,38]},)"
                       R"("b":{"dtype":"BF16","shape":[2,2],"data_offsets":[38,46]}})";

  llvm::Expected<TensorMap> read = decodeSafetensors(buildFile(header, data), "mixed");
  ASSERT_TRUE(bool(read)) << llvm::toString(read.takeError());
  const TensorMap &t = *read;
  ASSERT_EQ(t.size(), 3u);

  EXPECT_EQ(t.at("d").shape, std::vector<int64_t>({3}));
  EXPECT_EQ(t.at("d").data, std::vector<float>({static_cast<float>(0.1), -3.5f,
                                                std::numeric_limits<float>::infinity()}));

  const std::vector<float> &h = t.at("h").data;
  EXPECT_EQ(t.at("h").shape, std::vector<int64_t>({7, 1}));
  ASSERT_EQ(h.size(), 7u);
  EXPECT_EQ(h[0], 1.5f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], 65504.0f);
  EXPECT_EQ(h[3], std::ldexp(1.0f, -24));
  EXPECT_EQ(h[4], std::ldexp(1023.0f, -24));
  EXPECT_EQ(h[5], 0.0f);
  EXPECT_TRUE(std::signbit(h[5]));
  EXPECT_EQ(h[6], -std::numeric_limits<float>::infinity());

  EXPECT_EQ(t.at("b").shape, std::vector<int64_t>({2, 2}));
  EXPECT_EQ(t.at("b").data, std::vector<float>({1.0f, -3.140625f, std::ldexp(1.0f, -133),
                                                std::numeric_limits<float>::infinity()}));
}

TEST(Safetensors, DecodesEveryHalf) {
  std::string data;
  for (uint32_t h = 0; h <= 0xFFFF; ++h)
    appendLE<uint16_t>(data, static_cast<uint16_t>(h));
  std::string header = R"({"all":{"dtype":"F16","shape":[65536],"data_offsets":[0,131072]}})";
  llvm::Expected<TensorMap> read = decodeSafetensors(buildFile(header, data), "halves");
  ASSERT_TRUE(bool(read)) << llvm::toString(read.takeError());
  const std::vector<float> &values = read->at("all").data;
  ASSERT_EQ(values.size(), 65536u);
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    // The definition of binary16, evaluated in double.
    int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    double magnitude;
    if (exponent == 0)
      magnitude = std::ldexp(mantissa, -24);
    else if (exponent == 31)
      magnitude = mantissa ? std::nan("") : HUGE_VAL;
    else
      magnitude = std::ldexp(1024 + mantissa, exponent - 25);
    float v = values[h];
    if (std::isnan(magnitude)) {
      EXPECT_TRUE(std::isnan(v)) << std::hex << h;
      continue;
    }
    EXPECT_EQ(v, static_cast<float>(sign ? -magnitude : magnitude)) << std::hex << h;
    EXPECT_EQ(std::signbit(v), sign == 1) << std::hex << h;
  }
}

TEST(Safetensors, EmptyRangesNeverOverlap) {
  // Zero-size tensors hold no bytes, so pointing inside another tensor's range is fine.
  std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("e":{"dtype":"F32","shape":[3,0],"data_offsets":[4,4]},)"
                       R"("z":{"dtype":"BF16","shape":[0],"data_offsets":[8,8]}})";
  std::string data(8, '\0');
  llvm::Expected<TensorMap> read = decodeSafetensors(buildFile(header + "   ", data), "e");
  ASSERT_TRUE(bool(read)) << llvm::toString(read.takeError());
  EXPECT_EQ(read->at("e").shape, std::vector<int64_t>({3, 0}));
  EXPECT_TRUE(read->at("e").data.empty());
  EXPECT_EQ(read->at("a").data, std::vector<float>({0.0f, 0.0f}));
}

//===----------------------------------------------------------------------===//
// Malformed files
//===----------------------------------------------------------------------===//

struct Malformed {
  const char *what;
  std::string bytes;
  const char *message;
};

std::string tensorHeader(llvm::StringRef entry) { return ("{\"w\":" + entry + "}").str(); }

std::vector<Malformed> malformedFiles() {
  std::string eightBytes(8, '\0');
  std::string hundredBytes(100, '\0');
  std::string tooLong(8, '\0');
  llvm::support::endian::write64le(tooLong.data(), 1000);
  tooLong += "{}";
  std::string hugeLength(8, '\xff');
  hugeLength += "{}";
  return {
      {"empty file", "", "file is 0 bytes, too short for the 8-byte header length"},
      {"truncated length", std::string("\x02\0\0", 3),
       "file is 3 bytes, too short for the 8-byte header length"},
      {"header past the end", tooLong,
       "header length 1000 runs past the end of the file (10 bytes)"},
      {"length near 2^64", hugeLength, "runs past the end of the file (10 bytes)"},
      {"bad JSON", buildFile(R"({"w": {"dtype": )", ""), "header is not valid JSON"},
      // A number past a double's range: nlohmann throws out_of_range, not parse_error.
      {"overflowing number",
       buildFile(tensorHeader(R"({"dtype":"F32","shape":[1e400],"data_offsets":[0,8]})"),
                 eightBytes),
       "header is not valid JSON: number overflow"},
      {"invalid UTF-8", buildFile("{\"w\xff\":{}}", ""), "header is not valid JSON"},
      {"non-object JSON", buildFile("[1, 2, 3]", ""), "header is a JSON array, not an object"},
      {"repeated tensor", buildFile(R"({"w":{},"w":{}})", ""), "header repeats the key 'w'"},
      {"entry not an object", buildFile(tensorHeader("[1]"), ""),
       "tensor 'w': entry is array, not an object"},
      {"missing dtype",
       buildFile(tensorHeader(R"({"shape":[2],"data_offsets":[0,8]})"), eightBytes),
       "tensor 'w': missing 'dtype'"},
      {"dtype not a string",
       buildFile(tensorHeader(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"), eightBytes),
       "tensor 'w': 'dtype' is number, not a string"},
      {"unknown dtype",
       buildFile(tensorHeader(R"({"dtype":"F17","shape":[2],"data_offsets":[0,8]})"), eightBytes),
       "tensor 'w': unsupported dtype 'F17'"},
      {"integer dtype",
       buildFile(tensorHeader(R"({"dtype":"I64","shape":[1],"data_offsets":[0,8]})"), eightBytes),
       "tensor 'w': unsupported dtype 'I64'"},
      {"missing shape",
       buildFile(tensorHeader(R"({"dtype":"F32","data_offsets":[0,8]})"), eightBytes),
       "tensor 'w': missing 'shape'"},
      {"shape not an array",
       buildFile(tensorHeader(R"({"dtype":"F32","shape":2,"data_offsets":[0,8]})"), eightBytes),
       "tensor 'w': 'shape' is number, not an array"},
      {"negative extent",
       buildFile(tensorHeader(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), eightBytes),
       "tensor 'w': 'shape' [-2] has an entry that is not a non-negative integer"},
      {"fractional extent",
       buildFile(tensorHeader(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"), eightBytes),
       "tensor 'w': 'shape' [2.0] has an entry that is not a non-negative integer"},
      {"overflowing shape",
       buildFile(tensorHeader(R"({"dtype":"F32","shape":[4294967296,4294967296],)"
                              R"("data_offsets":[0,8]})"),
                 eightBytes),
       "tensor 'w': shape [4294967296, 4294967296] is too large"},
      {"missing offsets", buildFile(tensorHeader(R"({"dtype":"F32","shape":[2]})"), eightBytes),
       "tensor 'w': missing 'data_offsets'"},
      {"one offset",
       buildFile(tensorHeader(R"({"dtype":"F32","shape":[2],"data_offsets":[8]})"), eightBytes),
       "tensor 'w': 'data_offsets' [8] is not a pair of non-negative integers"},
      {"negative offset",
       buildFile(tensorHeader(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"), eightBytes),
       "tensor 'w': 'data_offsets' [-8,0] is not a pair of non-negative integers"},
      {"reversed offsets",
       buildFile(tensorHeader(R"({"dtype":"F32","shape":[0],"data_offsets":[8,0]})"), eightBytes),
       "tensor 'w': data_offsets [8, 0] end before they begin"},
      {"offsets out of range",
       buildFile(tensorHeader(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"), eightBytes),
       "tensor 'w': data_offsets [0, 16] run past the 8-byte data section"},
      {"shape/offset mismatch",
       buildFile(tensorHeader(R"({"dtype":"F32","shape":[4,8],"data_offsets":[0,100]})"),
                 hundredBytes),
       "tensor 'w': data_offsets [0, 100] hold 25 floats but shape [4, 8] needs 32"},
      {"partial element",
       buildFile(tensorHeader(R"({"dtype":"F64","shape":[2],"data_offsets":[0,12]})"),
                 hundredBytes),
       "tensor 'w': data_offsets [0, 12] hold 12 bytes but shape [2] needs 2 doubles (16 "
       "bytes)"},
      {"scalar with no data",
       buildFile(tensorHeader(R"({"dtype":"BF16","shape":[],"data_offsets":[0,0]})"), eightBytes),
       "tensor 'w': data_offsets [0, 0] hold 0 BF16 values but shape [] needs 1"},
      {"overlapping ranges",
       buildFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                 std::string(12, '\0')),
       "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]"},
      {"non-string metadata", buildFile(R"({"__metadata__":{"format":"pt","step":3}})", ""),
       "'__metadata__' value for key 'step' is number, not a string"},
      {"metadata not an object", buildFile(R"({"__metadata__":"pt"})", ""),
       "'__metadata__' is string, not an object"},
  };
}

TEST(Safetensors, RejectsMalformedFiles) {
  for (const Malformed &m : malformedFiles()) {
    Metadata metadata = {{"stale", "entry"}};
    std::string message = errorOf(decodeSafetensors(m.bytes, "run/model.safetensors", &metadata));
    EXPECT_EQ(message.rfind("run/model.safetensors: ", 0), 0u) << m.what << ": " << message;
    EXPECT_NE(message.find(m.message), std::string::npos)
        << m.what << ": got \"" << message << "\", want \"" << m.message << "\"";
    // A failed decode leaves no half-read metadata behind.
    EXPECT_TRUE(metadata.empty()) << m.what;
  }
}

TEST_F(CheckpointFiles, ReadErrorsNameThePath) {
  std::string missing = pathOf("missing.safetensors");
  std::string message = errorOf(readSafetensors(missing));
  EXPECT_EQ(message.rfind(missing + ": cannot read: ", 0), 0u) << message;

  std::string garbage = pathOf("garbage.safetensors");
  ASSERT_FALSE(writeFileAtomic(garbage, "abc"));
  message = errorOf(readSafetensors(garbage));
  EXPECT_EQ(message, garbage + ": file is 3 bytes, too short for the 8-byte header length");
}

//===----------------------------------------------------------------------===//
// Atomic writes
//===----------------------------------------------------------------------===//

TEST_F(CheckpointFiles, AtomicWriteReplacesAndLeavesNoTemporaries) {
  std::string path = pathOf("state.bin");
  ASSERT_FALSE(writeFileAtomic(path, "old contents, longer than the new ones"));
  EXPECT_EQ(contentsOf(path), "old contents, longer than the new ones");
  ASSERT_FALSE(writeFileAtomic(path, std::string("new\0bytes", 9)));
  EXPECT_EQ(contentsOf(path), std::string("new\0bytes", 9));
  ASSERT_FALSE(writeFileAtomic(pathOf("other.bin"), ""));
  EXPECT_EQ(contentsOf(pathOf("other.bin")), "");
  EXPECT_EQ(list(dir), std::vector<std::string>({"other.bin", "state.bin"}));
}

TEST_F(CheckpointFiles, AtomicWriteWithPercentSignsInThePath) {
  // Budget names like "50%" end up in folder and file names; '%' is not a placeholder.
  std::string sub = pathOf("run-50%");
  ASSERT_FALSE(llvm::sys::fs::create_directory(sub));
  std::string path = sub + "/model-50%%.bin";
  ASSERT_FALSE(writeFileAtomic(path, "weights")) << errorOf(writeFileAtomic(path, "weights"));
  EXPECT_EQ(contentsOf(path), "weights");
  EXPECT_EQ(list(sub), std::vector<std::string>({"model-50%%.bin"}));
}

TEST_F(CheckpointFiles, AtomicWriteToBareFileName) {
  // A path with no directory part is written next to the working directory's other files.
  llvm::SmallString<256> cwd;
  ASSERT_FALSE(llvm::sys::fs::current_path(cwd));
  ASSERT_FALSE(llvm::sys::fs::set_current_path(dir));
  llvm::Error err = writeFileAtomic("bare.bin", "bare");
  ASSERT_FALSE(llvm::sys::fs::set_current_path(cwd));
  ASSERT_FALSE(err) << llvm::toString(std::move(err));
  EXPECT_EQ(contentsOf(pathOf("bare.bin")), "bare");
  EXPECT_EQ(list(dir), std::vector<std::string>({"bare.bin"}));
}

TEST_F(CheckpointFiles, AtomicWriteIntoMissingDirectoryFails) {
  std::string path = pathOf("no/such/dir/state.bin");
  std::string message = errorOf(writeFileAtomic(path, "x"));
  EXPECT_EQ(message.rfind(path + ": cannot create a temporary file", 0), 0u) << message;
  EXPECT_TRUE(list(dir).empty());
}

TEST_F(CheckpointFiles, AtomicWriteOverDirectoryFailsAndCleansUp) {
  // The temporary is created and written before the rename fails, so this checks that the
  // failure path removes it.
  std::string target = pathOf("target");
  ASSERT_FALSE(llvm::sys::fs::create_directory(target));
  ASSERT_FALSE(writeFileAtomic(pathOf("target/keep"), "kept"));
  std::string message = errorOf(writeFileAtomic(target, "new"));
  EXPECT_EQ(message.rfind(target + ": cannot rename", 0), 0u) << message;
  EXPECT_EQ(list(dir), std::vector<std::string>({"target"}));
  EXPECT_EQ(list(target), std::vector<std::string>({"keep"}));
  EXPECT_EQ(contentsOf(pathOf("target/keep")), "kept");
}

TEST_F(CheckpointFiles, AtomicWriteFailureKeepsOldFile) {
  std::string path = pathOf("state.bin");
  ASSERT_FALSE(writeFileAtomic(path, "old"));

  // A file-size limit makes write() fail with EFBIG part way through, as a full disk would;
  // unlike permissions it also holds for root. SIGXFSZ would otherwise kill the process.
  struct rlimit saved;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  struct rlimit limited = saved;
  limited.rlim_cur = 4096;
  auto savedHandler = std::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limited), 0);
  llvm::Error err = writeFileAtomic(path, std::string(1 << 16, 'n'));
  setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, savedHandler);

  std::string message = errorOf(std::move(err));
  EXPECT_EQ(message.rfind(path + ": cannot write temporary file", 0), 0u) << message;
  EXPECT_EQ(contentsOf(path), "old");
  EXPECT_EQ(list(dir), std::vector<std::string>({"state.bin"}));
}

} // namespace

//===----------------------------------------------------------------------===//
// JSON objects and output folders
//===----------------------------------------------------------------------===//

TEST(JsonObject, ErrorsNameTheFileAndNeverThrow) {
  EXPECT_EQ(errorOf(parseJsonObject(R"({"step": 1e400})", "run/state.json")),
            "run/state.json: not valid JSON: number overflow parsing '1e400'");
  EXPECT_EQ(errorOf(parseJsonObject(R"({"a": 1, "a": 2})", "c.json")),
            "c.json: the key 'a' appears twice");
  EXPECT_EQ(errorOf(parseJsonObject("[1]", "c.json")), "c.json: a JSON array, not an object");
  auto ok = parseJsonObject(R"({"x": -1e308})", "c.json");
  ASSERT_TRUE(static_cast<bool>(ok)) << llvm::toString(ok.takeError());
  EXPECT_EQ((*ok)["x"].get<double>(), -1e308);
}

/// Every case of the policy (nestor/Checkpoint.h): what may be written, what is refused, and
/// that a refusal writes nothing.
TEST_F(CheckpointFiles, OutputFoldersAreClaimedOnlyWhenNestorMayWriteThere) {
  std::string input = pathOf("run"), out = pathOf("out");
  ASSERT_FALSE(llvm::sys::fs::create_directories(input));
  ASSERT_FALSE(static_cast<bool>(writeFileAtomic(input + "/model.safetensors", "weights")));
  std::vector<std::string> inputs = {input};

  // A missing folder is created and marked.
  ASSERT_EQ(errorOf(claimOutputFolder(out, "slice", "nestor slice", inputs, false)), "<success>");
  EXPECT_EQ(outputKind(out), std::optional<std::string>("slice"));
  // The same kind again: only with --force.
  ASSERT_FALSE(static_cast<bool>(writeFileAtomic(out + "/spec.pbtxt", "old")));
  EXPECT_EQ(errorOf(checkOutputFolder(out, "slice", inputs, false)),
            "--out: " + out +
                " already holds a 'slice' output; pass --force to replace it "
                "(nothing was written)");
  EXPECT_EQ(errorOf(claimOutputFolder(out, "slice", "nestor slice", inputs, true)), "<success>");
  // Another kind: never, not even with --force.
  EXPECT_EQ(errorOf(claimOutputFolder(out, "hf-export", "nestor export", inputs, true)),
            "--out: " + out +
                " holds a 'slice' output, not a 'hf-export' one; choose another "
                "folder (nothing was written)");
  EXPECT_EQ(outputKind(out), std::optional<std::string>("slice"));

  // The input itself, a folder that holds it, and a path through a link to it.
  EXPECT_EQ(errorOf(claimOutputFolder(input, "slice", "nestor slice", inputs, true)),
            "--out: " + input + " is the input " + input +
                "; writing there would replace it (nothing was written)");
  EXPECT_NE(errorOf(claimOutputFolder(std::string(dir), "slice", "nestor slice", inputs, true))
                .find(" holds the input " + input),
            std::string::npos);
  ASSERT_FALSE(llvm::sys::fs::create_link(input, pathOf("link")));
  EXPECT_NE(errorOf(claimOutputFolder(pathOf("link"), "slice", "nestor slice", inputs, true))
                .find(" is the input "),
            std::string::npos);
  EXPECT_EQ(list(input), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(contentsOf(input + "/model.safetensors"), "weights");

  // A user's folder with files Nestor did not write, and a file where a folder should be.
  std::string mine = pathOf("mine");
  ASSERT_FALSE(llvm::sys::fs::create_directories(mine));
  ASSERT_FALSE(static_cast<bool>(writeFileAtomic(mine + "/notes.txt", "mine")));
  EXPECT_EQ(errorOf(claimOutputFolder(mine, "slice", "nestor slice", inputs, true)),
            "--out: " + mine +
                " is not empty and Nestor did not write it; choose another "
                "folder (nothing was written)");
  EXPECT_EQ(list(mine), std::vector<std::string>{"notes.txt"});
  EXPECT_NE(errorOf(claimOutputFolder(mine + "/notes.txt", "slice", "nestor slice", {}, true))
                .find("is a file, not a folder"),
            std::string::npos);
  // An empty folder is used as it is.
  ASSERT_FALSE(llvm::sys::fs::create_directories(pathOf("empty")));
  EXPECT_EQ(errorOf(claimOutputFolder(pathOf("empty"), "run", "nestor train", inputs, false)),
            "<success>");
  // Output files: not an input, not a folder.
  EXPECT_NE(
      errorOf(checkOutputFile(input + "/model.safetensors", {input + "/model.safetensors"}, "-o"))
          .find("-o: "),
      std::string::npos);
  EXPECT_NE(errorOf(checkOutputFile(input, {}, "-o")).find("is a folder, not a file"),
            std::string::npos);
  EXPECT_EQ(errorOf(checkOutputFile(pathOf("new.bin"), inputs, "-o")), "<success>");
}

//===----------------------------------------------------------------------===//
// The weight policy
//===----------------------------------------------------------------------===//

/// The parameters of a small hybrid, each filled with 0.5.
TensorMap weightsOf(const spec::ModelSpec &spec) {
  TensorMap tensors;
  for (const spec::ParamShape &p : spec::parameterShapes(spec)) {
    int64_t n = 1;
    for (int64_t d : p.shape)
      n *= d;
    tensors[p.name] = {p.shape, std::vector<float>(static_cast<size_t>(n), 0.5f)};
  }
  return tensors;
}

spec::ModelSpec smallHybrid(bool elastic) {
  std::string text = R"(name: "w"
architecture {
  hybrid_override_pattern: "M*-" hidden_size: 16 intermediate_size: 24 mamba_num_heads: 4
  mamba_head_dim: 4 n_groups: 2 ssm_state_size: 4 conv_kernel: 4 num_attention_heads: 4
  num_key_value_heads: 2 head_dim: 4 vocab_size: 32
})";
  if (elastic)
    text += R"(
elastic {
  budgets { name: "full" fraction: 1.0 } budgets { name: "half" fraction: 0.5 }
  intermediate_size { choices: [24, 12] heterogeneous: true } max_dropped_layers: 1
})";
  auto spec = spec::parseSpecText(text, "w.pbtxt");
  EXPECT_TRUE(static_cast<bool>(spec)) << llvm::toString(spec.takeError());
  return spec ? *spec : spec::ModelSpec();
}

TEST(WeightPolicy, ShapesUnknownTensorsAndNonFiniteValues) {
  spec::ModelSpec dense = smallHybrid(false), elastic = smallHybrid(true);
  TensorMap good = weightsOf(elastic);
  // The elastic spec's parameters are the parent's and the routers' (one fc2 row per MLP
  // layer and choice; depth: no drop or one).
  EXPECT_EQ(good.at("routers.intermediate_size.fc2.weight").shape[0], 2);
  EXPECT_EQ(good.at("routers.depth.fc2.bias").shape, std::vector<int64_t>{2});
  TensorMap copy = good;
  EXPECT_EQ(errorOf(checkModelWeights(copy, elastic, "m.safetensors", {})), "<success>");

  auto check = [&](TensorMap t, const spec::ModelSpec &s, WeightPolicy policy = {}) {
    return errorOf(checkModelWeights(t, s, "m.safetensors", policy));
  };
  TensorMap missing = good;
  missing.erase("backbone.layers.2.mixer.up_proj.weight");
  EXPECT_EQ(
      check(missing, elastic),
      "m.safetensors: tensor 'backbone.layers.2.mixer.up_proj.weight' of the spec is missing");
  TensorMap transposed = good;
  transposed["backbone.layers.2.mixer.up_proj.weight"].shape = {16, 24};
  EXPECT_EQ(check(transposed, elastic),
            "m.safetensors: tensor 'backbone.layers.2.mixer.up_proj.weight' has shape [16, 24] "
            "but the spec says [24, 16] (it is transposed)");

  // The routers are not tensors of the dense model: refused, or dropped when allowed.
  EXPECT_EQ(check(good, dense),
            "m.safetensors: tensor 'routers.depth.fc1.bias' is not a tensor of the spec (a dense "
            "model has no routers; is this an elastic run's checkpoint?) (nor are 7 more); "
            "--allow-unknown-tensors drops such tensors");
  TensorMap dropped = good;
  EXPECT_EQ(errorOf(checkModelWeights(dropped, dense, "m.safetensors", {true, false})),
            "<success>");
  EXPECT_EQ(dropped.size(), weightsOf(dense).size());

  // A NaN at row 3, column 5 of a [24, 16] matrix, and an infinity after it.
  TensorMap nan = good;
  std::vector<float> &up = nan["backbone.layers.2.mixer.up_proj.weight"].data;
  up[3 * 16 + 5] = std::numeric_limits<float>::quiet_NaN();
  up[100] = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(check(nan, elastic),
            "m.safetensors: tensor 'backbone.layers.2.mixer.up_proj.weight' holds NaN at index "
            "53 [3, 5] (2 of its 384 values are not finite); --allow-non-finite loads it anyway");
  EXPECT_EQ(check(nan, elastic, {false, true}), "<success>");
}

TEST_F(CheckpointFiles, LoadModelWeightsNamesTheFile) {
  spec::ModelSpec dense = smallHybrid(false);
  TensorMap tensors = weightsOf(dense);
  tensors["backbone.norm_f.weight"].data[7] = std::numeric_limits<float>::infinity();
  ASSERT_FALSE(static_cast<bool>(writeSafetensors(pathOf("m.safetensors"), tensors)));
  EXPECT_EQ(errorOf(loadModelWeights(pathOf("m.safetensors"), dense)),
            pathOf("m.safetensors") +
                ": tensor 'backbone.norm_f.weight' holds +Inf at index 7 [7] (1 of its 16 values "
                "are not finite); --allow-non-finite loads it anyway");
  auto loaded = loadModelWeights(pathOf("m.safetensors"), dense, {false, true});
  ASSERT_TRUE(static_cast<bool>(loaded)) << llvm::toString(loaded.takeError());
  EXPECT_TRUE(std::isinf(loaded->at("backbone.norm_f.weight").data[7]));
}
