//===- nestor_standalone.h - Runtime of `nestor build` executables -*- C++ -*-===//
//
// The fixed part of every program `nestor build` generates: it is embedded in the Nestor
// library and pasted in front of the generated model code, so a generated program is one
// translation unit that needs only the C++17 standard library and nlohmann/json (for the
// safetensors header) to compile, and only the standard library to run (on a GPU, the CUDA
// driver too, which it opens with dlopen where it finds one: see namespace gpu).
//
// The layer kernels take every size as a template parameter: the generated code instantiates
// one layer type per layer of the model with that layer's sizes, so every loop bound, buffer
// size and matrix stride is a compile-time constant. The arithmetic is the library decoder's
// (runtime/decode/Decoder.cpp) written for a dense model: the same RMSNorm with its double
// accumulation, the same conv window, SSM discretisation and gated group norm, the same
// attention softmax, so a generated program writes the tokens `nestor generate` writes (the
// matrix-vector products sum in another order, which moves logits by rounding only).
//
// Weights are read from a safetensors file (F32) beside the executable; every tensor's name,
// dtype, shape and byte range is checked against what the model expects, and a mismatch is
// an error naming the tensor and the file.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_STANDALONE_H
#define NESTOR_STANDALONE_H

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__linux__) && __has_include(<dlfcn.h>)
#include <dlfcn.h>
#define NESTOR_STANDALONE_HAVE_DLOPEN 1
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this runtime reads it in place"
#endif

// Matrix-vector products are the whole cost of decoding. Built for the baseline ISA they
// would run at a fraction of the speed of the BLAS the library decoder uses, so on x86 (GCC
// or Clang) they are also built for AVX2 and AVX-512 and the best the CPU has is picked at
// run time: no -march flag is needed and the binary still runs on any x86-64. (Dispatch is by
// hand because Clang's target_clones does not take templates.)
#if defined(__x86_64__) && defined(__GNUC__)
#define NESTOR_STANDALONE_X86_DISPATCH 1
#define NESTOR_STANDALONE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define NESTOR_STANDALONE_TARGET_AVX512                                                            \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#endif

#if defined(__GNUC__)
#define NESTOR_STANDALONE_INLINE inline __attribute__((always_inline))
#else
#define NESTOR_STANDALONE_INLINE inline
#endif

namespace nestor::standalone {

//===----------------------------------------------------------------------===//
// Errors and the byte tokenizer
//===----------------------------------------------------------------------===//

/// A failure the program reports on stderr before exiting non-zero.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A bad command line (exit status 2, with a pointer to --help).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// The byte tokenizer of nestor/Data.h: one token per byte; kPad, kBos and kEos are the
/// control bytes 0, 1, 2, which decoding drops.
constexpr std::int32_t kPad = 0, kBos = 1, kEos = 2;
constexpr std::int32_t kByteVocabSize = 256;

inline std::vector<std::int32_t> encodeBytes(const std::string &text) {
  std::vector<std::int32_t> tokens;
  tokens.reserve(text.size());
  for (unsigned char c : text)
    tokens.push_back(c);
  return tokens;
}

inline std::string decodeBytes(const std::vector<std::int32_t> &tokens) {
  std::string text;
  text.reserve(tokens.size());
  for (std::int32_t t : tokens)
    if (t != kPad && t != kBos && t != kEos && t >= 0 && t < kByteVocabSize)
      text.push_back(static_cast<char>(t));
  return text;
}

inline std::string shapeString(const std::vector<std::uint64_t> &shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

//===----------------------------------------------------------------------===//
// safetensors
//===----------------------------------------------------------------------===//

/// A safetensors file opened for reading the tensors a model asks for by name and shape. Only
/// the header is held in memory; each tensor is read straight into the buffer that keeps it.
class WeightsFile {
public:
  explicit WeightsFile(const std::string &path) : path(path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      throw Failure(path + ": the weights file does not exist (pass --weights PATH)");
    if (!std::filesystem::is_regular_file(path, ec))
      throw Failure(path + ": the weights file is not a regular file");
    in.open(path, std::ios::binary);
    if (!in)
      throw Failure(path + ": cannot open the weights file: " + std::strerror(errno));
    in.seekg(0, std::ios::end);
    std::uint64_t fileSize = static_cast<std::uint64_t>(in.tellg());
    in.seekg(0, std::ios::beg);
    unsigned char lengthBytes[8];
    if (fileSize < 8 || !in.read(reinterpret_cast<char *>(lengthBytes), 8))
      throw Failure(path + ": not a safetensors file (shorter than its 8-byte header length)");
    std::uint64_t headerLength = 0;
    for (int i = 7; i >= 0; --i)
      headerLength = (headerLength << 8) | lengthBytes[i];
    if (headerLength > fileSize - 8)
      throw Failure(path + ": not a safetensors file (a header of " + std::to_string(headerLength) +
                    " bytes in a file of " + std::to_string(fileSize) + ")");
    std::string headerText(static_cast<std::size_t>(headerLength), '\0');
    if (!in.read(headerText.data(), static_cast<std::streamsize>(headerLength)))
      throw Failure(path + ": cannot read the safetensors header");
    header = nlohmann::json::parse(headerText, nullptr, /*allow_exceptions=*/false);
    if (header.is_discarded() || !header.is_object())
      throw Failure(path + ": the safetensors header is not a JSON object");
    dataStart = 8 + headerLength;
    dataSize = fileSize - dataStart;
  }

  /// Fills `out` with the F32 tensor `name`, which must have exactly `shape`.
  void read(const std::string &name, const std::vector<std::uint64_t> &shape,
            std::vector<float> &out) {
    auto it = header.find(name);
    if (it == header.end() || name == "__metadata__")
      throw Failure(path + ": no tensor '" + name + "' (expected shape " + shapeString(shape) +
                    "); are these the weights this program was built for?");
    const nlohmann::json &entry = *it;
    auto bad = [&](const std::string &why) {
      return Failure(path + ": tensor '" + name + "': " + why);
    };
    if (!entry.is_object())
      throw bad("its header entry is not a JSON object");
    auto dtype = entry.find("dtype");
    if (dtype == entry.end() || !dtype->is_string())
      throw bad("no dtype");
    if (*dtype != "F32")
      throw bad("dtype " + dtype->get<std::string>() + ", expected F32");
    auto shapeEntry = entry.find("shape");
    if (shapeEntry == entry.end() || !shapeEntry->is_array())
      throw bad("no shape");
    std::vector<std::uint64_t> got;
    for (const nlohmann::json &dim : *shapeEntry) {
      if (!dim.is_number_unsigned())
        throw bad("the shape holds something other than sizes");
      got.push_back(dim.get<std::uint64_t>());
    }
    if (got != shape)
      throw bad("shape " + shapeString(got) + ", expected " + shapeString(shape));
    auto offsets = entry.find("data_offsets");
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 ||
        !(*offsets)[0].is_number_unsigned() || !(*offsets)[1].is_number_unsigned())
      throw bad("no data_offsets [begin, end]");
    std::uint64_t begin = (*offsets)[0].get<std::uint64_t>();
    std::uint64_t end = (*offsets)[1].get<std::uint64_t>();
    std::uint64_t count = 1;
    for (std::uint64_t d : shape)
      count *= d; // the shape is the model's, so this cannot overflow
    if (begin > end || end > dataSize)
      throw bad("data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                "] lie outside the " + std::to_string(dataSize) + " bytes of data (truncated?)");
    if (end - begin != count * sizeof(float))
      throw bad(std::to_string(end - begin) + " bytes of data for " + std::to_string(count) +
                " float32 values");
    out.assign(static_cast<std::size_t>(count), 0.0f);
    in.seekg(static_cast<std::streamoff>(dataStart + begin), std::ios::beg);
    if (!in.read(reinterpret_cast<char *>(out.data()),
                 static_cast<std::streamsize>(count * sizeof(float))))
      throw bad("cannot read its data");
  }

  const std::string &fileName() const { return path; }

private:
  std::string path;
  std::ifstream in;
  nlohmann::json header;
  std::uint64_t dataStart = 0, dataSize = 0;
};

inline std::string layerTensor(std::size_t layer, const char *suffix) {
  return "backbone.layers." + std::to_string(layer) + "." + suffix;
}

//===----------------------------------------------------------------------===//
// Kernels
//===----------------------------------------------------------------------===//

/// 16 float lanes: one AVX-512 register, two AVX2 ones. GCC and Clang keep such vectors in
/// registers, where plain arrays of partial sums would stay in memory with each update
/// waiting on the previous store. (Never passed or returned by value: that would tie the
/// ABI to the instruction set.)
#if defined(__GNUC__)
typedef float Lanes __attribute__((vector_size(16 * sizeof(float))));
#endif

/// y[r] = W[r, :] . x for `Block` consecutive rows of a row-major W with `Cols` columns. The
/// partial sums sit in 16 independent lanes (vectorised without reassociating anything),
/// then the lanes are added pairwise in a fixed tree (elementwise halves, so that too runs
/// as vector adds), then the tail: the same arithmetic for a row whatever block it is in.
template <std::size_t Block, std::size_t Cols>
NESTOR_STANDALONE_INLINE void dotRows(const float *w, const float *x, float *y) {
  constexpr std::size_t kLanes = 16, kBody = Cols / kLanes * kLanes;
  float lanes[Block][kLanes] = {};
#if defined(__GNUC__)
  Lanes acc[Block] = {};
  for (std::size_t j = 0; j < kBody; j += kLanes) {
    Lanes xv, wv;
    std::memcpy(&xv, x + j, sizeof(xv));
    // Unrolled, the accumulators are registers; rolled, GCC keeps them in memory.
#pragma GCC unroll 16
    for (std::size_t r = 0; r < Block; ++r) {
      std::memcpy(&wv, w + r * Cols + j, sizeof(wv));
      acc[r] += wv * xv;
    }
  }
  std::memcpy(lanes, acc, sizeof(lanes));
#else
  for (std::size_t j = 0; j < kBody; j += kLanes)
    for (std::size_t r = 0; r < Block; ++r)
      for (std::size_t l = 0; l < kLanes; ++l)
        lanes[r][l] += w[r * Cols + j + l] * x[j + l];
#endif
  for (std::size_t r = 0; r < Block; ++r) {
    float *v = lanes[r];
    for (std::size_t half = kLanes / 2; half > 0; half /= 2)
      for (std::size_t l = 0; l < half; ++l)
        v[l] += v[l + half];
    float sum = v[0];
    for (std::size_t j = kBody; j < Cols; ++j)
      sum += w[r * Cols + j] * x[j];
    y[r] = sum;
  }
}

/// y = W x for a row-major W [Rows, Cols]: every row is read once, front to back, `Block` at
/// a time so that each load of x serves that many streams of weights and as many independent
/// accumulators hide the latency of the multiply-adds.
template <std::size_t Block, std::size_t Rows, std::size_t Cols>
NESTOR_STANDALONE_INLINE void matvecBody(const float *w, const float *x, float *y) {
  constexpr std::size_t kBlocked = Rows / Block * Block;
  for (std::size_t r = 0; r < kBlocked; r += Block)
    dotRows<Block, Cols>(w + r * Cols, x, y + r);
  if constexpr (kBlocked < Rows)
    for (std::size_t r = kBlocked; r < Rows; ++r)
      dotRows<1, Cols>(w + r * Cols, x, y + r);
}

#ifdef NESTOR_STANDALONE_X86_DISPATCH
enum class VectorLevel { Baseline, Avx2, Avx512 };

inline VectorLevel detectVectorLevel() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    return VectorLevel::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return VectorLevel::Avx2;
  return VectorLevel::Baseline;
}

