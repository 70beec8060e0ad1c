//===- Safetensors.cpp - Reading safetensors weights without LLVM ----------===//
//
// A checkpoint may be truncated by a full disk, hand-edited, or come from another tool, so the
// decoder checks everything before it uses it: the header length against the file, the JSON
// (repeated keys refused), each entry's dtype, shape and offsets against the data section, and
// that no two tensors' bytes overlap.
//
//===----------------------------------------------------------------------===//
#include "engine/weights/Safetensors.h"

#include "nestor/Json.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace nestor;
using namespace nestor::engine;
using train::Tensor;
using train::TensorMap;

namespace {

constexpr std::string_view kMetadataKey = kSafetensorsMetadataKey;
/// Real headers are kilobytes; the cap keeps a corrupt length field from making us parse (and
/// allocate for) an arbitrarily large "header".
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

Status errorAt(const std::string &name, const std::string &message) {
  return Status::error(name + ": " + message);
}

uint64_t readLE(const char *p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

bool littleEndianHost() {
  const uint16_t probe = 1;
  unsigned char first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

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
  std::string_view name;
  unsigned bytes;
  /// How the mismatch message counts elements of this type.
  std::string_view noun;
  float (*load)(const char *);
};

const DType kDTypes[] = {
    {"F32", 4, "floats",
     [](const char *p) { return floatFromBits(static_cast<uint32_t>(readLE(p, 4))); }},
    {"F64", 8, "doubles",
     [](const char *p) {
       uint64_t bits = readLE(p, 8);
       double d;
       std::memcpy(&d, &bits, sizeof(d));
       return static_cast<float>(d);
     }},
    {"F16", 2, "F16 values",
     [](const char *p) { return halfToFloat(static_cast<uint16_t>(readLE(p, 2))); }},
    {"BF16", 2, "BF16 values",
     [](const char *p) { return bfloat16ToFloat(static_cast<uint16_t>(readLE(p, 2))); }},
};

const DType *lookupDType(std::string_view name) {
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
  const DType *dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

Status parseEntry(const std::string &file, const std::string &name, const nlohmann::json &info,
                  uint64_t dataBytes, Entry &out) {
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
    std::string noun(dtype->noun);
    if (held % dtype->bytes == 0)
      return errorAt(file, where + "data_offsets " + range + " hold " +
                               std::to_string(held / dtype->bytes) + " " + noun + " but shape " +
                               shapeString(shape) + " needs " + std::to_string(*needed));
    return errorAt(file, where + "data_offsets " + range + " hold " + std::to_string(held) +
                             " bytes but shape " + shapeString(shape) + " needs " +
                             std::to_string(*needed) + " " + noun + " (" +
                             std::to_string(*needed * dtype->bytes) + " bytes)");
  }
  out = Entry{name, dtype, std::move(shape), *begin, *end};
  return Status();
}

Status parseMetadata(const std::string &file, const nlohmann::json &value,
                     WeightsMetadata *metadata) {
  std::string key(kMetadataKey);
  if (!value.is_object())
    return errorAt(file, "'" + key + "' is " + value.type_name() + ", not an object");
  WeightsMetadata parsed;
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (!it->is_string())
      return errorAt(file, "'" + key + "' value for key '" + it.key() + "' is " + it->type_name() +
                               ", not a string");
    parsed[it.key()] = it->get<std::string>();
  }
  if (metadata)
    *metadata = std::move(parsed);
  return Status();
}

} // namespace

std::optional<uint64_t> nestor::engine::elementCount(const std::vector<int64_t> &shape) {
  // A zero anywhere makes the tensor empty whatever the other extents are, so overflow among
  // them is not an error.
  if (std::find(shape.begin(), shape.end(), 0) != shape.end())
    return 0;
  uint64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0 || count > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d))
      return std::nullopt;
    count *= static_cast<uint64_t>(d);
  }
  return count;
}

