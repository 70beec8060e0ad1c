//===- KernelCache.cpp - Compiled CUDA modules, in memory and on disk -----===//
//
// The disk is shared by every process that compiles kernels (and by crashed ones), so an entry
// is trusted only after its magic, format version, kind, key, lengths and checksum agree; a
// mismatch is never an error for the caller, only a recompile.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cuda/KernelCache.h"

#include "nestor/Checkpoint.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/xxhash.h"

#include <cstdlib>

using namespace nestor::cuda;

namespace {

constexpr llvm::StringLiteral kKeyDomain = "nestor-kernel-cache-key/1";
constexpr llvm::StringLiteral kMagic = "NSTRKRNL";
constexpr uint32_t kFormatVersion = 1;
constexpr size_t kKeyDigits = 64;

// Entry header, little-endian: magic[8] formatVersion:u32 kind:u32 key[64 hex digits]
// logBytes:u64 imageBytes:u64 checksum:u64 (see checksum()), then the log and the image.
constexpr size_t kHeaderBytes = 8 + 4 + 4 + kKeyDigits + 8 + 8 + 8;

void hashCount(llvm::SHA256 &hash, uint64_t count) {
  char bytes[8];
  llvm::support::endian::write64le(bytes, count);
  hash.update(llvm::StringRef(bytes, sizeof(bytes)));
}

void hashField(llvm::SHA256 &hash, llvm::StringRef field) {
  hashCount(hash, field.size());
  hash.update(field);
}

/// Detects truncation and bit rot (not tampering: the cache directory is the user's own).
uint64_t checksum(llvm::StringRef log, llvm::StringRef image) {
  return llvm::xxh3_64bits(log) * 0x9e3779b97f4a7c15ull ^ llvm::xxh3_64bits(image);
}

void appendLE32(std::string &out, uint32_t value) {
  char bytes[4];
  llvm::support::endian::write32le(bytes, value);
  out.append(bytes, sizeof(bytes));
}

void appendLE64(std::string &out, uint64_t value) {
  char bytes[8];
  llvm::support::endian::write64le(bytes, value);
  out.append(bytes, sizeof(bytes));
}

const char *nonEmptyEnv(const char *name) {
  const char *value = std::getenv(name);
  return value && *value ? value : nullptr;
}

} // namespace

std::string nestor::cuda::cacheKey(const CompileRequest &request, llvm::StringRef generatorVersion,
                                   int nvrtcVersion) {
  llvm::SHA256 hash;
  hashField(hash, kKeyDomain);
  hashField(hash, generatorVersion);
  hashCount(hash, static_cast<uint64_t>(nvrtcVersion));
  hashField(hash, request.arch);
  hashField(hash, outputName(request.output));
  // The name is part of the image (line info, and any __FILE__), not just of diagnostics.
  hashField(hash, request.name);
  hashField(hash, request.source);
  hashCount(hash, request.headers.size());
  for (const EmbeddedHeader &header : request.headers) {
    hashField(hash, header.first);
    hashField(hash, header.second);
  }
  hashCount(hash, request.options.size());
  for (const std::string &option : request.options)
    hashField(hash, option);
  return llvm::toHex(hash.final(), /*LowerCase=*/true);
}

std::string nestor::cuda::defaultKernelCacheDirectory() {
  if (const char *dir = nonEmptyEnv("NESTOR_CACHE_DIR"))
    return dir;
  llvm::SmallString<256> path;
  if (const char *xdg = nonEmptyEnv("XDG_CACHE_HOME")) {
    path = xdg;
  } else {
    if (!llvm::sys::path::home_directory(path))
      return "";
    llvm::sys::path::append(path, ".cache");
  }
  llvm::sys::path::append(path, "nestor", "kernels");
  return std::string(path);
}

KernelCache::KernelCache(std::string directory, std::string generatorVersion)
    : dir(std::move(directory)), generatorVersion(std::move(generatorVersion)) {}

std::string KernelCache::key(const CompileRequest &request) const {
  return cacheKey(request, generatorVersion, nvrtcVersion());
}

std::string KernelCache::entryPath(const CompileRequest &request) const {
  if (dir.empty())
    return "";
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, key(request) + "." + outputName(request.output));
  return std::string(path);
}

KernelCacheStats KernelCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex);
  return counters;
}

std::string KernelCache::lastDiskError() const {
  std::lock_guard<std::mutex> lock(mutex);
  return diskError;
}

