//===- CudaTest.cpp - NVRTC driver, kernel cache and CUDA driver ----------===//
//
// Two groups. The first needs no GPU and runs everywhere CI does: a representative kernel that
// uses the device header is compiled with NVRTC to PTX for sm_80 and sm_90 (and to CUBIN) and
// the PTX is checked for the instructions the helpers are meant to produce; compile errors must
// carry the log, the file, the line and the line's text; the cache key must change with every
// input and nothing else; the disk cache must survive new cache objects and corrupt entries and
// leave nothing but entries behind; and opening a device must fail clearly where there is none.
//
// The second group (CudaDeviceTest) runs the kernels on a GPU against CPU loops, at sizes that
// fill no tile evenly, and skips with the reason where there is no device.
//
//===----------------------------------------------------------------------===//
#include "lib/codegen/cuda/CudaDriver.h"
#include "lib/codegen/cuda/KernelCache.h"
#include "lib/codegen/cuda/Nvrtc.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <thread>

using namespace nestor::cuda;

namespace {

#define ASSERT_NO_ERROR(expr)                                                                      \
  do {                                                                                             \
    llvm::Error error_ = (expr);                                                                   \
    ASSERT_FALSE(error_) << llvm::toString(std::move(error_));                                     \
  } while (false)

#define ASSERT_EXPECTED(expected)                                                                  \
  ASSERT_TRUE(static_cast<bool>(expected)) << llvm::toString((expected).takeError())

/// The message of an error that must be there ("" and a test failure if it is not).
template <typename T> std::string errorMessage(llvm::Expected<T> value) {
  if (value) {
    ADD_FAILURE() << "expected an error";
    return "";
  }
  return llvm::toString(value.takeError());
}

// A masked RMSNorm over a run-time active prefix (block reduction), a float4 AXPY with a scalar
// tail, the bf16 and pointwise helpers, and a float64 block reduction: between them every
// helper of nestor_device.cuh is instantiated.
constexpr const char *kRepresentativeKernel = R"cuda(#include "nestor_device.cuh"

// y[r, c] = x[r, c] * rsqrt(mean(x[r, :active]^2) + eps) * weight[c] for c < active, else 0.
extern "C" __global__ void masked_rmsnorm(const float *__restrict__ x,
                                          const float *__restrict__ weight,
                                          float *__restrict__ y, int rows, int channels,
                                          int active, float eps) {
  __shared__ float scratch[32];
  for (long long row : nestor::blockRows(rows)) {
    const float *xr = x + row * channels;
    float *yr = y + row * channels;
    float sumSquares = 0.0f;
    for (long long c : nestor::blockStride(active))
      sumSquares += xr[c] * xr[c];
    sumSquares = nestor::blockSum(sumSquares, scratch);
    const float scale = active > 0 ? rsqrtf(sumSquares / active + eps) : 0.0f;
    for (long long c : nestor::blockStride(channels))
      yr[c] = c < active ? xr[c] * scale * weight[c] : 0.0f;
  }
}

// y = a * x + y: float4 when both are 16-byte aligned, then a scalar tail.
extern "C" __global__ void axpy(float a, const float *__restrict__ x, float *__restrict__ y,
                                long long n) {
  const long long vectorEnd = nestor::isAligned16(x) && nestor::isAligned16(y) ? n / 4 * 4 : 0;
  for (long long i : nestor::gridStride(vectorEnd / 4))
    nestor::store4(y + 4 * i,
                   nestor::fma4(a, nestor::load4ReadOnly(x + 4 * i), nestor::load4(y + 4 * i)));
  for (long long i : nestor::gridStride(n - vectorEnd))
    y[vectorEnd + i] = fmaf(a, x[vectorEnd + i], y[vectorEnd + i]);
}

// out[5 i + k] = bf16 round trip, softplus, sigmoid, silu, safeExp of x[i]; bits[i] the bf16.
// maxima[block] = the block's max of x, shifted[block] = expShifted(first x, that max).
extern "C" __global__ void pointwise(const float *__restrict__ x, float *__restrict__ out,
                                     nestor::bf16_t *__restrict__ bits, float *__restrict__ maxima,
                                     long long n) {
  __shared__ float scratch[32];
  float localMax = nestor::negativeInfinity();
  for (long long i : nestor::gridStride(n)) {
    const float v = x[i];
    bits[i] = nestor::floatToBf16(v);
    out[5 * i + 0] = nestor::bf16ToFloat(bits[i]);
    out[5 * i + 1] = nestor::softplus(v);
    out[5 * i + 2] = nestor::sigmoid(v);
    out[5 * i + 3] = nestor::silu(v);
    out[5 * i + 4] = nestor::safeExp(v);
    localMax = fmaxf(localMax, v);
  }
  const float blockMax = nestor::blockMax(localMax, scratch);
  if (threadIdx.x == 0) {
    maxima[2 * blockIdx.x] = blockMax;
    maxima[2 * blockIdx.x + 1] = nestor::expShifted(x[0], blockMax);
  }
}

// sums[row] = the float64 sum of a row; bf16 pairs packed and unpacked on the way.
extern "C" __global__ void row_sum_f64(const unsigned *__restrict__ pairs, double *sums,
                                       int pairsPerRow) {
  __shared__ double scratch[32];
  double sum = 0.0;
  for (long long p : nestor::blockStride(pairsPerRow)) {
    const float2 v = nestor::bf16x2ToFloat2(pairs[blockIdx.x * (long long)pairsPerRow + p]);
    const float2 again = nestor::bf16x2ToFloat2(nestor::float2ToBf16x2(v));
    sum += (double)again.x + (double)again.y;
  }
  sum = nestor::blockSum(sum, scratch);
  if (threadIdx.x == 0)
    sums[blockIdx.x] = sum;
}
)cuda";