inline VectorLevel vectorLevel() {
  static const VectorLevel level = detectVectorLevel();
  return level;
}

// Blocks sized to the register file: 8 rows are 8 of the 32 zmm registers, 4 rows are 8 of
// the 16 ymm ones, 2 rows 8 of the 16 xmm ones.
template <std::size_t Rows, std::size_t Cols>
NESTOR_STANDALONE_TARGET_AVX512 void matvecAvx512(const float *w, const float *x, float *y) {
  matvecBody<8, Rows, Cols>(w, x, y);
}
template <std::size_t Rows, std::size_t Cols>
NESTOR_STANDALONE_TARGET_AVX2 void matvecAvx2(const float *w, const float *x, float *y) {
  matvecBody<4, Rows, Cols>(w, x, y);
}
template <std::size_t Rows, std::size_t Cols>
void matvecBaseline(const float *w, const float *x, float *y) {
  matvecBody<2, Rows, Cols>(w, x, y);
}
#endif

template <std::size_t Rows, std::size_t Cols>
void matvec(const float *w, const float *x, float *y) {
#ifdef NESTOR_STANDALONE_X86_DISPATCH
  switch (vectorLevel()) {
  case VectorLevel::Avx512:
    return matvecAvx512<Rows, Cols>(w, x, y);
  case VectorLevel::Avx2:
    return matvecAvx2<Rows, Cols>(w, x, y);
  case VectorLevel::Baseline:
    break;
  }
  return matvecBaseline<Rows, Cols>(w, x, y);
#else
  matvecBody<4, Rows, Cols>(w, x, y);
#endif
}

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

/// The RMSNorm of METHOD.md §1: weight only, the sum of squares in double.
template <std::size_t D> struct RmsNorm {
  std::vector<float> weight;

  void load(WeightsFile &file, const std::string &name) { file.read(name, {D}, weight); }

  void apply(const float *x, float *out, double eps) const {
    double ss = 0.0;
    for (std::size_t i = 0; i < D; ++i)
      ss += double(x[i]) * double(x[i]);
    float inv = static_cast<float>(1.0 / std::sqrt(ss / double(D) + eps));
    for (std::size_t i = 0; i < D; ++i)
      out[i] = x[i] * inv * weight[i];
  }
};

//===----------------------------------------------------------------------===//
// Layers: h <- h + Mixer(RMSNorm(h))
//===----------------------------------------------------------------------===//

/// The squared-ReLU MLP: down(relu(up x)^2), up [F, D], down [D, F].
template <std::size_t D, std::size_t F> struct MlpLayer {
  RmsNorm<D> norm;
  std::vector<float> up, down;
  std::array<float, D> x{}, mix{};
  std::array<float, F> act{};

  void load(WeightsFile &file, std::size_t layer) {
    norm.load(file, layerTensor(layer, "norm.weight"));
    file.read(layerTensor(layer, "mixer.up_proj.weight"), {F, D}, up);
    file.read(layerTensor(layer, "mixer.down_proj.weight"), {D, F}, down);
  }
  void reset() {}

  void step(float *h, double eps) {
    norm.apply(h, x.data(), eps);
    matvec<F, D>(up.data(), x.data(), act.data());
    for (float &a : act) {
      float r = std::max(a, 0.0f);
      a = r * r;
    }
    matvec<D, F>(down.data(), act.data(), mix.data());
    for (std::size_t c = 0; c < D; ++c)
      h[c] += mix[c];
  }
};