llvm::Expected<std::shared_ptr<const CompiledModule>>
KernelCache::getOrCompile(const CompileRequest &request) {
  const std::string requestKey = key(request);
  std::shared_future<Outcome> pending;
  std::promise<Outcome> promise;
  bool compilesHere = false;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = modules.find(requestKey); it != modules.end()) {
      ++counters.memoryHits;
      return it->second;
    }
    if (auto it = inFlight.find(requestKey); it != inFlight.end()) {
      pending = it->second;
    } else {
      pending = promise.get_future().share();
      inFlight.emplace(requestKey, pending);
      compilesHere = true;
    }
  }

  if (compilesHere) {
    Outcome outcome = lookUpOrCompile(request, requestKey);
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (outcome.module)
        modules.emplace(requestKey, outcome.module);
      inFlight.erase(requestKey);
    }
    promise.set_value(std::move(outcome));
  }

  const Outcome &outcome = pending.get();
  if (!outcome.module)
    return llvm::createStringError(std::make_error_code(std::errc::invalid_argument),
                                   outcome.error);
  if (!compilesHere) {
    std::lock_guard<std::mutex> lock(mutex);
    ++counters.memoryHits;
  }
  return outcome.module;
}

KernelCache::Outcome KernelCache::lookUpOrCompile(const CompileRequest &request,
                                                  const std::string &requestKey) {
  const std::string path = entryPath(request);
  if (!path.empty())
    if (std::shared_ptr<const CompiledModule> module = readEntry(path, requestKey, request)) {
      std::lock_guard<std::mutex> lock(mutex);
      ++counters.diskHits;
      return {std::move(module), ""};
    }

  {
    std::lock_guard<std::mutex> lock(mutex);
    ++counters.compiles;
  }
  llvm::Expected<CompiledModule> compiled = compile(request);
  if (!compiled) {
    std::lock_guard<std::mutex> lock(mutex);
    ++counters.compileFailures;
    return {nullptr, llvm::toString(compiled.takeError())};
  }
  auto module = std::make_shared<const CompiledModule>(std::move(*compiled));
  if (!path.empty())
    writeEntry(path, requestKey, *module);
  return {std::move(module), ""};
}

std::shared_ptr<const CompiledModule> KernelCache::readEntry(const std::string &path,
                                                             const std::string &requestKey,
                                                             const CompileRequest &request) {
  const Output kind = request.output;
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> file =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/false, /*RequiresNullTerminator=*/false);
  if (!file)
    return nullptr; // absent (or unreadable): an ordinary miss

  auto reject = [&]() -> std::shared_ptr<const CompiledModule> {
    std::lock_guard<std::mutex> lock(mutex);
    ++counters.corruptEntries;
    return nullptr;
  };
  llvm::StringRef bytes = (*file)->getBuffer();
  if (bytes.size() < kHeaderBytes || !bytes.starts_with(kMagic))
    return reject();
  const char *p = bytes.data() + kMagic.size();
  using namespace llvm::support::endian;
  uint32_t version = read32le(p);
  uint32_t storedKind = read32le(p + 4);
  llvm::StringRef storedKey(p + 8, kKeyDigits);
  p += 8 + kKeyDigits;
  uint64_t logBytes = read64le(p);
  uint64_t imageBytes = read64le(p + 8);
  uint64_t storedChecksum = read64le(p + 16);
  const uint64_t payload = bytes.size() - kHeaderBytes;
  if (version != kFormatVersion || storedKind != static_cast<uint32_t>(kind) ||
      storedKey != requestKey || logBytes > payload || imageBytes != payload - logBytes ||
      imageBytes == 0)
    return reject();
  llvm::StringRef log = bytes.substr(kHeaderBytes, logBytes);
  llvm::StringRef image = bytes.substr(kHeaderBytes + logBytes);
  if (checksum(log, image) != storedChecksum)
    return reject();

  auto module = std::make_shared<CompiledModule>();
  module->image = image.str();
  module->log = log.str();
  module->kind = kind;
  module->arch = request.arch;
  return module;
}

void KernelCache::writeEntry(const std::string &path, const std::string &requestKey,
                             const CompiledModule &module) {
  std::string bytes;
  bytes.reserve(kHeaderBytes + module.log.size() + module.image.size());
  bytes.append(kMagic.data(), kMagic.size());
  appendLE32(bytes, kFormatVersion);
  appendLE32(bytes, static_cast<uint32_t>(module.kind));
  bytes.append(requestKey);
  appendLE64(bytes, module.log.size());
  appendLE64(bytes, module.image.size());
  appendLE64(bytes, checksum(module.log, module.image));
  bytes.append(module.log).append(module.image);

  std::string failure;
  if (std::error_code ec = llvm::sys::fs::create_directories(dir))
    failure = dir + ": cannot create the kernel cache directory: " + ec.message();
  else if (llvm::Error error = nestor::ckpt::writeFileAtomic(path, bytes))
    failure = llvm::toString(std::move(error));
  if (failure.empty())
    return;
  std::lock_guard<std::mutex> lock(mutex);
  ++counters.diskWriteFailures;
  diskError = std::move(failure);
}