CompileRequest representativeRequest(const std::string &arch, Output output = Output::PTX) {
  CompileRequest request;
  request.name = "kernel_17.cu";
  request.source = kRepresentativeKernel;
  request.headers = deviceHeaders();
  request.arch = arch;
  request.output = output;
  return request;
}

/// A small kernel for the cache tests; `variant` changes its source.
CompileRequest smallRequest(int variant = 0) {
  CompileRequest request;
  request.name = "kernel_small.cu";
  request.source = "#include \"nestor_device.cuh\"\n"
                   "extern \"C\" __global__ void scale(float *x, long long n) {\n"
                   "  for (long long i : nestor::gridStride(n))\n"
                   "    x[i] *= " +
                   std::to_string(variant + 2) + ".0f;\n}\n";
  request.headers = deviceHeaders();
  request.arch = "sm_80";
  return request;
}

bool contains(llvm::StringRef text, llvm::StringRef part) { return text.contains(part); }

//===----------------------------------------------------------------------===//
// NVRTC
//===----------------------------------------------------------------------===//

TEST(NvrtcTest, VersionUsesTheCudaVersionEncoding) {
  int version = nvrtcVersion();
  EXPECT_GE(version, 12000);
  EXPECT_EQ(version % 10, 0);
}

TEST(NvrtcTest, DeviceHeaderIsEmbeddedAndSelfContained) {
  std::vector<EmbeddedHeader> headers = deviceHeaders();
  ASSERT_EQ(headers.size(), 1u);
  EXPECT_EQ(headers[0].first, "nestor_device.cuh");
  EXPECT_TRUE(contains(headers[0].second, "namespace nestor"));
  // NVRTC 13 has no cuda_fp16.h/cuda_bf16.h built in, and nothing may come from disk.
  EXPECT_FALSE(contains(headers[0].second, "#include")) << "the device header includes a file";
}

TEST(NvrtcTest, FixedOptionsComeFirst) {
  CompileRequest request = smallRequest();
  request.arch = "sm_90";
  request.options = {"-lineinfo"};
  EXPECT_EQ(nvrtcOptions(request),
            (std::vector<std::string>{"-std=c++17", "--gpu-architecture=compute_90",
                                      "-default-device", "-lineinfo"}));
  request.output = Output::CUBIN;
  request.arch = "compute_90a";
  EXPECT_EQ(nvrtcOptions(request)[1], "--gpu-architecture=sm_90a");
}

TEST(NvrtcTest, RepresentativeKernelCompilesToPtxForSm80AndSm90) {
  for (const char *arch : {"sm_80", "sm_90"}) {
    SCOPED_TRACE(arch);
    llvm::Expected<CompiledModule> module = compile(representativeRequest(arch));
    ASSERT_EXPECTED(module);
    const std::string &ptx = module->image;
    EXPECT_EQ(module->kind, Output::PTX);
    EXPECT_EQ(module->arch, arch);
    EXPECT_TRUE(contains(ptx, std::string(".target ") + arch)) << ptx.substr(0, 400);
    for (const char *entry : {"masked_rmsnorm", "axpy", "pointwise", "row_sum_f64"})
      EXPECT_TRUE(contains(ptx, std::string(".visible .entry ") + entry + "("))
          << "entry " << entry << " missing or mangled";
    EXPECT_TRUE(contains(ptx, "shfl.sync.bfly") || contains(ptx, "shfl.sync.down"));
    EXPECT_TRUE(contains(ptx, "ld.global.v4.f32")) << "no vectorised load of y";
    EXPECT_TRUE(contains(ptx, "ld.global.nc.v4.f32")) << "no read-only vectorised load of x";
    EXPECT_TRUE(contains(ptx, "st.global.v4.f32"));
    EXPECT_TRUE(contains(ptx, "bar.sync"));
    EXPECT_FALSE(contains(ptx, llvm::StringRef("\0", 1))) << "PTX keeps its NUL terminator";
  }
}

TEST(NvrtcTest, RepresentativeKernelCompilesToCubin) {
  llvm::Expected<CompiledModule> module = compile(representativeRequest("sm_90", Output::CUBIN));
  ASSERT_EXPECTED(module);
  EXPECT_EQ(module->kind, Output::CUBIN);
  ASSERT_GT(module->image.size(), 4u);
  EXPECT_EQ(module->image.substr(0, 4), "\x7f"
                                        "ELF");
  EXPECT_TRUE(contains(module->image, "masked_rmsnorm"));
}

constexpr const char *kBrokenKernel = "#include \"nestor_device.cuh\"\n"
                                      "extern \"C\" __global__ void broken(float *x) {\n"
                                      "  float y = x[0];\n"
                                      "  x[1] = undefined_thing + y;\n"
                                      "}\n";

TEST(NvrtcTest, CompileErrorCarriesLogFileLineAndQuotedLine) {
  CompileRequest request = smallRequest();
  request.name = "kernel_bad.cu";
  request.source = kBrokenKernel;
  std::string message = errorMessage(compile(request));
  EXPECT_TRUE(contains(message, "kernel_bad.cu(4): error")) << message;
  EXPECT_TRUE(contains(message, "undefined_thing")) << message;
  EXPECT_TRUE(contains(message, "x[1] = undefined_thing + y;")) << message;
  EXPECT_TRUE(contains(message, "sm_80")) << message;
  // NVRTC quoted the line itself; the driver must not quote it twice.
  EXPECT_EQ(llvm::StringRef(message).count("x[1] = undefined_thing + y;"), 1u) << message;
}