/// Grouped-query causal attention without positional encoding: NH query heads of HD
/// channels, query head i reads KV head i / (NH / NKV). The KV cache grows by one row per
/// token.
template <std::size_t D, std::size_t NH, std::size_t NKV, std::size_t HD> struct AttentionLayer {
  static_assert(NKV > 0 && NH % NKV == 0, "query heads come in whole KV groups");
  static constexpr std::size_t kQ = NH * HD, kKV = NKV * HD, kPerKV = NH / NKV;

  RmsNorm<D> norm;
  std::vector<float> q, k, v, o;
  std::vector<float> keys, values, scores; // keys/values: [position, kKV]
  std::size_t length = 0;
  std::array<float, D> x{}, mix{};
  std::array<float, kQ> query{}, heads{};

  void load(WeightsFile &file, std::size_t layer) {
    norm.load(file, layerTensor(layer, "norm.weight"));
    file.read(layerTensor(layer, "mixer.q_proj.weight"), {kQ, D}, q);
    file.read(layerTensor(layer, "mixer.k_proj.weight"), {kKV, D}, k);
    file.read(layerTensor(layer, "mixer.v_proj.weight"), {kKV, D}, v);
    file.read(layerTensor(layer, "mixer.o_proj.weight"), {D, kQ}, o);
  }
  void reset() {
    keys.clear();
    values.clear();
    length = 0;
  }

  void step(float *h, double eps) {
    norm.apply(h, x.data(), eps);
    matvec<kQ, D>(q.data(), x.data(), query.data());
    keys.resize((length + 1) * kKV);
    values.resize((length + 1) * kKV);
    matvec<kKV, D>(k.data(), x.data(), keys.data() + length * kKV);
    matvec<kKV, D>(v.data(), x.data(), values.data() + length * kKV);
    ++length;
    scores.resize(length);
    const float scale = 1.0f / std::sqrt(static_cast<float>(HD));
    for (std::size_t i = 0; i < NH; ++i) {
      const float *qi = query.data() + i * HD;
      std::size_t g = i / kPerKV;
      float mx = -std::numeric_limits<float>::infinity();
      for (std::size_t s = 0; s < length; ++s) {
        const float *ks = keys.data() + s * kKV + g * HD;
        float dot = 0.0f;
        for (std::size_t e = 0; e < HD; ++e)
          dot += qi[e] * ks[e];
        scores[s] = dot * scale;
        mx = std::max(mx, scores[s]);
      }
      float sum = 0.0f;
      for (std::size_t s = 0; s < length; ++s)
        sum += (scores[s] = std::exp(scores[s] - mx));
      float *oi = heads.data() + i * HD;
      std::fill(oi, oi + HD, 0.0f);
      for (std::size_t s = 0; s < length; ++s) {
        const float *vs = values.data() + s * kKV + g * HD;
        float p = scores[s] / sum;
        for (std::size_t e = 0; e < HD; ++e)
          oi[e] += p * vs[e];
      }
    }
    matvec<D, kQ>(o.data(), heads.data(), mix.data());
    for (std::size_t c = 0; c < D; ++c)
      h[c] += mix[c];
  }
};

/// The Mamba2 mixer (METHOD.md §1): H heads of P channels in G groups, state N, a depthwise
/// causal conv of K taps over [x, B, C]. in_proj rows are [z (HP), x (HP), B (GN), C (GN),
/// dt (H)]; the conv weight is [HP + 2GN, K] with the newest input at tap K - 1.
template <std::size_t D, std::size_t H, std::size_t P, std::size_t G, std::size_t N, std::size_t K>
struct MambaLayer {
  static_assert(G > 0 && H % G == 0, "Mamba heads come in whole groups");
  static_assert(K >= 1, "the conv has at least one tap");
  static constexpr std::size_t kInner = H * P, kGN = G * N, kConv = kInner + 2 * kGN;
  static constexpr std::size_t kIn = 2 * kInner + 2 * kGN + H, kPerGroup = H / G;
  static constexpr std::size_t kGroupSize = kInner / G, kHistory = K - 1;

  RmsNorm<D> norm;
  std::vector<float> inProj, convWeight, convBias, dtBias, aLog, dSkip, gateNorm, outProj;
  std::vector<float> convHistory; // [kConv, K - 1], oldest tap first
  std::vector<float> ssm;         // [H, P, N]
  std::array<float, D> x{}, mix{};
  std::array<float, kIn> proj{};
  std::array<float, kConv> xbc{};
  std::array<float, kInner> y{};

  void load(WeightsFile &file, std::size_t layer) {
    norm.load(file, layerTensor(layer, "norm.weight"));
    file.read(layerTensor(layer, "mixer.in_proj.weight"), {kIn, D}, inProj);
    file.read(layerTensor(layer, "mixer.conv1d.weight"), {kConv, K}, convWeight);
    file.read(layerTensor(layer, "mixer.conv1d.bias"), {kConv}, convBias);
    file.read(layerTensor(layer, "mixer.dt_bias"), {H}, dtBias);
    file.read(layerTensor(layer, "mixer.A_log"), {H}, aLog);
    file.read(layerTensor(layer, "mixer.D"), {H}, dSkip);
    file.read(layerTensor(layer, "mixer.norm.weight"), {kInner}, gateNorm);
    file.read(layerTensor(layer, "mixer.out_proj.weight"), {D, kInner}, outProj);
  }
  void reset() {
    convHistory.assign(kConv * kHistory, 0.0f);
    ssm.assign(kInner * N, 0.0f);
  }

  void step(float *h, double eps) {
    norm.apply(h, x.data(), eps);
    matvec<kIn, D>(inProj.data(), x.data(), proj.data());
    const float *z = proj.data(), *xin = z + kInner, *dt = xin + kConv;
    // Depthwise causal conv: the window is the last K - 1 inputs (zero before the first
    // token), then SiLU.
    for (std::size_t c = 0; c < kConv; ++c) {
      const float *w = convWeight.data() + c * K;
      float *past = convHistory.data() + c * kHistory;
      float acc = convBias[c];
      for (std::size_t j = 0; j < kHistory; ++j)
        acc += w[j] * past[j];
      acc += w[K - 1] * xin[c];
      xbc[c] = silu(acc);
      if constexpr (kHistory > 0) {
        for (std::size_t j = 0; j + 1 < kHistory; ++j)
          past[j] = past[j + 1];
        past[kHistory - 1] = xin[c];
      }
    }
    // The SSM recurrence, zero-order hold: s <- exp(dt A) s + dt x B, y = C.s + D x, gated by
    // silu(z).
    const float *xs = xbc.data(), *bAll = xs + kInner, *cAll = bAll + kGN;
    for (std::size_t i = 0; i < H; ++i) {
      std::size_t g = i / kPerGroup;
      float a = -std::exp(aLog[i]);
      float delta = softplus(dt[i] + dtBias[i]);
      float decay = std::exp(delta * a), skip = dSkip[i];
      const float *bt = bAll + g * N, *ct = cAll + g * N;
      for (std::size_t p = 0; p < P; ++p) {
        float xp = xs[i * P + p], dx = delta * xp;
        float *s = ssm.data() + (i * P + p) * N;
        float out = skip * xp;
        for (std::size_t e = 0; e < N; ++e) {
          s[e] = decay * s[e] + dx * bt[e];
          out += s[e] * ct[e];
        }
        y[i * P + p] = out * silu(z[i * P + p]);
      }
    }
    // Gated group RMSNorm over G groups of HP / G channels.
    for (std::size_t g = 0; g < G; ++g) {
      float *vg = y.data() + g * kGroupSize;
      const float *wg = gateNorm.data() + g * kGroupSize;
      double ss = 0.0;
      for (std::size_t c = 0; c < kGroupSize; ++c)
        ss += double(vg[c]) * double(vg[c]);
      float inv = static_cast<float>(1.0 / std::sqrt(ss / double(kGroupSize) + eps));
      for (std::size_t c = 0; c < kGroupSize; ++c)
        vg[c] = vg[c] * inv * wg[c];
    }
    matvec<D, kInner>(outProj.data(), y.data(), mix.data());
    for (std::size_t c = 0; c < D; ++c)
      h[c] += mix[c];
  }
};

