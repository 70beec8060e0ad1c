//===- Checkpoint.cpp - safetensors files and atomic writes ---------------===//
//
// The decoder treats its input as untrusted: a checkpoint may be truncated by a full disk,
// hand-edited, or come from another tool, so every length, offset and shape is checked before
// it is used and each error names the file and the tensor it is about.
//
//===----------------------------------------------------------------------===//
#include "nestor/Checkpoint.h"

#include "nestor/Json.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include "nlohmann/json.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <optional>
#include <unistd.h>

using namespace nestor;
using namespace nestor::ckpt;
using nestor::train::Tensor;
using nestor::train::TensorMap;

namespace {

constexpr llvm::StringLiteral kMetadataKey = "__metadata__";
/// Real headers are kilobytes; the cap keeps a corrupt length field from making us parse (and
/// allocate for) an arbitrarily large "header".
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

llvm::Error errorAt(llvm::StringRef name, const llvm::Twine &message) {
  return llvm::createStringError(std::make_error_code(std::errc::invalid_argument),
                                 name + ": " + message);
}

llvm::Error ioError(llvm::StringRef path, const llvm::Twine &what, std::error_code ec) {
  return llvm::createStringError(ec, path + ": " + what + ": " + ec.message());
}

std::error_code lastError() { return std::error_code(errno, std::generic_category()); }

/// Writes all of `bytes`, retrying short writes and EINTR, which POSIX write allows.
std::error_code writeAll(int fd, llvm::StringRef bytes) {
  const char *p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return lastError();
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return {};
}

/// Makes the rename itself durable: without it a crash can forget the new directory entry.
std::error_code syncDirectory(llvm::StringRef dir) {
  int fd = ::open(dir.str().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return lastError();
  std::error_code ec;
  // Some file systems cannot fsync a directory (EINVAL); they have nothing more to flush.
  if (::fsync(fd) != 0 && errno != EINVAL)
    ec = lastError();
  ::close(fd);
  return ec;
}

/// The element count of `shape`, or nullopt if it is negative or overflows.
std::optional<uint64_t> elementCount(llvm::ArrayRef<int64_t> shape) {
  // A zero anywhere makes the tensor empty whatever the other extents are, so overflow among
  // them is not an error.
  if (llvm::is_contained(shape, 0))
    return 0;
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0 || count > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d))
      return std::nullopt;
    count *= static_cast<uint64_t>(d);
  }
  return count;
}

/// Why `tensor` cannot be encoded, or an empty string.
std::string encodeProblem(const std::string &name, const Tensor &tensor) {
  if (name == kMetadataKey)
    return "tensor name '" + name + "' is reserved for the metadata";
  std::optional<uint64_t> count = elementCount(tensor.shape);
  if (!count)
    return "tensor '" + name + "': invalid shape " + shapeString(tensor.shape);
  if (*count != tensor.data.size())
    return "tensor '" + name + "': shape " + shapeString(tensor.shape) + " needs " +
           std::to_string(*count) + " floats but it holds " + std::to_string(tensor.data.size());
  return {};
}

//===----------------------------------------------------------------------===//
// Element decoding
//===----------------------------------------------------------------------===//

float floatFromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

/// IEEE binary16 to binary32. Every half is exactly representable as a float, so this is a
/// re-encoding of the exponent and mantissa, not a rounding.
float halfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h >> 15) << 31;
  uint32_t exponent = (h >> 10) & 0x1f;
  uint32_t mantissa = h & 0x3ff;
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24.
    float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1f) // Infinity or NaN; keep the NaN payload.
    return floatFromBits(sign | 0x7f800000u | (mantissa << 13));
  return floatFromBits(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
}

/// bfloat16 is the top half of a binary32.
float bfloat16ToFloat(uint16_t b) { return floatFromBits(static_cast<uint32_t>(b) << 16); }

struct DType {
  llvm::StringLiteral name;
  unsigned bytes;
  /// How the mismatch message counts elements of this type.
  llvm::StringLiteral noun;
  float (*load)(const char *);
};

const DType kDTypes[] = {
    {"F32", 4, "floats",
     [](const char *p) { return floatFromBits(llvm::support::endian::read32le(p)); }},
    {"F64", 8, "doubles",
     [](const char *p) {
       uint64_t bits = llvm::support::endian::read64le(p);
       double d;
       std::memcpy(&d, &bits, sizeof(d));
       return static_cast<float>(d);
     }},
    {"F16", 2, "F16 values",
     [](const char *p) { return halfToFloat(llvm::support::endian::read16le(p)); }},
    {"BF16", 2, "BF16 values",
     [](const char *p) { return bfloat16ToFloat(llvm::support::endian::read16le(p)); }},
};

