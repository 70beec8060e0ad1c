//===- Checkpoint.cpp - safetensors files and atomic writes ---------------===//
//
// The decoder is the runtime's (engine/weights/Safetensors.h), which links no LLVM; this layer
// adds the writers (atomic, durable) and llvm::Error.
//
//===----------------------------------------------------------------------===//
#include "nestor/Checkpoint.h"

#include "engine/weights/Safetensors.h"
#include "nestor/Json.h"
#include "nestor/ParamCount.h"

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

constexpr llvm::StringRef kMetadataKey(engine::kSafetensorsMetadataKey.data(),
                                       engine::kSafetensorsMetadataKey.size());

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

/// Why `tensor` cannot be encoded, or an empty string.
std::string encodeProblem(const std::string &name, const Tensor &tensor) {
  if (name == kMetadataKey)
    return "tensor name '" + name + "' is reserved for the metadata";
  std::optional<uint64_t> count = engine::elementCount(tensor.shape);
  if (!count)
    return "tensor '" + name + "': invalid shape " + shapeString(tensor.shape);
  if (*count != tensor.data.size())
    return "tensor '" + name + "': shape " + shapeString(tensor.shape) + " needs " +
           std::to_string(*count) + " floats but it holds " + std::to_string(tensor.data.size());
  return {};
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
  TensorMap tensors;
  if (engine::Status s = engine::decodeSafetensors(std::string_view(bytes.data(), bytes.size()),
                                                   name.str(), tensors, metadata))
    return llvm::createStringError(std::make_error_code(std::errc::invalid_argument), s.message());
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

llvm::Expected<nlohmann::json> nestor::ckpt::parseJsonObject(llvm::StringRef text,
                                                             llvm::StringRef name) {
  json::StrictParse parsed = json::parseStrict(std::string_view(text.data(), text.size()));
  if (parsed.syntaxError)
    return errorAt(name, "not valid JSON: " + *parsed.syntaxError);
  if (parsed.repeatedKey)
    return errorAt(name, "the key '" + *parsed.repeatedKey + "' appears twice");
  if (!parsed.value.is_object())
    return errorAt(name, llvm::Twine("a JSON ") + parsed.value.type_name() + ", not an object");
  return std::move(parsed.value);
}

llvm::Expected<nlohmann::json> nestor::ckpt::readJsonObject(llvm::StringRef path) {
  auto text = readFileBytes(path);
  if (!text)
    return text.takeError();
  return parseJsonObject(*text, path);
}

std::string nestor::ckpt::shapeString(llvm::ArrayRef<int64_t> shape) {
  return engine::shapeString(shape.vec());
}

llvm::Expected<std::string> nestor::ckpt::readFileBytes(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false, /*IsVolatile=*/true);
  if (!buffer)
    return llvm::createStringError((path + ": cannot read: " + buffer.getError().message()).str());
  return (*buffer)->getBuffer().str();
}

//===----------------------------------------------------------------------===//
// Model weights
//===----------------------------------------------------------------------===//

llvm::Error nestor::ckpt::checkModelWeights(TensorMap &tensors, const spec::ModelSpec &spec,
                                            llvm::StringRef file, const WeightPolicy &policy,
                                            llvm::StringRef reference) {
  std::vector<spec::ParamShape> params = spec::parameterShapes(spec);
  std::map<std::string, const std::vector<int64_t> *> shapes;
  for (const spec::ParamShape &p : params)
    shapes[p.name] = &p.shape;
  for (const spec::ParamShape &p : params) {
    auto it = tensors.find(p.name);
    if (it == tensors.end())
      return errorAt(file, "tensor '" + p.name + "' of " + reference + " is missing");
    const std::vector<int64_t> &got = it->second.shape;
    if (got != p.shape) {
      std::vector<int64_t> reversed(got.rbegin(), got.rend());
      return errorAt(file,
                     "tensor '" + p.name + "' has shape " + shapeString(got) + " but " + reference +
                         " says " + shapeString(p.shape) +
                         (got.size() == 2 && reversed == p.shape ? " (it is transposed)" : ""));
    }
  }
  std::vector<std::string> unknown;
  for (const auto &[name, tensor] : tensors)
    if (!shapes.count(name))
      unknown.push_back(name);
  if (!unknown.empty() && !policy.allowUnknown) {
    std::string hint = !spec.has_elastic() && llvm::StringRef(unknown[0]).starts_with("routers.")
                           ? " (a dense model has no routers; is this an elastic run's "
                             "checkpoint?)"
                           : "";
    std::string more =
        unknown.size() > 1 ? " (nor are " + std::to_string(unknown.size() - 1) + " more)" : "";
    return errorAt(file, "tensor '" + unknown[0] + "' is not a tensor of " + reference + hint +
                             more + "; --allow-unknown-tensors drops such tensors");
  }
  for (const std::string &name : unknown)
    tensors.erase(name);
  if (policy.allowNonFinite)
    return llvm::Error::success();
  for (const spec::ParamShape &p : params)
    if (std::optional<std::string> problem = engine::nonFiniteProblem(p.name, tensors.at(p.name)))
      return errorAt(file, *problem + "; --allow-non-finite loads it anyway");
  return llvm::Error::success();
}

llvm::Expected<TensorMap> nestor::ckpt::loadModelWeights(llvm::StringRef path,
                                                         const spec::ModelSpec &spec,
                                                         const WeightPolicy &policy) {
  auto tensors = readSafetensors(path);
  if (!tensors)
    return tensors.takeError();
  if (llvm::Error err = checkModelWeights(*tensors, spec, path, policy))
    return err;
  return std::move(*tensors);
}