/// The token embedding [V, D].
template <std::size_t V, std::size_t D> struct Embedding {
  std::vector<float> table;

  void load(WeightsFile &file) { file.read("backbone.embeddings.weight", {V, D}, table); }
  void lookup(std::int32_t token, float *h) const {
    const float *row = table.data() + static_cast<std::size_t>(token) * D;
    std::copy(row, row + D, h);
  }
};

/// The final RMSNorm and the LM head [V, D] (the embedding itself when `Tied`).
template <std::size_t V, std::size_t D, bool Tied> struct LmHead {
  RmsNorm<D> norm;
  std::vector<float> weight; // untied only
  const float *matrix = nullptr;
  std::array<float, D> x{};
  std::vector<float> logits = std::vector<float>(V);

  void load(WeightsFile &file, const Embedding<V, D> &embedding) {
    norm.load(file, "backbone.norm_f.weight");
    if constexpr (Tied) {
      matrix = embedding.table.data();
    } else {
      file.read("lm_head.weight", {V, D}, weight);
      matrix = weight.data();
    }
  }
  const float *apply(const float *h, double eps) {
    norm.apply(h, x.data(), eps);
    matvec<V, D>(matrix, x.data(), logits.data());
    return logits.data();
  }
};

//===----------------------------------------------------------------------===//
// The GPU: the CUDA driver, opened at run time, and the layers' GPU twins
//===----------------------------------------------------------------------===//

namespace gpu {

/// A device address, as kernels receive pointers (cuLaunchKernel reads 8 bytes per pointer).
using DevicePtr = std::uint64_t;

/// Threads per block; the kernels (nestor_standalone_device.cuh) are built for this many.
constexpr unsigned kThreads = 128, kWarps = kThreads / 32;

inline unsigned blocksFor(std::size_t threads) {
  return static_cast<unsigned>((threads + kThreads - 1) / kThreads);
}
/// Blocks for a kernel with one warp per row (matrix-vector products, the SSM step).
inline unsigned warpBlocksFor(std::size_t rows) {
  return static_cast<unsigned>((rows + kWarps - 1) / kWarps);
}
inline DevicePtr offsetFloats(DevicePtr base, std::size_t floats) {
  return base + floats * sizeof(float);
}

/// What the decode step needs of a GPU. Every call that fails throws Failure.
class Gpu {
public:
  virtual ~Gpu() = default;
  /// Names the device in --stats.
  virtual std::string name() const = 0;
  /// `bytes` of device memory, zeroed, freed with the Gpu.
  virtual DevicePtr allocate(std::size_t bytes) = 0;
  virtual void upload(DevicePtr dst, const void *src, std::size_t bytes) = 0;
  /// Waits for the launches before it.
  virtual void download(void *dst, DevicePtr src, std::size_t bytes) = 0;
  virtual void zero(DevicePtr dst, std::size_t bytes) = 0;
  /// The entry point `name` of the program's kernels.
  virtual const void *kernel(const std::string &name) = 0;
  /// Launches `kernel` on `grid` blocks of kThreads; `params[i]` points to argument i.
  virtual void launch(const void *kernel, unsigned grid, void **params) = 0;
};

/// An entry point bound to its GPU; calling it launches it. The argument types must be the
/// kernel's exactly in size: DevicePtr for pointers, int, double.
class Kernel {
public:
  Kernel() = default;
  Kernel(Gpu &gpu, const std::string &name) : gpu(&gpu), handle(gpu.kernel(name)) {}
  template <class... Args> void operator()(unsigned grid, Args... args) const {
    void *params[] = {static_cast<void *>(&args)..., nullptr};
    gpu->launch(handle, grid, params);
  }

private:
  Gpu *gpu = nullptr;
  const void *handle = nullptr;
};

/// The CUDA driver API opened with dlopen("libcuda.so.1") (linking it would stop the program
/// from starting where there is no NVIDIA driver), device 0's primary context, and the PTX
/// the program embeds, JIT-compiled by the driver for the device.
class DriverGpu final : public Gpu {
public:
  explicit DriverGpu(const char *ptx) {
#ifndef NESTOR_STANDALONE_HAVE_DLOPEN
    (void)ptx;
    throw Failure("no CUDA device: this program runs CUDA only on Linux");
#else
    library = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!library) {
      const char *why = ::dlerror();
      throw Failure(std::string("no CUDA device: the CUDA driver library libcuda.so.1 was not "
                                "found (") +
                    (why ? why : "dlopen failed") + ")");
    }
    resolve(api.cuInit, "cuInit");
    resolve(api.cuDeviceGetCount, "cuDeviceGetCount");
    resolve(api.cuDeviceGet, "cuDeviceGet");
    resolve(api.cuDeviceGetName, "cuDeviceGetName");
    resolve(api.cuDeviceGetAttribute, "cuDeviceGetAttribute");
    resolve(api.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    resolve(api.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    resolve(api.cuCtxSetCurrent, "cuCtxSetCurrent");
    resolve(api.cuModuleLoadDataEx, "cuModuleLoadDataEx");
    resolve(api.cuModuleUnload, "cuModuleUnload");
    resolve(api.cuModuleGetFunction, "cuModuleGetFunction");
    resolve(api.cuLaunchKernel, "cuLaunchKernel");
    resolve(api.cuMemAlloc, "cuMemAlloc_v2");
    resolve(api.cuMemFree, "cuMemFree_v2");
    resolve(api.cuMemcpyHtoD, "cuMemcpyHtoD_v2");
    resolve(api.cuMemcpyDtoH, "cuMemcpyDtoH_v2");
    resolve(api.cuMemsetD8, "cuMemsetD8_v2");
    resolve(api.cuGetErrorName, "cuGetErrorName");
    resolve(api.cuGetErrorString, "cuGetErrorString");
    int count = 0;
    // No device at all is not a failure of the driver: say so plainly.
    if (int rc = api.cuInit(0); rc != 0)
      throw Failure("no CUDA device: " + describe(rc, "cuInit"));
    check(api.cuDeviceGetCount(&count), "cuDeviceGetCount");
    if (count == 0)
      throw Failure("no CUDA device: the driver reports none");
    check(api.cuDeviceGet(&device, 0), "cuDeviceGet");
    char deviceName[256] = {};
    check(api.cuDeviceGetName(deviceName, sizeof(deviceName) - 1, device), "cuDeviceGetName");
    int major = 0, minor = 0;
    check(api.cuDeviceGetAttribute(&major, 75, device), "cuDeviceGetAttribute"); // CC major
    check(api.cuDeviceGetAttribute(&minor, 76, device), "cuDeviceGetAttribute"); // CC minor
    deviceLabel =
        std::string(deviceName) + " (sm_" + std::to_string(major) + std::to_string(minor) + ")";
    check(api.cuDevicePrimaryCtxRetain(&context, device), "cuDevicePrimaryCtxRetain");
    check(api.cuCtxSetCurrent(context), "cuCtxSetCurrent");
    // The JIT's error log says why PTX does not load (an architecture newer than the driver).
    std::vector<char> log(8192, '\0');
    int options[] = {5 /*CU_JIT_ERROR_LOG_BUFFER*/, 6 /*CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES*/};
    void *values[] = {log.data(), reinterpret_cast<void *>(log.size() - 1)};
    if (int rc = api.cuModuleLoadDataEx(&module, ptx, 2, options, values); rc != 0)
      throw Failure(describe(rc, "cuModuleLoadDataEx (loading the program's PTX)") +
                    (log[0] ? ": " + std::string(log.data()) : std::string()));
#endif
  }

  ~DriverGpu() override {
#ifdef NESTOR_STANDALONE_HAVE_DLOPEN
    if (context) {
      api.cuCtxSetCurrent(context);
      for (DevicePtr p : allocations)
        api.cuMemFree(p);
      if (module)
        api.cuModuleUnload(module);
      api.cuDevicePrimaryCtxRelease(device);
    }
    // The driver stays loaded: it may have registered handlers that outlive this object.
#endif
  }

  std::string name() const override { return deviceLabel; }

  DevicePtr allocate(std::size_t bytes) override {
    DevicePtr p = 0;
    check(api.cuMemAlloc(&p, bytes == 0 ? 1 : bytes), "cuMemAlloc_v2");
    allocations.push_back(p);
    zero(p, bytes);
    return p;
  }
  void upload(DevicePtr dst, const void *src, std::size_t bytes) override {
    check(api.cuMemcpyHtoD(dst, src, bytes), "cuMemcpyHtoD_v2");
  }
  void download(void *dst, DevicePtr src, std::size_t bytes) override {
    check(api.cuMemcpyDtoH(dst, src, bytes), "cuMemcpyDtoH_v2");
  }
  void zero(DevicePtr dst, std::size_t bytes) override {
    check(api.cuMemsetD8(dst, 0, bytes), "cuMemsetD8_v2");
  }
  const void *kernel(const std::string &entry) override {
    void *function = nullptr;
    check(api.cuModuleGetFunction(&function, module, entry.c_str()),
          "cuModuleGetFunction(" + entry + ")");
    return function;
  }
  void launch(const void *function, unsigned grid, void **params) override {
    check(api.cuLaunchKernel(const_cast<void *>(function), grid, 1, 1, kThreads, 1, 1, 0, nullptr,
                             params, nullptr),
          "cuLaunchKernel");
  }

private:
  // The driver's types, by their ABI: CUresult and CUdevice are int, handles are pointers,
  // CUdeviceptr is 64 bits.
  struct Api {
    int (*cuInit)(unsigned) = nullptr;
    int (*cuDeviceGetCount)(int *) = nullptr;
    int (*cuDeviceGet)(int *, int) = nullptr;
    int (*cuDeviceGetName)(char *, int, int) = nullptr;
    int (*cuDeviceGetAttribute)(int *, int, int) = nullptr;
    int (*cuDevicePrimaryCtxRetain)(void **, int) = nullptr;
    int (*cuDevicePrimaryCtxRelease)(int) = nullptr;
    int (*cuCtxSetCurrent)(void *) = nullptr;
    int (*cuModuleLoadDataEx)(void **, const void *, unsigned, int *, void **) = nullptr;
    int (*cuModuleUnload)(void *) = nullptr;
    int (*cuModuleGetFunction)(void **, void *, const char *) = nullptr;
    int (*cuLaunchKernel)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                          unsigned, void *, void **, void **) = nullptr;
    int (*cuMemAlloc)(DevicePtr *, std::size_t) = nullptr;
    int (*cuMemFree)(DevicePtr) = nullptr;
    int (*cuMemcpyHtoD)(DevicePtr, const void *, std::size_t) = nullptr;
    int (*cuMemcpyDtoH)(void *, DevicePtr, std::size_t) = nullptr;
    int (*cuMemsetD8)(DevicePtr, unsigned char, std::size_t) = nullptr;
    int (*cuGetErrorName)(int, const char **) = nullptr;
    int (*cuGetErrorString)(int, const char **) = nullptr;
  };