TEST(NvrtcTest, ErrorLinesAreQuotedEvenWhenNvrtcDoesNot) {
  // With brief diagnostics NVRTC prints no source lines; the driver adds them.
  CompileRequest request = smallRequest();
  request.name = "kernel_bad.cu";
  request.source = kBrokenKernel;
  request.options = {"--brief-diagnostics=true"};
  std::string message = errorMessage(compile(request));
  size_t error = message.find("kernel_bad.cu(4): error");
  ASSERT_NE(error, std::string::npos) << message;
  EXPECT_NE(message.find("x[1] = undefined_thing + y;", error), std::string::npos) << message;
}

TEST(NvrtcTest, ErrorsInEmbeddedHeadersQuoteTheHeaderLine) {
  CompileRequest request = smallRequest();
  request.name = "kernel_uses_bad_header.cu";
  request.headers.push_back(
      {"bad.cuh", "// a header\n__device__ int f() { return missing_name; }\n"});
  request.source = "#include \"bad.cuh\"\nextern \"C\" __global__ void k(int *x) { *x = f(); }\n";
  request.options = {"--brief-diagnostics=true"};
  std::string message = errorMessage(compile(request));
  EXPECT_TRUE(contains(message, "bad.cuh(2): error")) << message;
  EXPECT_TRUE(contains(message, "__device__ int f() { return missing_name; }")) << message;
}

TEST(NvrtcTest, BadArchitecturesAreRejected) {
  CompileRequest request = smallRequest();
  request.arch = "gfx90a";
  EXPECT_TRUE(contains(errorMessage(compile(request)), "invalid CUDA architecture 'gfx90a'"));
  request.arch = "compute_80";
  request.output = Output::CUBIN;
  EXPECT_TRUE(contains(errorMessage(compile(request)), "needs a real architecture"));
  // Well formed but unknown to NVRTC: NVRTC's own complaint comes back.
  request.arch = "sm_1";
  request.output = Output::PTX;
  std::string message = errorMessage(compile(request));
  EXPECT_TRUE(contains(message, "kernel_small.cu")) << message;
  EXPECT_TRUE(contains(message, "compute_1")) << message;
}

//===----------------------------------------------------------------------===//
// Kernel cache
//===----------------------------------------------------------------------===//

TEST(KernelCacheKeyTest, ChangesWithEveryFieldAndNothingElse) {
  const CompileRequest base = smallRequest();
  const std::string generator = "nestor-cuda-1";
  const int version = 13000;
  auto keyOf = [&](const CompileRequest &request) { return cacheKey(request, generator, version); };
  const std::string baseKey = keyOf(base);
  EXPECT_EQ(baseKey.size(), 64u);
  EXPECT_TRUE(
      llvm::all_of(baseKey, [](char c) { return llvm::isHexDigit(c) && !llvm::isUpper(c); }));
  EXPECT_EQ(keyOf(base), baseKey) << "the key is not deterministic";
  CompileRequest copy = base;
  EXPECT_EQ(keyOf(copy), baseKey);

  std::vector<std::pair<std::string, std::string>> keys; // (what changed, key)
  auto variant = [&](const std::string &what, auto change) {
    CompileRequest request = base;
    change(request);
    keys.push_back({what, keyOf(request)});
  };
  variant("name", [](CompileRequest &r) { r.name = "kernel_other.cu"; });
  variant("source", [](CompileRequest &r) { r.source += " "; });
  variant("header name", [](CompileRequest &r) { r.headers[0].first = "other.cuh"; });
  variant("header text", [](CompileRequest &r) { r.headers[0].second += "\n"; });
  variant("extra header", [](CompileRequest &r) { r.headers.push_back({"a.cuh", ""}); });
  variant("no header", [](CompileRequest &r) { r.headers.clear(); });
  variant("option", [](CompileRequest &r) { r.options = {"-lineinfo"}; });
  variant("options order", [](CompileRequest &r) { r.options = {"-lineinfo", "-G"}; });
  variant("options order 2", [](CompileRequest &r) { r.options = {"-G", "-lineinfo"}; });
  variant("arch", [](CompileRequest &r) { r.arch = "sm_90"; });
  variant("output", [](CompileRequest &r) { r.output = Output::CUBIN; });
  // Field boundaries: the same bytes split differently must not collide.
  variant("split option", [](CompileRequest &r) { r.options = {"-G-lineinfo"}; });
  variant("split header a", [](CompileRequest &r) { r.headers = {{"ab", "c"}}; });
  variant("split header b", [](CompileRequest &r) { r.headers = {{"a", "bc"}}; });
  variant("header into option", [](CompileRequest &r) {
    r.headers.clear();
    r.options = {"ab", "c"};
  });
  variant("name into source", [](CompileRequest &r) {
    r.source = r.name + r.source;
    r.name = "";
  });
  keys.push_back({"nvrtc version", cacheKey(base, generator, 13010)});
  keys.push_back({"generator", cacheKey(base, "nestor-cuda-2", version)});
  std::set<std::string> seen = {baseKey};
  for (const auto &[what, key] : keys)
    EXPECT_TRUE(seen.insert(key).second) << "changing the " << what << " collides";
}