//===----------------------------------------------------------------------===//
// Output folders
//===----------------------------------------------------------------------===//

namespace {

/// A refusal: bad input (the driver exits 2 for errors with this code).
llvm::Error badInput(const llvm::Twine &message) {
  return llvm::createStringError(std::make_error_code(std::errc::invalid_argument), message);
}

std::string joinPath(llvm::StringRef dir, llvm::StringRef name) {
  llvm::SmallString<256> p(dir);
  llvm::sys::path::append(p, name);
  return std::string(p);
}

/// The real path of an existing `path`, std::nullopt when it does not exist.
std::optional<std::string> realPath(llvm::StringRef path) {
  llvm::SmallString<256> out;
  if (llvm::sys::fs::real_path(path, out))
    return std::nullopt;
  return std::string(out);
}

/// True when `inner` is `outer` or lies inside it (both real paths).
bool within(llvm::StringRef inner, llvm::StringRef outer) {
  return inner == outer ||
         (inner.starts_with(outer) && llvm::sys::path::is_separator(inner[outer.size()]));
}

/// Refuses `path` when it is one of `inputs`, or (`holds`) when an input lies inside it.
llvm::Error checkNotAnInput(llvm::StringRef path, llvm::ArrayRef<std::string> inputs,
                            llvm::StringRef flag, bool holds) {
  std::optional<std::string> out = realPath(path);
  if (!out)
    return llvm::Error::success();
  for (const std::string &input : inputs) {
    std::optional<std::string> in = realPath(input);
    if (!in)
      continue;
    if (*in == *out)
      return badInput((flag + ": " + path + " is the input " + input +
                       "; writing there would replace it (nothing was written)")
                          .str());
    if (holds && within(*in, *out))
      return badInput((flag + ": " + path + " holds the input " + input +
                       "; choose a folder of its own (nothing was written)")
                          .str());
  }
  return llvm::Error::success();
}

} // namespace

std::optional<std::string> nestor::ckpt::outputKind(llvm::StringRef dir) {
  std::string marker = joinPath(dir, kOutputMarker);
  if (!llvm::sys::fs::is_regular_file(marker))
    return std::nullopt;
  auto j = readJsonObject(marker);
  if (!j) {
    llvm::consumeError(j.takeError());
    return std::nullopt;
  }
  auto kind = j->find("kind");
  auto folder = j->find("folder");
  if (kind == j->end() || !kind->is_string() || folder == j->end() || !folder->is_string() ||
      folder->get<std::string>() != llvm::sys::path::filename(dir))
    return std::nullopt;
  return kind->get<std::string>();
}

llvm::Error nestor::ckpt::markOutput(llvm::StringRef dir, llvm::StringRef kind,
                                     llvm::StringRef command) {
  nlohmann::ordered_json j = {{"kind", kind.str()},
                              {"folder", llvm::sys::path::filename(dir).str()},
                              {"written_by", command.str()}};
  return writeFileAtomic(joinPath(dir, kOutputMarker), j.dump() + "\n");
}

llvm::Error nestor::ckpt::checkOutputFolder(llvm::StringRef dir, llvm::StringRef kind,
                                            llvm::ArrayRef<std::string> inputs, bool force,
                                            llvm::StringRef flag) {
  if (llvm::Error err = checkNotAnInput(dir, inputs, flag, /*holds=*/true))
    return err;
  if (llvm::sys::fs::exists(dir) && !llvm::sys::fs::is_directory(dir))
    return badInput((flag + ": " + dir + " is a file, not a folder").str());
  if (llvm::sys::fs::is_directory(dir)) {
    std::error_code ec;
    llvm::sys::fs::directory_iterator it(dir, ec);
    if (ec)
      return ioError(dir, "cannot list the folder", ec);
    bool empty = it == llvm::sys::fs::directory_iterator();
    if (!empty) {
      std::optional<std::string> found = outputKind(dir);
      if (!found)
        return badInput((flag + ": " + dir +
                         " is not empty and Nestor did not write it; choose "
                         "another folder (nothing was written)")
                            .str());
      if (*found != kind)
        return badInput((flag + ": " + dir + " holds a '" + *found + "' output, not a '" + kind +
                         "' one; choose another folder (nothing was written)")
                            .str());
      if (!force)
        return badInput((flag + ": " + dir + " already holds a '" + kind +
                         "' output; pass --force to replace it (nothing was written)")
                            .str());
    }
  }
  return llvm::Error::success();
}

llvm::Error nestor::ckpt::claimOutputFolder(llvm::StringRef dir, llvm::StringRef kind,
                                            llvm::StringRef command,
                                            llvm::ArrayRef<std::string> inputs, bool force,
                                            llvm::StringRef flag) {
  if (llvm::Error err = checkOutputFolder(dir, kind, inputs, force, flag))
    return err;
  if (std::error_code ec = llvm::sys::fs::create_directories(dir))
    return ioError(dir, "cannot create the folder", ec);
  return markOutput(dir, kind, command);
}

llvm::Error nestor::ckpt::checkOutputFile(llvm::StringRef path, llvm::ArrayRef<std::string> inputs,
                                          llvm::StringRef flag) {
  if (llvm::Error err = checkNotAnInput(path, inputs, flag, /*holds=*/false))
    return err;
  if (llvm::sys::fs::is_directory(path))
    return badInput((flag + ": " + path + " is a folder, not a file").str());
  return llvm::Error::success();
}