  template <class F> void resolve(F &slot, const char *symbol) {
#ifdef NESTOR_STANDALONE_HAVE_DLOPEN
    void *address = ::dlsym(library, symbol);
    if (!address)
      throw Failure(std::string("no CUDA device: the CUDA driver has no ") + symbol +
                    " (a driver older than CUDA 11?)");
    slot = reinterpret_cast<F>(address);
#else
    (void)slot;
    (void)symbol;
#endif
  }

  std::string describe(int rc, const std::string &call) const {
    const char *errorName = nullptr, *errorText = nullptr;
    if (api.cuGetErrorName)
      api.cuGetErrorName(rc, &errorName);
    if (api.cuGetErrorString)
      api.cuGetErrorString(rc, &errorText);
    return call + " failed: " + (errorName ? errorName : "CUDA error " + std::to_string(rc)) +
           (errorText ? std::string(" (") + errorText + ")" : std::string());
  }
  void check(int rc, const std::string &call) const {
    if (rc != 0)
      throw Failure(describe(rc, call));
  }

  Api api;
  void *library = nullptr, *context = nullptr, *module = nullptr;
  int device = 0;
  std::string deviceLabel;
  std::vector<DevicePtr> allocations;
};

#ifdef NESTOR_HOST_EMULATION
// Built with the CUDA host emulation force-included (tests): the kernels are host code in this
// translation unit, each registered by name (NESTOR_SD_REGISTER), and "device memory" is host
// memory. --device cuda runs the program's whole GPU path this way.

using EmulatedEntry = std::function<void(void **params, const long long *dims)>;

inline std::map<std::string, EmulatedEntry> &emulatedKernels() {
  static std::map<std::string, EmulatedEntry> kernels;
  return kernels;
}

template <class... A, std::size_t... I>
void callWithParams(void (*entry)(A...), void **params, std::index_sequence<I...>) {
  std::tuple<A...> args;
  (std::memcpy(&std::get<I>(args), params[I], sizeof(A)), ...);
  entry(std::get<I>(args)...);
}

/// Runs `entry` on `grid` blocks of `block` threads.
inline void runEmulated(const EmulatedEntry &entry, unsigned grid, unsigned block, void **params) {
  const long long dims[7] = {grid, 1, 1, block, 1, 1, 0};
  entry(params, dims);
}

template <class... A> bool registerEmulatedKernel(const char *name, void (*entry)(A...)) {
  emulatedKernels()[name] = [entry](void **params, const long long *dims) {
    nestor_emu::launch(dims,
                       [&] { callWithParams(entry, params, std::index_sequence_for<A...>{}); });
  };
  return true;
}

/// For a fake CUDA driver in tests (test/unit/cuda/fake_libcuda.cpp), which loads this program
/// built as a shared library: runs the registered kernel `name` on `grid` blocks of `block`
/// threads. 0 on success, 1 when there is no such kernel.
extern "C" __attribute__((visibility("default"), used)) int
nestor_emulated_launch(const char *name, unsigned grid, unsigned block, void **params) {
  auto it = emulatedKernels().find(name);
  if (it == emulatedKernels().end())
    return 1;
  runEmulated(it->second, grid, block, params);
  return 0;
}

class EmulatedGpu final : public Gpu {
public:
  ~EmulatedGpu() override {
    for (void *p : allocations)
      std::free(p);
  }
  std::string name() const override { return "the CUDA host emulation (no GPU)"; }
  DevicePtr allocate(std::size_t bytes) override {
    std::size_t rounded = (bytes + 63) / 64 * 64 + 64;
    void *p = std::aligned_alloc(64, rounded);
    if (!p)
      throw std::bad_alloc();
    std::memset(p, 0, rounded);
    allocations.push_back(p);
    return reinterpret_cast<DevicePtr>(p);
  }
  void upload(DevicePtr dst, const void *src, std::size_t bytes) override {
    std::memcpy(reinterpret_cast<void *>(dst), src, bytes);
  }
  void download(void *dst, DevicePtr src, std::size_t bytes) override {
    std::memcpy(dst, reinterpret_cast<const void *>(src), bytes);
  }
  void zero(DevicePtr dst, std::size_t bytes) override {
    std::memset(reinterpret_cast<void *>(dst), 0, bytes);
  }
  const void *kernel(const std::string &entry) override {
    auto it = emulatedKernels().find(entry);
    if (it == emulatedKernels().end())
      throw Failure("the program has no kernel '" + entry + "'");
    return &it->second;
  }
  void launch(const void *entry, unsigned grid, void **params) override {
    runEmulated(*static_cast<const EmulatedEntry *>(entry), grid, kThreads, params);
  }

private:
  std::vector<void *> allocations;
};
#endif // NESTOR_HOST_EMULATION

/// The GPU the program runs on with --device cuda: the driver with the embedded PTX (null when
/// the program was built without it), or in an emulation build the emulated one.
inline std::unique_ptr<Gpu> openGpu(const char *ptx) {
#ifdef NESTOR_HOST_EMULATION
  (void)ptx;
  return std::make_unique<EmulatedGpu>();
#else
  if (!ptx)
    throw Failure("this program has no CUDA kernels: it was built with --no-cuda, or by a Nestor "
                  "built without the CUDA toolkit");
  return std::make_unique<DriverGpu>(ptx);
#endif
}

/// What every layer shares: the GPU, the residual stream h [D] and the normed input x [D].
struct Context {
  Gpu *gpu = nullptr;
  DevicePtr h = 0, x = 0;
  Kernel rmsnorm;