/// A fresh directory per test, removed afterwards; NESTOR_CACHE_DIR and friends untouched.
class KernelCacheTest : public ::testing::Test {
protected:
  void SetUp() override {
    ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("nestor-kernel-cache-test", dir));
  }
  void TearDown() override { llvm::sys::fs::remove_directories(dir); }

  /// The names of the files in the cache directory.
  std::vector<std::string> files() const {
    std::vector<std::string> names;
    std::error_code ec;
    for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
      names.push_back(llvm::sys::path::filename(it->path()).str());
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string readFile(const std::string &path) const {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }

  void writeFile(const std::string &path, const std::string &bytes) const {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

  llvm::SmallString<128> dir;
};

TEST_F(KernelCacheTest, SecondRequestIsAMemoryHit) {
  KernelCache cache("", "nestor-cuda-test");
  auto first = cache.getOrCompile(smallRequest());
  ASSERT_EXPECTED(first);
  auto second = cache.getOrCompile(smallRequest());
  ASSERT_EXPECTED(second);
  EXPECT_EQ(first->get(), second->get()) << "a memory hit shares the module";
  KernelCacheStats stats = cache.stats();
  EXPECT_EQ(stats.compiles, 1u);
  EXPECT_EQ(stats.memoryHits, 1u);
  EXPECT_EQ(stats.diskHits, 0u);
  EXPECT_EQ(cache.entryPath(smallRequest()), "");
}

TEST_F(KernelCacheTest, NewCacheOnTheSameDirectoryIsADiskHit) {
  std::string image;
  {
    KernelCache cache(dir.str().str(), "nestor-cuda-test");
    auto module = cache.getOrCompile(smallRequest());
    ASSERT_EXPECTED(module);
    image = (*module)->image;
    EXPECT_EQ(cache.stats().compiles, 1u);
    EXPECT_TRUE(llvm::sys::fs::exists(cache.entryPath(smallRequest())));
  }
  KernelCache cache(dir.str().str(), "nestor-cuda-test");
  auto module = cache.getOrCompile(smallRequest());
  ASSERT_EXPECTED(module);
  EXPECT_EQ((*module)->image, image);
  EXPECT_EQ((*module)->kind, Output::PTX);
  EXPECT_EQ((*module)->arch, "sm_80");
  KernelCacheStats stats = cache.stats();
  EXPECT_EQ(stats.diskHits, 1u);
  EXPECT_EQ(stats.compiles, 0u);
  EXPECT_EQ(stats.corruptEntries, 0u);

  // Another generator version is another key: no hit.
  KernelCache other(dir.str().str(), "nestor-cuda-test-2");
  ASSERT_EXPECTED(other.getOrCompile(smallRequest()));
  EXPECT_EQ(other.stats().compiles, 1u);
}

TEST_F(KernelCacheTest, CorruptEntriesAreRecompiledAndRewritten) {
  const CompileRequest request = smallRequest();
  std::string good;
  std::string path;
  {
    KernelCache cache(dir.str().str(), "nestor-cuda-test");
    ASSERT_EXPECTED(cache.getOrCompile(request));
    path = cache.entryPath(request);
    good = readFile(path);
  }
  ASSERT_GT(good.size(), 200u);

  std::vector<std::pair<std::string, std::string>> corruptions = {
      {"empty", ""},
      {"truncated header", good.substr(0, 20)},
      {"truncated image", good.substr(0, good.size() - 7)},
      {"flipped image byte",
       [&] {
         std::string bad = good;
         bad[bad.size() - 100] ^= 0x20;
         return bad;
       }()},
      {"wrong magic", "X" + good.substr(1)},
      {"appended bytes", good + "junk"},
      {"another key in the header",
       [&] {
         std::string bad = good;
         std::string key = cacheKey(request, "nestor-cuda-test", nvrtcVersion());
         std::string otherKey = cacheKey(smallRequest(1), "nestor-cuda-test", nvrtcVersion());
         size_t at = bad.find(key);
         if (at != std::string::npos)
           bad.replace(at, key.size(), otherKey);
         return bad;
       }()},
  };
  for (const auto &[what, bytes] : corruptions) {
    SCOPED_TRACE(what);
    ASSERT_NE(bytes, good);
    writeFile(path, bytes);
    KernelCache cache(dir.str().str(), "nestor-cuda-test");
    auto module = cache.getOrCompile(request);
    ASSERT_EXPECTED(module);
    KernelCacheStats stats = cache.stats();
    EXPECT_EQ(stats.corruptEntries, 1u);
    EXPECT_EQ(stats.compiles, 1u);
    EXPECT_EQ(stats.diskHits, 0u);
    EXPECT_EQ(readFile(path), good) << "the entry was not rewritten";

    KernelCache again(dir.str().str(), "nestor-cuda-test");
    ASSERT_EXPECTED(again.getOrCompile(request));
    EXPECT_EQ(again.stats().diskHits, 1u);
  }
}

TEST_F(KernelCacheTest, DirectoryHoldsOnlyEntries) {
  KernelCache cache(dir.str().str(), "nestor-cuda-test");
  for (int variant = 0; variant < 3; ++variant) {
    CompileRequest request = smallRequest(variant);
    ASSERT_EXPECTED(cache.getOrCompile(request));
    request.output = Output::CUBIN;
    ASSERT_EXPECTED(cache.getOrCompile(request));
  }
  std::vector<std::string> names = files();
  EXPECT_EQ(names.size(), 6u);
  for (const std::string &name : names) {
    llvm::StringRef stem = llvm::StringRef(name).split('.').first;
    llvm::StringRef extension = llvm::StringRef(name).split('.').second;
    EXPECT_EQ(stem.size(), 64u) << name;
    EXPECT_TRUE(llvm::all_of(stem, llvm::isHexDigit)) << name;
    EXPECT_TRUE(extension == "ptx" || extension == "cubin") << name;
  }
}

TEST_F(KernelCacheTest, CompileErrorsAreNotCached) {
  KernelCache cache(dir.str().str(), "nestor-cuda-test");
  CompileRequest request = smallRequest();
  request.source = kBrokenKernel;
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::string message = errorMessage(cache.getOrCompile(request));
    EXPECT_TRUE(contains(message, "kernel_small.cu(4): error")) << message;
  }
  KernelCacheStats stats = cache.stats();
  EXPECT_EQ(stats.compiles, 2u);
  EXPECT_EQ(stats.compileFailures, 2u);
  EXPECT_TRUE(files().empty());
}