const DType *lookupDType(llvm::StringRef name) {
  for (const DType &t : kDTypes)
    if (t.name == name)
      return &t;
  return nullptr;
}

/// An integer that fits in int64/uint64 without a sign, from a JSON number.
std::optional<uint64_t> nonNegativeInteger(const nlohmann::json &value) {
  if (value.is_number_unsigned())
    return value.get<uint64_t>();
  if (value.is_number_integer() && value.get<int64_t>() >= 0)
    return static_cast<uint64_t>(value.get<int64_t>());
  return std::nullopt;
}

struct Entry {
  std::string name;
  const DType *dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

llvm::Expected<Entry> parseEntry(llvm::StringRef file, const std::string &name,
                                 const nlohmann::json &info, uint64_t dataBytes) {
  std::string where = "tensor '" + name + "': ";
  if (!info.is_object())
    return errorAt(file, where + "entry is " + info.type_name() + ", not an object");

  auto dtypeIt = info.find("dtype");
  if (dtypeIt == info.end())
    return errorAt(file, where + "missing 'dtype'");
  if (!dtypeIt->is_string())
    return errorAt(file, where + "'dtype' is " + dtypeIt->type_name() + ", not a string");
  std::string dtypeName = dtypeIt->get<std::string>();
  const DType *dtype = lookupDType(dtypeName);
  if (!dtype)
    return errorAt(file, where + "unsupported dtype '" + dtypeName +
                             "' (Nestor reads F32, F64, F16 and BF16)");

  auto shapeIt = info.find("shape");
  if (shapeIt == info.end())
    return errorAt(file, where + "missing 'shape'");
  if (!shapeIt->is_array())
    return errorAt(file, where + "'shape' is " + shapeIt->type_name() + ", not an array");
  std::vector<int64_t> shape;
  for (const nlohmann::json &d : *shapeIt) {
    std::optional<uint64_t> extent = nonNegativeInteger(d);
    if (!extent || *extent > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return errorAt(file, where + "'shape' " + shapeIt->dump() +
                               " has an entry that is not a non-negative integer");
    shape.push_back(static_cast<int64_t>(*extent));
  }

  auto offsetsIt = info.find("data_offsets");
  if (offsetsIt == info.end())
    return errorAt(file, where + "missing 'data_offsets'");
  std::optional<uint64_t> begin, end;
  if (offsetsIt->is_array() && offsetsIt->size() == 2) {
    begin = nonNegativeInteger((*offsetsIt)[0]);
    end = nonNegativeInteger((*offsetsIt)[1]);
  }
  if (!begin || !end)
    return errorAt(file, where + "'data_offsets' " + offsetsIt->dump() +
                             " is not a pair of non-negative integers");
  std::string range = "[" + std::to_string(*begin) + ", " + std::to_string(*end) + "]";
  if (*begin > *end)
    return errorAt(file, where + "data_offsets " + range + " end before they begin");
  if (*end > dataBytes)
    return errorAt(file, where + "data_offsets " + range + " run past the " +
                             std::to_string(dataBytes) + "-byte data section");

  uint64_t held = *end - *begin;
  std::optional<uint64_t> needed = elementCount(shape);
  if (!needed || *needed > std::numeric_limits<uint64_t>::max() / dtype->bytes)
    return errorAt(file, where + "shape " + shapeString(shape) + " is too large");
  if (held != *needed * dtype->bytes) {
    std::string noun = dtype->noun.str();
    if (held % dtype->bytes == 0)
      return errorAt(file, where + "data_offsets " + range + " hold " +
                               std::to_string(held / dtype->bytes) + " " + noun + " but shape " +
                               shapeString(shape) + " needs " + std::to_string(*needed));
    return errorAt(file, where + "data_offsets " + range + " hold " + std::to_string(held) +
                             " bytes but shape " + shapeString(shape) + " needs " +
                             std::to_string(*needed) + " " + noun + " (" +
                             std::to_string(*needed * dtype->bytes) + " bytes)");
  }
  return Entry{name, dtype, std::move(shape), *begin, *end};
}

llvm::Error parseMetadata(llvm::StringRef file, const nlohmann::json &value, Metadata *metadata) {
  if (!value.is_object())
    return errorAt(file, llvm::Twine("'") + kMetadataKey + "' is " + value.type_name() +
                             ", not an object");
  Metadata parsed;
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (!it->is_string())
      return errorAt(file, llvm::Twine("'") + kMetadataKey + "' value for key '" + it.key() +
                               "' is " + it->type_name() + ", not a string");
    parsed[it.key()] = it->get<std::string>();
  }
  if (metadata)
    *metadata = std::move(parsed);
  return llvm::Error::success();
}

} // namespace