  void bind(Gpu &device, std::size_t hidden) {
    gpu = &device;
    h = scratch(hidden);
    x = scratch(hidden);
    rmsnorm = Kernel(device, "nestor_rmsnorm");
  }
  DevicePtr upload(const std::vector<float> &values) {
    DevicePtr p = gpu->allocate(values.size() * sizeof(float));
    gpu->upload(p, values.data(), values.size() * sizeof(float));
    return p;
  }
  DevicePtr scratch(std::size_t floats) { return gpu->allocate(floats * sizeof(float)); }
  /// x = RMSNorm(h) with `weight`.
  void norm(DevicePtr weight, double eps) const { rmsnorm(1, h, weight, x, eps); }
};

/// The GPU twin of a CPU layer type: the same weights (read by the CPU layer's own load, then
/// uploaded), the same step, as kernels named `tag` + a suffix (NESTOR_SD_MLP and friends).
template <class HostLayer> struct Layer;

template <std::size_t D, std::size_t F> struct Layer<MlpLayer<D, F>> {
  DevicePtr norm = 0, up = 0, down = 0, act = 0;
  Kernel upKernel, downKernel;

  void load(Context &c, WeightsFile &file, std::size_t layer, const std::string &tag) {
    auto host = std::make_unique<MlpLayer<D, F>>();
    host->load(file, layer);
    norm = c.upload(host->norm.weight);
    up = c.upload(host->up);
    down = c.upload(host->down);
    act = c.scratch(F);
    upKernel = Kernel(*c.gpu, tag + "_up");
    downKernel = Kernel(*c.gpu, tag + "_down");
  }
  void reserve(Context &, std::size_t) {}
  void reset(Context &) {}
  void step(Context &c, double eps) {
    c.norm(norm, eps);
    upKernel(warpBlocksFor(F), up, c.x, act);
    downKernel(warpBlocksFor(D), down, act, c.h);
  }
};

template <std::size_t D, std::size_t NH, std::size_t NKV, std::size_t HD>
struct Layer<AttentionLayer<D, NH, NKV, HD>> {
  using Host = AttentionLayer<D, NH, NKV, HD>;
  DevicePtr norm = 0, q = 0, k = 0, v = 0, o = 0, query = 0, heads = 0;
  DevicePtr keys = 0, values = 0, scores = 0; // [capacity, kKV] twice, [NH, capacity]
  std::size_t capacity = 0, length = 0;
  Kernel qKernel, kvKernel, attendKernel, oKernel;

  void load(Context &c, WeightsFile &file, std::size_t layer, const std::string &tag) {
    auto host = std::make_unique<Host>();
    host->load(file, layer);
    norm = c.upload(host->norm.weight);
    q = c.upload(host->q);
    k = c.upload(host->k);
    v = c.upload(host->v);
    o = c.upload(host->o);
    query = c.scratch(Host::kQ);
    heads = c.scratch(Host::kQ);
    qKernel = Kernel(*c.gpu, tag + "_q");
    kvKernel = Kernel(*c.gpu, tag + "_kv");
    attendKernel = Kernel(*c.gpu, tag + "_attend");
    oKernel = Kernel(*c.gpu, tag + "_o");
  }
  /// The KV cache for `tokens` positions (the device keeps no growing buffers).
  void reserve(Context &c, std::size_t tokens) {
    if (tokens <= capacity)
      return;
    if (tokens > std::size_t(std::numeric_limits<int>::max()))
      throw Failure("a KV cache of " + std::to_string(tokens) + " positions is too long");
    keys = c.scratch(tokens * Host::kKV);
    values = c.scratch(tokens * Host::kKV);
    scores = c.scratch(tokens * NH);
    capacity = tokens;
  }
  void reset(Context &) { length = 0; }
  void step(Context &c, double eps) {
    if (length >= capacity)
      throw Failure("the KV cache is full (" + std::to_string(capacity) + " positions)");
    c.norm(norm, eps);
    qKernel(warpBlocksFor(Host::kQ), q, c.x, query);
    kvKernel(warpBlocksFor(Host::kKV), k, c.x, offsetFloats(keys, length * Host::kKV));
    kvKernel(warpBlocksFor(Host::kKV), v, c.x, offsetFloats(values, length * Host::kKV));
    ++length;
    attendKernel(unsigned(NH), query, keys, values, int(length), scores, int(capacity), heads);
    oKernel(warpBlocksFor(D), o, heads, c.h);
  }
};

template <std::size_t D, std::size_t H, std::size_t P, std::size_t G, std::size_t N, std::size_t K>
struct Layer<MambaLayer<D, H, P, G, N, K>> {
  using Host = MambaLayer<D, H, P, G, N, K>;
  DevicePtr norm = 0, inProj = 0, convWeight = 0, convBias = 0, dtBias = 0, aLog = 0, dSkip = 0;
  DevicePtr gateNorm = 0, outProj = 0, history = 0, ssm = 0, proj = 0, xbc = 0, y = 0;
  Kernel inKernel, convKernel, ssmKernel, normKernel, outKernel;