TEST_F(KernelCacheTest, ConcurrentRequestsCompileOnce) {
  KernelCache cache(dir.str().str(), "nestor-cuda-test");
  constexpr int kThreads = 4;
  std::vector<const CompiledModule *> seen(kThreads, nullptr);
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      auto module = cache.getOrCompile(smallRequest());
      if (module)
        seen[t] = module->get();
      else
        errors[t] = llvm::toString(module.takeError());
    });
  for (std::thread &thread : threads)
    thread.join();
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(errors[t], "");
    EXPECT_EQ(seen[t], seen[0]);
  }
  KernelCacheStats stats = cache.stats();
  EXPECT_EQ(stats.compiles, 1u);
  EXPECT_EQ(stats.memoryHits, static_cast<uint64_t>(kThreads - 1));
  EXPECT_EQ(files().size(), 1u);
}

TEST_F(KernelCacheTest, UnwritableDirectoryStillReturnsTheModule) {
  // A directory "inside" a regular file can never be created.
  std::string blocker = (dir + "/not-a-directory").str();
  writeFile(blocker, "x");
  KernelCache cache(blocker + "/kernels", "nestor-cuda-test");
  auto module = cache.getOrCompile(smallRequest());
  ASSERT_EXPECTED(module);
  EXPECT_FALSE((*module)->image.empty());
  EXPECT_EQ(cache.stats().diskWriteFailures, 1u);
  EXPECT_TRUE(contains(cache.lastDiskError(), "not-a-directory")) << cache.lastDiskError();
}

TEST_F(KernelCacheTest, DiskHitIsMuchFasterThanACompile) {
  using Clock = std::chrono::steady_clock;
  const CompileRequest request = representativeRequest("sm_90");
  auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };

  KernelCache cold(dir.str().str(), "nestor-cuda-test");
  Clock::time_point start = Clock::now();
  ASSERT_EXPECTED(cold.getOrCompile(request));
  double compileSeconds = seconds(Clock::now() - start);

  KernelCache warm(dir.str().str(), "nestor-cuda-test");
  start = Clock::now();
  ASSERT_EXPECTED(warm.getOrCompile(request));
  double diskSeconds = seconds(Clock::now() - start);
  ASSERT_EQ(warm.stats().diskHits, 1u);

  start = Clock::now();
  ASSERT_EXPECTED(warm.getOrCompile(request));
  double memorySeconds = seconds(Clock::now() - start);

  std::printf("[ timing   ] representative kernel, PTX sm_90: NVRTC %.1f ms, disk hit %.3f ms, "
              "memory hit %.4f ms\n",
              compileSeconds * 1e3, diskSeconds * 1e3, memorySeconds * 1e3);
  EXPECT_LT(diskSeconds * 10, compileSeconds);
}

/// Sets an environment variable for the scope and restores it afterwards.
class ScopedEnv {
public:
  ScopedEnv(const char *name, const char *value) : name(name) {
    if (const char *old = std::getenv(name))
      previous = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (previous)
      ::setenv(name, previous->c_str(), 1);
    else
      ::unsetenv(name);
  }

private:
  const char *name;
  std::optional<std::string> previous;
};

TEST(KernelCacheDirectoryTest, EnvironmentDecidesTheDefault) {
  {
    ScopedEnv nestor("NESTOR_CACHE_DIR", "/tmp/nestor-explicit");
    ScopedEnv xdg("XDG_CACHE_HOME", "/tmp/xdg");
    EXPECT_EQ(defaultKernelCacheDirectory(), "/tmp/nestor-explicit");
  }
  {
    ScopedEnv nestor("NESTOR_CACHE_DIR", "");
    ScopedEnv xdg("XDG_CACHE_HOME", "/tmp/xdg");
    EXPECT_EQ(defaultKernelCacheDirectory(), "/tmp/xdg/nestor/kernels");
  }
  {
    ScopedEnv nestor("NESTOR_CACHE_DIR", nullptr);
    ScopedEnv xdg("XDG_CACHE_HOME", "");
    ScopedEnv home("HOME", "/tmp/home-of-test");
    EXPECT_EQ(defaultKernelCacheDirectory(), "/tmp/home-of-test/.cache/nestor/kernels");
  }
}

//===----------------------------------------------------------------------===//
// CUDA driver without a device
//===----------------------------------------------------------------------===//

TEST(CudaDriverTest, OpenDeviceFailsClearlyWithoutAGpu) {
  llvm::Expected<CudaDevice> device = openDevice();
  if (device)
    GTEST_SKIP() << "a CUDA device is present (" << device->name() << ")";
  std::string message = llvm::toString(device.takeError());
  EXPECT_EQ(message.rfind("no CUDA device", 0), 0u) << message;
}

TEST(CudaDriverTest, MissingDriverLibraryIsNamed) {
  std::string message = errorMessage(openDevice(0, "libnestor-no-such-driver.so.1"));
  EXPECT_EQ(message.rfind("no CUDA device: ", 0), 0u) << message;
  EXPECT_TRUE(contains(message, "libnestor-no-such-driver.so.1")) << message;
}

