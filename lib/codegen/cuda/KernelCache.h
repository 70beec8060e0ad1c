//===- KernelCache.h - Compiled CUDA modules, in memory and on disk -*- C++ -*-===//
//
// NVRTC takes a quarter of a second per kernel, and a model has hundreds of kernels, so compiled
// images are cached by a key that covers every input of the compile: the program name and
// source, every embedded header (name and text), the options in order, the architecture, the
// output kind, the NVRTC version, and the generator version (bumped by the emitter whenever the
// code it generates for the same input changes meaning). Two requests with the same key produce
// the same image, so a hit is always safe to use.
//
// On disk, an entry is one file, <dir>/<hex key>.ptx or .cubin: a small header (magic, format
// version, output kind, key, log and image lengths, checksum), the NVRTC log, then the image.
// Files are written atomically (temporary file + rename in the same directory), so readers see
// a whole entry or none; an entry that fails any check (truncated, corrupted, renamed) is
// ignored, recompiled and rewritten.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_CODEGEN_CUDA_KERNELCACHE_H
#define NESTOR_CODEGEN_CUDA_KERNELCACHE_H

#include "lib/codegen/cuda/Nvrtc.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace nestor::cuda {

/// The cache key of `request` as 64 hex digits (SHA-256). Every field is length-prefixed and
/// every list count-prefixed, so no two different field lists hash the same bytes.
std::string cacheKey(const CompileRequest &request, llvm::StringRef generatorVersion,
                     int nvrtcVersion);

/// $NESTOR_CACHE_DIR, else $XDG_CACHE_HOME/nestor/kernels, else ~/.cache/nestor/kernels (unset
/// and empty variables count as absent); "" when there is no home directory either.
std::string defaultKernelCacheDirectory();

struct KernelCacheStats {
  /// Answered from memory (including callers that waited for another thread's compile).
  uint64_t memoryHits = 0;
  /// Loaded from a valid disk entry.
  uint64_t diskHits = 0;
  /// NVRTC compiles, successful or not.
  uint64_t compiles = 0;
  uint64_t compileFailures = 0;
  /// Disk entries that were present but failed validation (then recompiled and rewritten).
  uint64_t corruptEntries = 0;
  /// Entries that could not be written (the module is still returned; see lastDiskError()).
  uint64_t diskWriteFailures = 0;
};

class KernelCache {
public:
  /// A cache over `directory` (created on first write; "" keeps the cache in memory only).
  /// `generatorVersion` names the code generator, e.g. "nestor-cuda-1".
  KernelCache(std::string directory, std::string generatorVersion);
  KernelCache(const KernelCache &) = delete;
  KernelCache &operator=(const KernelCache &) = delete;

  /// The compiled module for `request`: from memory, else from disk, else compiled with NVRTC
  /// (and then kept in both). Concurrent calls for one key compile it once. Compile errors are
  /// not cached: the next call compiles again.
  llvm::Expected<std::shared_ptr<const CompiledModule>> getOrCompile(const CompileRequest &request);

  std::string key(const CompileRequest &request) const;
  /// Where `request`'s entry lives on disk ("" for a memory-only cache).
  std::string entryPath(const CompileRequest &request) const;
  const std::string &directory() const { return dir; }
  const std::string &generator() const { return generatorVersion; }

  KernelCacheStats stats() const;
  /// The message of the latest failed disk write, "" if none failed.
  std::string lastDiskError() const;

private:
  struct Outcome {
    std::shared_ptr<const CompiledModule> module;
    std::string error;
  };

  Outcome lookUpOrCompile(const CompileRequest &request, const std::string &key);
  std::shared_ptr<const CompiledModule> readEntry(const std::string &path, const std::string &key,
                                                  const CompileRequest &request);
  void writeEntry(const std::string &path, const std::string &key, const CompiledModule &module);

  std::string dir;
  std::string generatorVersion;
  mutable std::mutex mutex;
  std::map<std::string, std::shared_ptr<const CompiledModule>> modules;
  std::map<std::string, std::shared_future<Outcome>> inFlight;
  KernelCacheStats counters;
  std::string diskError;
};

} // namespace nestor::cuda

#endif // NESTOR_CODEGEN_CUDA_KERNELCACHE_H