  void load(Context &c, WeightsFile &file, std::size_t layer, const std::string &tag) {
    auto host = std::make_unique<Host>();
    host->load(file, layer);
    norm = c.upload(host->norm.weight);
    inProj = c.upload(host->inProj);
    convWeight = c.upload(host->convWeight);
    convBias = c.upload(host->convBias);
    dtBias = c.upload(host->dtBias);
    aLog = c.upload(host->aLog);
    dSkip = c.upload(host->dSkip);
    gateNorm = c.upload(host->gateNorm);
    outProj = c.upload(host->outProj);
    history = c.scratch(Host::kConv * Host::kHistory);
    ssm = c.scratch(Host::kInner * N);
    proj = c.scratch(Host::kIn);
    xbc = c.scratch(Host::kConv);
    y = c.scratch(Host::kInner);
    inKernel = Kernel(*c.gpu, tag + "_in");
    convKernel = Kernel(*c.gpu, tag + "_conv");
    ssmKernel = Kernel(*c.gpu, tag + "_ssm");
    normKernel = Kernel(*c.gpu, tag + "_norm");
    outKernel = Kernel(*c.gpu, tag + "_out");
  }
  void reserve(Context &, std::size_t) {}
  void reset(Context &c) {
    c.gpu->zero(history, Host::kConv * Host::kHistory * sizeof(float));
    c.gpu->zero(ssm, Host::kInner * N * sizeof(float));
  }
  void step(Context &c, double eps) {
    c.norm(norm, eps);
    inKernel(warpBlocksFor(Host::kIn), inProj, c.x, proj);
    // proj: [z (HP), x (HP), B (GN), C (GN), dt (H)]; the conv reads [x, B, C].
    convKernel(blocksFor(Host::kConv), offsetFloats(proj, Host::kInner), convWeight, convBias,
               history, xbc);
    ssmKernel(warpBlocksFor(Host::kInner), proj, xbc, offsetFloats(xbc, Host::kInner),
              offsetFloats(xbc, Host::kInner + Host::kGN),
              offsetFloats(proj, Host::kInner + Host::kConv), dtBias, aLog, dSkip, ssm, y);
    normKernel(unsigned(G), y, gateNorm, eps);
    outKernel(warpBlocksFor(D), outProj, y, c.h);
  }
};

/// The embedding, the final norm, the LM head and the argmax.
template <std::size_t V, std::size_t D, bool Tied> struct Ends {
  DevicePtr table = 0, finalNorm = 0, head = 0, logits = 0, token = 0;
  Kernel embedKernel, headKernel, argmaxKernel;

  void load(Context &c, WeightsFile &file) {
    auto embedding = std::make_unique<Embedding<V, D>>();
    embedding->load(file);
    auto lmHead = std::make_unique<LmHead<V, D, Tied>>();
    lmHead->load(file, *embedding);
    table = c.upload(embedding->table);
    finalNorm = c.upload(lmHead->norm.weight);
    head = Tied ? table : c.upload(lmHead->weight);
    logits = c.scratch(V);
    token = c.gpu->allocate(sizeof(std::int32_t));
    embedKernel = Kernel(*c.gpu, "nestor_embed");
    headKernel = Kernel(*c.gpu, "nestor_head");
    argmaxKernel = Kernel(*c.gpu, "nestor_argmax");
  }
  void embed(Context &c, std::int32_t t) { embedKernel(blocksFor(D), table, int(t), c.h); }
  /// The greedy next token after the layers ran.
  std::int32_t next(Context &c, double eps) {
    c.norm(finalNorm, eps);
    headKernel(warpBlocksFor(V), head, c.x, logits);
    argmaxKernel(1, logits, token);
    std::int32_t out = -1;
    c.gpu->download(&out, token, sizeof(out));
    if (out < 0 || std::size_t(out) >= V)
      throw Failure("the GPU chose no token (non-finite logits?)");
    return out;
  }
};

} // namespace gpu

//===----------------------------------------------------------------------===//
// Decoders: the CPU model, or its GPU twin
//===----------------------------------------------------------------------===//

/// Greedy decoding one token at a time, on one device.
class Decoder {
public:
  virtual ~Decoder() = default;
  virtual std::string device() const = 0;
  /// Empties the state, with room for `tokens` positions.
  virtual void start(std::size_t tokens) = 0;
  /// Appends `token` (its next-token choice is not needed).
  virtual void advance(std::int32_t token) = 0;
  /// Appends `token`; returns the greedy next token (the first of equal largest logits).
  virtual std::int32_t next(std::int32_t token) = 0;
};

template <class Model> class CpuDecoder final : public Decoder {
public:
  explicit CpuDecoder(WeightsFile &file) : model(std::make_unique<Model>()) { model->load(file); }
  std::string device() const override { return "the CPU"; }
  void start(std::size_t) override { model->reset(); }
  void advance(std::int32_t token) override { model->step(token); }
  std::int32_t next(std::int32_t token) override {
    const float *logits = model->step(token);
    return static_cast<std::int32_t>(std::max_element(logits, logits + Model::kVocabSize) - logits);
  }

private:
  std::unique_ptr<Model> model;
};

template <class GpuModel> class GpuDecoder final : public Decoder {
public:
  GpuDecoder(std::unique_ptr<gpu::Gpu> device, WeightsFile &file)
      : gpu(std::move(device)), model(std::make_unique<GpuModel>()) {
    model->load(*gpu, file);
  }
  std::string device() const override { return gpu->name(); }
  void start(std::size_t tokens) override { model->start(tokens); }
  void advance(std::int32_t token) override { model->advance(token); }
  std::int32_t next(std::int32_t token) override { return model->next(token); }

private:
  std::unique_ptr<gpu::Gpu> gpu;
  std::unique_ptr<GpuModel> model; // destroyed first: it frees nothing itself, but uses `gpu`
};

//===----------------------------------------------------------------------===//
// The program
//===----------------------------------------------------------------------===//

struct Options {
  std::string prompt, weights;
  bool hasPrompt = false, printTokens = false, stats = false, help = false;
  std::int64_t maxTokens = 64;
  std::int64_t bench = 0;      // --bench N: time N decode steps instead of generating
  std::string device = "auto"; // auto (CUDA where present), cpu, cuda
};

/// Where the weights are by default: beside the executable, named after it.
inline std::string defaultWeightsPath(const char *argv0) {
  std::string self = argv0 ? argv0 : "";
  // Run through PATH, argv[0] has no directory; the kernel knows where the file is.
  if (self.find('/') == std::string::npos) {
    std::error_code ec;
    std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec)
      self = exe.string();
  }
  return self + ".safetensors";
}