std::string nestor::engine::shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Status nestor::engine::decodeSafetensors(std::string_view bytes, const std::string &name,
                                         TensorMap &tensors, WeightsMetadata *metadata) {
  tensors.clear();
  if (metadata)
    metadata->clear();
  if (bytes.size() < 8)
    return errorAt(name, "file is " + std::to_string(bytes.size()) +
                             " bytes, too short for the 8-byte header length");
  uint64_t headerBytes = readLE(bytes.data(), 8);
  if (headerBytes > bytes.size() - 8)
    return errorAt(name, "header length " + std::to_string(headerBytes) +
                             " runs past the end of the file (" + std::to_string(bytes.size()) +
                             " bytes)");
  if (headerBytes > kMaxHeaderBytes)
    return errorAt(name, "header length " + std::to_string(headerBytes) + " exceeds the limit of " +
                             std::to_string(kMaxHeaderBytes) + " bytes");

  std::string_view headerText = bytes.substr(8, headerBytes);
  std::string_view data = bytes.substr(8 + headerBytes);
  json::StrictParse parsed = json::parseStrict(headerText);
  if (parsed.syntaxError)
    return errorAt(name, "header is not valid JSON: " + *parsed.syntaxError);
  const nlohmann::json &header = parsed.value;
  if (parsed.repeatedKey)
    return errorAt(name, "header repeats the key '" + *parsed.repeatedKey + "'");
  if (!header.is_object())
    return errorAt(name, std::string("header is a JSON ") + header.type_name() + ", not an object");

  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == kMetadataKey) {
      if (Status s = parseMetadata(name, it.value(), metadata))
        return s;
      continue;
    }
    Entry entry;
    if (Status s = parseEntry(name, it.key(), it.value(), data.size(), entry))
      return s;
    entries.push_back(std::move(entry));
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
      return errorAt(name, "tensor '" + cur.name + "': data_offsets [" + std::to_string(cur.begin) +
                               ", " + std::to_string(cur.end) + "] overlap tensor '" + prev.name +
                               "' [" + std::to_string(prev.begin) + ", " +
                               std::to_string(prev.end) + "]");
  }

  bool inPlace = littleEndianHost();
  for (Entry &e : entries) {
    Tensor &t = tensors[e.name];
    t.shape = std::move(e.shape);
    uint64_t count = (e.end - e.begin) / e.dtype->bytes;
    t.data.resize(count);
    const char *src = data.data() + e.begin;
    // F32 on a little-endian host is already in memory order: one copy, not a loop of loads.
    if (inPlace && e.dtype->name == "F32" && count > 0) {
      std::memcpy(t.data.data(), src, count * sizeof(float));
      continue;
    }
    for (uint64_t i = 0; i < count; ++i)
      t.data[i] = e.dtype->load(src + i * e.dtype->bytes);
  }
  return Status();
}

Result<TensorMap> nestor::engine::readSafetensorsFile(const std::string &path,
                                                      WeightsMetadata *metadata) {
  auto failure = [&](const std::string &what) {
    return Status::error(path + ": " + what + ": " + std::strerror(errno));
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return failure("cannot read");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    Status s = failure("cannot read");
    ::close(fd);
    return s;
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Status::error(path + ": cannot read: not a regular file");
  }
  size_t size = static_cast<size_t>(st.st_size);
  const char *bytes = "";
  void *mapped = MAP_FAILED;
  if (size > 0) {
    mapped = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) {
      Status s = failure("cannot map");
      ::close(fd);
      return s;
    }
    bytes = static_cast<const char *>(mapped);
  }
  ::close(fd);
  TensorMap tensors;
  Status s = decodeSafetensors(std::string_view(bytes, size), path, tensors, metadata);
  if (mapped != MAP_FAILED)
    ::munmap(mapped, size);
  if (s)
    return s;
  return tensors;
}

std::optional<std::string> nestor::engine::nonFiniteProblem(const std::string &name,
                                                            const train::Tensor &tensor) {
  const std::vector<float> &data = tensor.data;
  auto notFinite = [](float v) { return !std::isfinite(v); };
  auto bad = std::find_if(data.begin(), data.end(), notFinite);
  if (bad == data.end())
    return std::nullopt;
  size_t count = static_cast<size_t>(std::count_if(bad, data.end(), notFinite));
  size_t index = static_cast<size_t>(bad - data.begin());
  // The index in each dimension, row-major: [row, column] for a matrix.
  std::vector<int64_t> at(tensor.shape.size());
  size_t rest = index;
  for (size_t d = tensor.shape.size(); d-- > 0;) {
    size_t extent = static_cast<size_t>(std::max<int64_t>(tensor.shape[d], 1));
    at[d] = static_cast<int64_t>(rest % extent);
    rest /= extent;
  }
  std::string value = std::isnan(*bad) ? "NaN" : *bad > 0 ? "+Inf" : "-Inf";
  return "tensor '" + name + "' holds " + value + " at index " + std::to_string(index) + " " +
         shapeString(at) + " (" + std::to_string(count) + " of its " + std::to_string(data.size()) +
         " values are not finite)";
}