TEST(CudaDriverTest, StubDriverReportsTheCuInitError) {
  const char *stub = "/usr/local/cuda/lib64/stubs/libcuda.so";
  if (!llvm::sys::fs::exists(stub))
    GTEST_SKIP() << "no CUDA stub library at " << stub;
  // The stub's soname is libcuda.so.1: once loaded, it would answer every later
  // dlopen("libcuda.so.1") in this process in place of a real driver.
  if (llvm::Expected<CudaDevice> device = openDevice())
    GTEST_SKIP() << "a CUDA device is present (" << device->name() << ")";
  else
    llvm::consumeError(device.takeError());
  std::string message = errorMessage(openDevice(0, stub));
  EXPECT_EQ(message.rfind("no CUDA device: cuInit failed with CUDA_ERROR_STUB_LIBRARY", 0), 0u)
      << message;
}

TEST(CudaDriverTest, KernelArgsKeepStableCopies) {
  KernelArgs args;
  args.add(int32_t{7}).add(2.5f).add(int64_t{1} << 40);
  for (int i = 0; i < 100; ++i) // growth must not move earlier arguments
    args.add(i);
  llvm::ArrayRef<void *> pointers = args.pointers();
  ASSERT_EQ(pointers.size(), 103u);
  int32_t i32;
  float f32;
  int64_t i64;
  std::memcpy(&i32, pointers[0], sizeof(i32));
  std::memcpy(&f32, pointers[1], sizeof(f32));
  std::memcpy(&i64, pointers[2], sizeof(i64));
  EXPECT_EQ(i32, 7);
  EXPECT_EQ(f32, 2.5f);
  EXPECT_EQ(i64, int64_t{1} << 40);
  std::memcpy(&i32, pointers[102], sizeof(i32));
  EXPECT_EQ(i32, 99);
}

//===----------------------------------------------------------------------===//
// On a GPU
//===----------------------------------------------------------------------===//

/// Opens device 0 or skips the test, saying why.
class CudaDeviceTest : public ::testing::Test {
protected:
  void SetUp() override {
    llvm::Expected<CudaDevice> opened = openDevice();
    if (!opened)
      GTEST_SKIP() << llvm::toString(opened.takeError()); // "no CUDA device: <why>"
    device.emplace(std::move(*opened));
  }

  /// The representative kernels compiled for this device and loaded.
  void loadRepresentative(Output output = Output::PTX) {
    llvm::Expected<CompiledModule> compiled =
        compile(representativeRequest(device->arch(), output));
    ASSERT_EXPECTED(compiled);
    llvm::Expected<Module> loaded = device->loadModule(*compiled);
    ASSERT_EXPECTED(loaded);
    module.emplace(std::move(*loaded));
  }

  Kernel kernel(llvm::StringRef name) {
    llvm::Expected<Kernel> function = module->function(name);
    if (!function) {
      ADD_FAILURE() << llvm::toString(function.takeError());
      return Kernel();
    }
    return *function;
  }

  template <typename T> std::optional<DeviceBuffer> upload(const std::vector<T> &host) {
    llvm::Expected<DeviceBuffer> buffer = device->allocate(host.size() * sizeof(T));
    if (!buffer) {
      ADD_FAILURE() << llvm::toString(buffer.takeError());
      return std::nullopt;
    }
    if (llvm::Error error = buffer->copyFromHost(host.data(), host.size() * sizeof(T))) {
      ADD_FAILURE() << llvm::toString(std::move(error));
      return std::nullopt;
    }
    return std::move(*buffer);
  }

  template <typename T> std::vector<T> download(const DeviceBuffer &buffer) {
    std::vector<T> host(buffer.size() / sizeof(T));
    if (llvm::Error error = buffer.copyToHost(host.data(), host.size() * sizeof(T)))
      ADD_FAILURE() << llvm::toString(std::move(error));
    return host;
  }

  std::optional<CudaDevice> device;
  std::optional<Module> module;
};

std::vector<float> randomFloats(size_t n, unsigned seed, float low = -2.0f, float high = 2.0f) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(low, high);
  std::vector<float> values(n);
  for (float &v : values)
    v = distribution(generator);
  return values;
}

TEST_F(CudaDeviceTest, MaskedRmsNormMatchesACpuLoop) {
  ASSERT_NO_FATAL_FAILURE(loadRepresentative());
  const int rows = 37, channels = 1000, active = 777;
  const float eps = 1e-5f;
  std::vector<float> x = randomFloats(size_t(rows) * channels, 1);
  std::vector<float> weight = randomFloats(channels, 2, 0.5f, 1.5f);
  std::vector<double> expected(x.size(), 0.0);
  for (int r = 0; r < rows; ++r) {
    double sumSquares = 0;
    for (int c = 0; c < active; ++c)
      sumSquares += double(x[r * channels + c]) * x[r * channels + c];
    double scale = 1.0 / std::sqrt(sumSquares / active + eps);
    for (int c = 0; c < active; ++c)
      expected[r * channels + c] = x[r * channels + c] * scale * weight[c];
  }

  auto xBuffer = upload(x), weightBuffer = upload(weight);
  ASSERT_TRUE(xBuffer && weightBuffer);
  Kernel rmsnorm = kernel("masked_rmsnorm");
  // One block per row, and fewer blocks than rows (each block loops over rows).
  for (auto [grid, block] : {std::pair<unsigned, unsigned>{rows, 256}, {5, 96}, {64, 1024}}) {
    SCOPED_TRACE(testing::Message() << "grid " << grid << ", block " << block);
    llvm::Expected<DeviceBuffer> y = device->allocate(x.size() * sizeof(float));
    ASSERT_EXPECTED(y);
    ASSERT_NO_ERROR(y->fill(0xff)); // NaNs: every element must be written
    KernelArgs args;
    args.add(*xBuffer).add(*weightBuffer).add(*y).add(rows).add(channels).add(active).add(eps);
    ASSERT_NO_ERROR(device->launch(rmsnorm, {grid}, {block}, 0, nullptr, args.pointers()));
    ASSERT_NO_ERROR(device->synchronize());
    std::vector<float> got = download<float>(*y);
    int bad = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      double tolerance = 1e-5 * std::fabs(expected[i]) + 1e-30;
      if (!(std::fabs(got[i] - expected[i]) <= tolerance) && bad++ < 5)
        ADD_FAILURE() << "element " << i << " (row " << i / channels << ", channel " << i % channels
                      << "): " << got[i] << " vs " << expected[i];
    }
    EXPECT_EQ(bad, 0);
  }
}