//===----------------------------------------------------------------------===//
// Atomic writes
//===----------------------------------------------------------------------===//

llvm::Expected<std::string> nestor::ckpt::createTempFileBeside(llvm::StringRef path, int *fd) {
  llvm::StringRef dir = llvm::sys::path::parent_path(path);
  if (dir.empty())
    dir = ".";
  llvm::StringRef fileName = llvm::sys::path::filename(path);
  // Same directory as the target so the rename never crosses file systems; the random suffix
  // keeps concurrent writers (and stale leftovers of a crashed one) from colliding. The name is
  // built here rather than by createUniqueFile, which takes every '%' of the path (a budget
  // named "50%" in a folder name, say) for a placeholder.
  for (int attempt = 0;; ++attempt) {
    uint64_t r = (uint64_t(llvm::sys::Process::GetRandomNumber()) << 32) ^
                 llvm::sys::Process::GetRandomNumber();
    std::string temp =
        (dir + "/." + fileName + ".tmp-" + llvm::utohexstr(r, /*LowerCase=*/true)).str();
    int opened = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (opened >= 0) {
      if (fd)
        *fd = opened;
      else
        ::close(opened);
      return temp;
    }
    if (errno != EEXIST || attempt == 100)
      return ioError(path, "cannot create a temporary file in '" + dir + "'", lastError());
  }
}