inline Options parseOptions(int argc, char **argv) {
  Options opts;
  bool weightsGiven = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i], value;
    bool inlineValue = false;
    if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos) {
      value = arg.substr(arg.find('=') + 1);
      arg = arg.substr(0, arg.find('='));
      inlineValue = true;
    }
    auto takeValue = [&]() {
      if (inlineValue)
        return value;
      if (i + 1 >= argc)
        throw UsageError(arg + " needs a value");
      return std::string(argv[++i]);
    };
    auto noValue = [&]() {
      if (inlineValue)
        throw UsageError(arg + " takes no value");
    };
    if (arg == "--help" || arg == "-h") {
      noValue();
      opts.help = true;
    } else if (arg == "--prompt") {
      opts.prompt = takeValue();
      opts.hasPrompt = true;
    } else if (arg == "--max-tokens") {
      std::string text = takeValue();
      char *end = nullptr;
      errno = 0;
      long long n = text.empty() ? 0 : std::strtoll(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || errno == ERANGE || n <= 0)
        throw UsageError("--max-tokens: '" + text + "' is not a positive integer");
      opts.maxTokens = n;
    } else if (arg == "--weights") {
      opts.weights = takeValue();
      weightsGiven = true;
    } else if (arg == "--print-tokens") {
      noValue();
      opts.printTokens = true;
    } else if (arg == "--stats") {
      noValue();
      opts.stats = true;
    } else if (arg == "--bench") {
      std::string text = takeValue();
      char *end = nullptr;
      errno = 0;
      long long n = text.empty() ? 0 : std::strtoll(text.c_str(), &end, 10);
      if (text.empty() || *end != '\0' || errno == ERANGE || n <= 0)
        throw UsageError("--bench: '" + text + "' is not a positive integer");
      opts.bench = n;
    } else if (arg == "--device") {
      opts.device = takeValue();
      if (opts.device != "auto" && opts.device != "cpu" && opts.device != "cuda")
        throw UsageError("--device: '" + opts.device + "' is not auto, cpu or cuda");
    } else {
      throw UsageError("unknown argument '" + std::string(argv[i]) + "'");
    }
  }
  if (!opts.help && !opts.hasPrompt && opts.bench == 0)
    throw UsageError("--prompt is required");
  if (!weightsGiven)
    opts.weights = defaultWeightsPath(argc > 0 ? argv[0] : nullptr);
  return opts;
}

inline void printUsage(const std::string &program, const char *description) {
  std::printf("%s: %s\n\n"
              "Usage: %s --prompt TEXT [--max-tokens N] [--weights PATH] [--device D]\n"
              "          [--print-tokens] [--stats]\n\n"
              "Continues TEXT greedily with the byte tokenizer (BOS, the prompt's bytes) until\n"
              "end of text or N tokens, and prints the prompt and the continuation.\n\n"
              "Options:\n"
              "  --prompt TEXT    the text to continue (required)\n"
              "  --max-tokens N   most tokens to generate (default 64)\n"
              "  --weights PATH   the float32 safetensors weights (default: this program's\n"
              "                   path + \".safetensors\")\n"
              "  --device D       auto (default: the GPU where the CUDA driver finds one, else\n"
              "                   the CPU), cpu, or cuda (fail without a GPU)\n"
              "  --print-tokens   print the generated token ids, space separated, instead\n"
              "  --stats          report prompt and decode speed on stderr\n"
              "  --bench N        time N decode steps after a fixed 16-token prompt (the\n"
              "                   sequence `nestor bench --decode` feeds) and print tokens/s\n"
              "  --help           this text\n",
              program.c_str(), description, program.c_str());
}

inline double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

inline void writeStdout(const std::string &text) {
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0)
    throw Failure("cannot write the output: " + std::string(std::strerror(errno)));
}

/// The decoder --device asks for. auto takes the GPU where the driver finds one and says why
/// not in `note` otherwise.
template <class Model, class GpuModel>
std::unique_ptr<Decoder> openDecoder(const Options &opts, const char *cudaModule, WeightsFile &file,
                                     std::string &note) {
#ifdef NESTOR_HOST_EMULATION
  constexpr bool kAutoTriesGpu = false; // the emulation is for tests, and slow: only on request
#else
  constexpr bool kAutoTriesGpu = true;
#endif
  if (opts.device == "cuda" || (opts.device == "auto" && kAutoTriesGpu)) {
    try {
      return std::make_unique<GpuDecoder<GpuModel>>(gpu::openGpu(cudaModule), file);
    } catch (const Failure &e) {
      if (opts.device == "cuda")
        throw;
      note = e.what();
    }
  }
  return std::make_unique<CpuDecoder<Model>>(file);
}

/// The generated program's main. `Model` (the CPU) provides kVocabSize, kDescription,
/// load(WeightsFile &), reset() and step(token) -> logits; `GpuModel` load(Gpu &, WeightsFile &),
/// start(tokens), advance(token) and next(token) -> token. `cudaModule` is the kernels' PTX, or
/// null when the program was built without it.
template <class Model, class GpuModel> int runMain(int argc, char **argv, const char *cudaModule) {
  static_assert(Model::kVocabSize >= std::size_t(kByteVocabSize),
                "the byte tokenizer needs 256 tokens");
  std::string program = argc > 0 && argv[0] ? argv[0] : "nestor-model";
  try {
    Options opts = parseOptions(argc, argv);
    if (opts.help) {
      printUsage(program, Model::kDescription);
      return 0;
    }
    WeightsFile file(opts.weights);
    std::string note;
    std::unique_ptr<Decoder> decoder = openDecoder<Model, GpuModel>(opts, cudaModule, file, note);
    if (opts.stats)
      std::fprintf(stderr, "device: %s%s\n", decoder->device().c_str(),
                   note.empty() ? "" : (" (" + note + ")").c_str());
    if (opts.bench > 0) {
      // The token sequence nestor bench --decode feeds the library decoder, so the rates of the
      // two compare.
      decoder->start(16 + static_cast<std::size_t>(opts.bench));
      for (std::int64_t i = 0; i < 16; ++i)
        decoder->advance(static_cast<std::int32_t>((i * 7 + 3) % std::int64_t(Model::kVocabSize)));
      auto tb = std::chrono::steady_clock::now();
      for (std::int64_t i = 0; i < opts.bench; ++i)
        decoder->next(static_cast<std::int32_t>((i * 13 + 5) % std::int64_t(Model::kVocabSize)));
      double seconds = secondsSince(tb);
      writeStdout("decode " + std::to_string(double(opts.bench) / seconds) + " tokens/s\n");
      return 0;
    }

    std::vector<std::int32_t> prompt = encodeBytes(opts.prompt);
    prompt.insert(prompt.begin(), kBos);
    // Every prompt token and every generated one but the last is appended.
    decoder->start(prompt.size() + static_cast<std::size_t>(opts.maxTokens));
    auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i + 1 < prompt.size(); ++i)
      decoder->advance(prompt[i]);
    std::int32_t next = decoder->next(prompt.back());
    double prefillSeconds = secondsSince(t0);
    // Greedy decoding until kEos, which is kept, or maxTokens.
    auto t1 = std::chrono::steady_clock::now();
    std::vector<std::int32_t> out;
    while (true) {
      out.push_back(next);
      if (next == kEos || static_cast<std::int64_t>(out.size()) == opts.maxTokens)
        break;
      next = decoder->next(next);
    }
    double decodeSeconds = secondsSince(t1);

    if (opts.printTokens) {
      std::string line;
      for (std::size_t i = 0; i < out.size(); ++i)
        line += (i ? " " : "") + std::to_string(out[i]);
      writeStdout(line + "\n");
    } else {
      writeStdout(opts.prompt + decodeBytes(out) + "\n");
    }
    if (opts.stats) {
      // The last token is chosen but not fed back; count only the steps that ran.
      std::size_t steps = out.empty() ? 0 : out.size() - 1;
      std::fprintf(stderr,
                   "prompt %zu tokens in %.1f ms; generated %zu tokens, decode %.1f tokens/s\n",
                   prompt.size(), 1e3 * prefillSeconds, out.size(),
                   steps > 0 && decodeSeconds > 0 ? double(steps) / decodeSeconds : 0.0);
    }
    return 0;
  } catch (const UsageError &e) {
    std::fprintf(stderr, "%s: error: %s\nTry '%s --help'.\n", program.c_str(), e.what(),
                 program.c_str());
    return 2;
  } catch (const std::bad_alloc &) {
    std::fprintf(stderr, "%s: error: out of memory\n", program.c_str());
    return 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(), e.what());
    return 1;
  }
}

} // namespace nestor::standalone

#endif // NESTOR_STANDALONE_H