TEST_F(CudaDeviceTest, AxpyMatchesACpuLoopAlignedAndNot) {
  ASSERT_NO_FATAL_FAILURE(loadRepresentative(Output::CUBIN));
  Kernel axpy = kernel("axpy");
  for (long long n : {1LL, 3LL, 4LL, 1001LL, (1LL << 20) + 3}) {
    for (int offset : {0, 1}) { // offset 1 float: not 16-byte aligned, the scalar path
      SCOPED_TRACE(testing::Message() << "n " << n << ", offset " << offset);
      std::vector<float> x = randomFloats(n + offset, 3), y = randomFloats(n + offset, 4);
      const float a = 0.75f;
      auto xBuffer = upload(x), yBuffer = upload(y);
      ASSERT_TRUE(xBuffer && yBuffer);
      KernelArgs args;
      args.add(a)
          .add(xBuffer->address() + offset * sizeof(float))
          .add(yBuffer->address() + offset * sizeof(float))
          .add(n);
      ASSERT_NO_ERROR(device->launch(axpy, {40}, {128}, 0, nullptr, args.pointers()));
      std::vector<float> got = download<float>(*yBuffer);
      int bad = 0;
      for (long long i = 0; i < n + offset; ++i) {
        float want = i < offset ? y[i] : std::fma(a, x[i], y[i]);
        if (got[i] != want && bad++ < 5)
          ADD_FAILURE() << "element " << i << ": " << got[i] << " vs " << want;
      }
      EXPECT_EQ(bad, 0);
    }
  }
}

uint16_t referenceBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  if (std::isnan(value))
    return static_cast<uint16_t>((bits >> 16) | 0x40);
  uint32_t rounded = bits + 0x7fff + ((bits >> 16) & 1); // nearest, ties to even
  return static_cast<uint16_t>(rounded >> 16);
}

float floatFromBits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

TEST_F(CudaDeviceTest, Bf16AndPointwiseHelpersMatchCpu) {
  ASSERT_NO_FATAL_FAILURE(loadRepresentative());
  std::vector<float> x = {0.0f,
                          -0.0f,
                          1.0f,
                          -1.0f,
                          1e-3f,
                          100.0f,
                          -100.0f,
                          88.0f,
                          89.0f,
                          -1e4f,
                          1e30f,
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(),
                          floatFromBits(0x3f808000),  // exactly halfway, even below: rounds down
                          floatFromBits(0x3f818000),  // exactly halfway, odd below: rounds up
                          floatFromBits(0x3f808001),  // just above halfway: rounds up
                          floatFromBits(0x7f7fffff),  // the largest float: rounds to infinity
                          floatFromBits(0x00000001)}; // the smallest subnormal
  for (float v : randomFloats(200, 5, -30.0f, 30.0f))
    x.push_back(v);
  const long long n = static_cast<long long>(x.size());
  const unsigned grid = 3, block = 64;
  auto xBuffer = upload(x);
  ASSERT_TRUE(xBuffer);
  auto out = device->allocate(5 * n * sizeof(float));
  auto bits = device->allocate(n * sizeof(uint16_t));
  auto maxima = device->allocate(2 * grid * sizeof(float));
  ASSERT_EXPECTED(out);
  ASSERT_EXPECTED(bits);
  ASSERT_EXPECTED(maxima);
  KernelArgs args;
  args.add(*xBuffer).add(*out).add(*bits).add(*maxima).add(n);
  ASSERT_NO_ERROR(
      device->launch(kernel("pointwise"), {grid}, {block}, 0, nullptr, args.pointers()));
  std::vector<float> values = download<float>(*out);
  std::vector<uint16_t> bf16 = download<uint16_t>(*bits);

  auto close = [](double got, double want, double relative) {
    if (std::isnan(want))
      return std::isnan(got);
    if (std::isinf(want))
      return got == want;
    return std::fabs(got - want) <= relative * std::fabs(want) + 1e-37;
  };
  for (long long i = 0; i < n; ++i) {
    SCOPED_TRACE(testing::Message() << "x[" << i << "] = " << x[i]);
    const double v = x[i];
    EXPECT_EQ(bf16[i], referenceBf16(x[i]));
    EXPECT_TRUE(close(values[5 * i], floatFromBits(uint32_t(referenceBf16(x[i])) << 16), 0));
    double softplus =
        std::isinf(v) ? (v > 0 ? v : 0.0) : std::max(v, 0.0) + std::log1p(std::exp(-std::fabs(v)));
    double sigmoid = 1.0 / (1.0 + std::exp(-v));
    double safeExp = std::exp(std::min(v, double(88.7f)));
    EXPECT_TRUE(close(values[5 * i + 1], softplus, 2e-6))
        << values[5 * i + 1] << " vs " << softplus;
    EXPECT_TRUE(close(values[5 * i + 2], sigmoid, 2e-6)) << values[5 * i + 2] << " vs " << sigmoid;
    if (!std::isinf(v)) { // -inf * 0 is NaN on both sides
      EXPECT_TRUE(close(values[5 * i + 3], v * sigmoid, 2e-6)) << values[5 * i + 3];
    }
    EXPECT_TRUE(close(values[5 * i + 4], safeExp, 2e-6)) << values[5 * i + 4] << " vs " << safeExp;
    EXPECT_FALSE(std::isinf(values[5 * i + 4])) << "safeExp overflowed";
  }
  // Block b's threads see the chunks [b * block + k * grid * block, + block) of x.
  std::vector<float> blockResults = download<float>(*maxima);
  for (unsigned b = 0; b < grid; ++b) {
    float want = -std::numeric_limits<float>::infinity();
    for (long long chunk = b * block; chunk < n; chunk += grid * block)
      for (long long i = chunk; i < std::min(n, chunk + (long long)block); ++i)
        if (!std::isnan(x[i])) // fmaxf ignores NaN
          want = std::max(want, x[i]);
    EXPECT_EQ(blockResults[2 * b], want) << "block " << b;
    double shifted = std::isinf(want) ? 0.0 : std::exp(double(x[0]) - want);
    EXPECT_TRUE(close(blockResults[2 * b + 1], shifted, 2e-6)) << "block " << b;
  }
}