llvm::Error nestor::ckpt::writeFileAtomic(llvm::StringRef path, llvm::StringRef contents) {
  llvm::StringRef dir = llvm::sys::path::parent_path(path);
  if (dir.empty())
    dir = ".";

  int fd = -1;
  auto temp = createTempFileBeside(path, &fd);
  if (!temp)
    return temp.takeError();
  std::string tempPath = *temp;

  bool renamed = false;
  llvm::scope_exit cleanup([&] {
    if (fd >= 0)
      ::close(fd);
    if (!renamed)
      ::unlink(tempPath.c_str());
  });

  if (std::error_code ec = writeAll(fd, contents))
    return ioError(path, "cannot write temporary file '" + tempPath + "'", ec);
  // The data must be on disk before the rename publishes it, or a crash could leave the new
  // name pointing at an empty or partial file.
  if (::fsync(fd) != 0)
    return ioError(path, "cannot sync temporary file '" + tempPath + "'", lastError());
  int closing = fd;
  fd = -1;
  if (::close(closing) != 0)
    return ioError(path, "cannot close temporary file '" + tempPath + "'", lastError());

  if (::rename(tempPath.c_str(), path.str().c_str()) != 0)
    return ioError(path, "cannot rename '" + tempPath + "' over it", lastError());
  renamed = true;

  if (std::error_code ec = syncDirectory(dir))
    return ioError(path, "written, but cannot sync directory '" + dir + "'", ec);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// safetensors
//===----------------------------------------------------------------------===//

std::string nestor::ckpt::encodeSafetensors(const TensorMap &tensors, const Metadata &metadata) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto &[name, tensor] : tensors) {
    // A file whose shapes disagree with its data would be rejected by every reader; refusing
    // to write it is the only safe choice here (writeSafetensors reports it as an error).
    std::string problem = encodeProblem(name, tensor);
    if (!problem.empty())
      llvm::report_fatal_error(llvm::Twine("encodeSafetensors: ") + problem);
    uint64_t bytes = tensor.data.size() * sizeof(float);
    header[name] = {
        {"dtype", "F32"}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (!metadata.empty())
    header[kMetadataKey.str()] = metadata;

  std::string json = header.dump();
  // Pad with spaces (which the format allows) so the data starts 8-byte aligned and a reader
  // that maps the file can view the tensors in place.
  json.append((8 - json.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + json.size() + offset);
  char length[8];
  llvm::support::endian::write64le(length, json.size());
  out.append(length, sizeof(length));
  out += json;
  for (const auto &[name, tensor] : tensors) {
    if constexpr (llvm::endianness::native == llvm::endianness::little) {
      out.append(reinterpret_cast<const char *>(tensor.data.data()),
                 tensor.data.size() * sizeof(float));
    } else {
      for (float f : tensor.data) {
        uint32_t bits;
        std::memcpy(&bits, &f, sizeof(bits));
        char le[4];
        llvm::support::endian::write32le(le, bits);
        out.append(le, sizeof(le));
      }
    }
  }
  return out;
}

llvm::Expected<TensorMap>
nestor::ckpt::decodeSafetensors(llvm::StringRef bytes, llvm::StringRef name, Metadata *metadata) {
  if (metadata)
    metadata->clear();
  if (bytes.size() < 8)
    return errorAt(name, "file is " + llvm::Twine(bytes.size()) +
                             " bytes, too short for the 8-byte header length");
  uint64_t headerBytes = llvm::support::endian::read64le(bytes.data());
  if (headerBytes > bytes.size() - 8)
    return errorAt(name, "header length " + llvm::Twine(headerBytes) +
                             " runs past the end of the file (" + llvm::Twine(bytes.size()) +
                             " bytes)");
  if (headerBytes > kMaxHeaderBytes)
    return errorAt(name, "header length " + llvm::Twine(headerBytes) + " exceeds the limit of " +
                             llvm::Twine(kMaxHeaderBytes) + " bytes");

  llvm::StringRef headerText = bytes.substr(8, headerBytes);
  llvm::StringRef data = bytes.substr(8 + headerBytes);
  json::StrictParse parsed = json::parseStrict(headerText);
  if (parsed.syntaxError)
    return errorAt(name, llvm::Twine("header is not valid JSON: ") + *parsed.syntaxError);
  const nlohmann::json &header = parsed.value;
  if (parsed.repeatedKey)
    return errorAt(name, "header repeats the key '" + *parsed.repeatedKey + "'");
  if (!header.is_object())
    return errorAt(name, llvm::Twine("header is a JSON ") + header.type_name() + ", not an object");

  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      if (llvm::Error err = parseMetadata(name, it.value(), metadata))
        return err;
      continue;
    }
    llvm::Expected<Entry> entry = parseEntry(name, it.key(), it.value(), data.size());
    if (!entry)
      return entry.takeError();
    entries.push_back(std::move(*entry));
  }

  // Empty ranges hold no bytes, so they cannot overlap anything, wherever they point.
  std::vector<const Entry *> byOffset;
  for (const Entry &e : entries)
    if (e.begin != e.end)
      byOffset.push_back(&e);
  std::sort(byOffset.begin(), byOffset.end(),
            [](const Entry *a, const Entry *b) { return a->begin < b->begin; });
  for (size_t i = 1; i < byOffset.size(); ++i) {
    const Entry &prev = *byOffset[i - 1], &cur = *byOffset[i];
    if (cur.begin < prev.end)
      return errorAt(name, "tensor '" + cur.name + "': data_offsets [" + llvm::Twine(cur.begin) +
                               ", " + llvm::Twine(cur.end) + "] overlap tensor '" + prev.name +
                               "' [" + llvm::Twine(prev.begin) + ", " + llvm::Twine(prev.end) +
                               "]");
  }

  TensorMap tensors;
  for (Entry &e : entries) {
    Tensor &t = tensors[e.name];
    t.shape = std::move(e.shape);
    uint64_t count = (e.end - e.begin) / e.dtype->bytes;
    t.data.resize(count);
    const char *src = data.data() + e.begin;
    // F32 on a little-endian host is already in memory order: one copy, not a loop of loads.
    if (llvm::endianness::native == llvm::endianness::little && e.dtype->name == "F32" &&
        count > 0) {
      std::memcpy(t.data.data(), src, count * sizeof(float));
      continue;
    }
    for (uint64_t i = 0; i < count; ++i)
      t.data[i] = e.dtype->load(src + i * e.dtype->bytes);
  }
  return tensors;
}

llvm::Error nestor::ckpt::writeSafetensors(llvm::StringRef path, const TensorMap &tensors,
                                           const Metadata &metadata) {
  for (const auto &[name, tensor] : tensors) {
    std::string problem = encodeProblem(name, tensor);
    if (!problem.empty())
      return errorAt(path, problem);
  }
  return writeFileAtomic(path, encodeSafetensors(tensors, metadata));
}

llvm::Expected<TensorMap> nestor::ckpt::readSafetensors(llvm::StringRef path, Metadata *metadata) {
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/false, /*RequiresNullTerminator=*/false);
  if (!buffer)
    return ioError(path, "cannot read", buffer.getError());
  return decodeSafetensors((*buffer)->getBuffer(), path, metadata);
}

std::string nestor::ckpt::shapeString(llvm::ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

llvm::Expected<std::string> nestor::ckpt::readFileBytes(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false, /*IsVolatile=*/true);
  if (!buffer)
    return llvm::createStringError((path + ": cannot read: " + buffer.getError().message()).str());
  return (*buffer)->getBuffer().str();
}