TEST_F(CudaDeviceTest, Float64BlockSumOfBf16Pairs) {
  ASSERT_NO_FATAL_FAILURE(loadRepresentative());
  const int rows = 7, pairsPerRow = 333;
  std::vector<uint32_t> pairs(size_t(rows) * pairsPerRow);
  std::vector<float> values = randomFloats(2 * pairs.size(), 6);
  for (size_t p = 0; p < pairs.size(); ++p)
    pairs[p] =
        uint32_t(referenceBf16(values[2 * p])) | (uint32_t(referenceBf16(values[2 * p + 1])) << 16);
  auto pairsBuffer = upload(pairs);
  ASSERT_TRUE(pairsBuffer);
  auto sums = device->allocate(rows * sizeof(double));
  ASSERT_EXPECTED(sums);
  KernelArgs args;
  args.add(*pairsBuffer).add(*sums).add(pairsPerRow);
  ASSERT_NO_ERROR(
      device->launch(kernel("row_sum_f64"), {unsigned(rows)}, {160}, 0, nullptr, args.pointers()));
  std::vector<double> got = download<double>(*sums);
  for (int r = 0; r < rows; ++r) {
    double want = 0;
    for (int p = 0; p < pairsPerRow; ++p) {
      uint32_t packed = pairs[size_t(r) * pairsPerRow + p];
      want += double(floatFromBits(packed << 16)) + double(floatFromBits(packed & 0xffff0000u));
    }
    EXPECT_NEAR(got[r], want, 1e-12 * std::max(1.0, std::fabs(want))) << "row " << r;
  }
}

TEST_F(CudaDeviceTest, DeviceToDeviceCopyTimedWithEvents) {
  const size_t bytes = size_t(256) << 20;
  auto source = device->allocate(bytes);
  auto target = device->allocate(bytes);
  ASSERT_EXPECTED(source);
  ASSERT_EXPECTED(target);
  ASSERT_NO_ERROR(source->fill(0x5a));
  ASSERT_NO_ERROR(target->fill(0));
  auto stream = device->createStream();
  ASSERT_EXPECTED(stream);
  auto start = device->createEvent();
  auto stop = device->createEvent();
  ASSERT_EXPECTED(start);
  ASSERT_EXPECTED(stop);
  ASSERT_NO_ERROR(target->copyFrom(*source, bytes)); // warm-up
  ASSERT_NO_ERROR(start->record());
  ASSERT_NO_ERROR(target->copyFrom(*source, bytes));
  ASSERT_NO_ERROR(stop->record());
  ASSERT_NO_ERROR(stop->synchronize());
  llvm::Expected<float> milliseconds = elapsedMilliseconds(*start, *stop);
  ASSERT_EXPECTED(milliseconds);
  EXPECT_GT(*milliseconds, 0.0f);
  std::printf("[ timing   ] %s: device-to-device copy of %zu MiB in %.3f ms (%.1f GB/s "
              "read + write)\n",
              device->name().c_str(), bytes >> 20, *milliseconds,
              2.0 * bytes / (*milliseconds * 1e-3) / 1e9);
  ASSERT_NO_ERROR(stream->synchronize());
  std::vector<uint8_t> head(4096), tail(4096);
  ASSERT_NO_ERROR(target->copyToHost(head.data(), head.size()));
  ASSERT_NO_ERROR(target->copyToHost(tail.data(), tail.size(), bytes - tail.size()));
  EXPECT_TRUE(llvm::all_of(head, [](uint8_t b) { return b == 0x5a; }));
  EXPECT_TRUE(llvm::all_of(tail, [](uint8_t b) { return b == 0x5a; }));
  // Out-of-range copies are refused before they reach the driver.
  EXPECT_TRUE(llvm::errorToBool(target->copyToHost(head.data(), 16, bytes - 8)));
}

TEST_F(CudaDeviceTest, ReportsItsArchitectureAndFindsNoMissingEntryPoint) {
  EXPECT_EQ(device->arch(), "sm_" + std::to_string(device->computeCapability()));
  EXPECT_GT(device->multiprocessorCount(), 0);
  EXPECT_GT(device->totalMemory(), 0u);
  ASSERT_NO_FATAL_FAILURE(loadRepresentative());
  llvm::Expected<Kernel> missing = module->function("no_such_kernel");
  std::string message = errorMessage(std::move(missing));
  EXPECT_TRUE(contains(message, "cuModuleGetFunction(no_such_kernel)")) << message;
  EXPECT_TRUE(contains(message, "CUDA_ERROR_NOT_FOUND")) << message;
}

} // namespace
