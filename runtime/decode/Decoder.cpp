//===- Decoder.cpp - Incremental float32 decoding on the CPU ---------------===//
//
// Every matrix-vector product reads a set of row runs restricted to a set of column runs of a
// parent tensor in place (the parent's leading dimension: cblas_sgemv for one block, a row
// kernel for several), so a budget costs its own sizes and no sliced copy of any weight
// exists. The active entries of each axis are kept packed in the order the sliced dense model
// has them (groups in order, the kept prefix of each), so this decoder run on the sliced model
// does the same arithmetic up to the order of the sums.
//
//===----------------------------------------------------------------------===//
#include "nestor/Decode.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

using namespace nestor;
using namespace nestor::decode;

namespace {

/// A run of consecutive indices [start, start + length).
struct Run {
  int64_t start, length;
};

/// Appends [start, start + length), merged with the last run when they touch, so a full axis
/// is one run and one BLAS call.
void addRun(std::vector<Run> &runs, int64_t start, int64_t length) {
  if (length <= 0)
    return;
  if (!runs.empty() && runs.back().start + runs.back().length == start)
    runs.back().length += length;
  else
    runs.push_back({start, length});
}

std::vector<Run> shiftedRuns(const std::vector<Run> &runs, int64_t by) {
  std::vector<Run> out;
  for (const Run &r : runs)
    addRun(out, r.start + by, r.length);
  return out;
}

int64_t totalLength(const std::vector<Run> &runs) {
  int64_t n = 0;
  for (const Run &r : runs)
    n += r.length;
  return n;
}

/// The runs of "the first `kept` of every block of `perBlock` items of width `width`": heads
/// kept within groups expanded to their channels (`width` of a stride `stride`).
std::vector<Run> groupedRuns(int64_t groups, int64_t perGroup, int64_t kept, int64_t stride,
                             int64_t width) {
  std::vector<Run> runs;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t i = 0; i < kept; ++i)
      addRun(runs, (g * perGroup + i) * stride, width);
  return runs;
}

// The row kernel below is the one loop OpenBLAS does not cover; built for the baseline ISA it
// would run at a fraction of BLAS's speed, so x86 gets AVX2/AVX-512 clones picked at load time.
#if defined(__x86_64__) && defined(__GNUC__)
#define NESTOR_VECTOR_CLONES                                                                       \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NESTOR_VECTOR_CLONES
#endif

/// y[i] = sum over the column runs of W[row i, run] . x[run] for `n` consecutive rows: each
/// row is read once, front to back, however many runs it has. Rows go `kRows` at a time so
/// that each x load serves several rows and several streams of weights are in flight; the
/// partial sums stay in vector lanes across the runs (runs are short: a head's channels), one
/// horizontal sum per row.
template <int64_t kRows>
inline void rowBlock(const float *w, int64_t ld, const Run *cols, size_t numCols, const float *x,
                     float *y) {
  constexpr int64_t kLanes = 16;
  float lanes[kRows][kLanes] = {};
  float tail[kRows] = {};
  const float *xr = x;
  for (size_t c = 0; c < numCols; ++c) {
    const float *wr = w + cols[c].start;
    int64_t len = cols[c].length, j = 0;
    for (; j + kLanes <= len; j += kLanes)
      for (int64_t r = 0; r < kRows; ++r)
        for (int64_t l = 0; l < kLanes; ++l)
          lanes[r][l] += wr[r * ld + j + l] * xr[j + l];
    for (; j < len; ++j)
      for (int64_t r = 0; r < kRows; ++r)
        tail[r] += wr[r * ld + j] * xr[j];
    xr += len;
  }
  for (int64_t r = 0; r < kRows; ++r) {
    float acc = tail[r];
    for (int64_t l = 0; l < kLanes; ++l)
      acc += lanes[r][l];
    y[r] = acc;
  }
}

NESTOR_VECTOR_CLONES
void rowRunsKernel(const float *w, int64_t ld, int64_t n, const Run *cols, size_t numCols,
                   const float *x, float *y) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    rowBlock<4>(w + i * ld, ld, cols, numCols, x, y + i);
  for (; i < n; ++i)
    rowBlock<1>(w + i * ld, ld, cols, numCols, x, y + i);
}

/// y[packed rows] = W[rows, cols] x[packed cols] for a row-major W with leading dimension ld.
/// One contiguous block (the hidden prefix of a matrix, say) is one BLAS call. Anything else
/// (kept heads within groups, a channel prefix of each head) as BLAS calls would wake BLAS's
/// threads once per run, and with several column runs sweep every row once per run with the
/// stride of a whole row, which defeats the prefetchers; instead the rows are cut into chunks
/// that the row kernel reads front to back, in one parallel region per product. (On a
/// 1024-wide model at 2 threads this made a budget with per-head prefixes 1.4x faster.)
void gemv(const float *w, int64_t ld, const std::vector<Run> &rows, const std::vector<Run> &cols,
          const float *x, float *y) {
  if (rows.size() == 1 && cols.size() == 1) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(rows[0].length),
                static_cast<int>(cols[0].length), 1.0f, w + rows[0].start * ld + cols[0].start,
                static_cast<int>(ld), x, 1, 0.0f, y, 1);
    return;
  }
  constexpr int64_t kChunk = 32;
  struct Chunk {
    int64_t row, count, out;
  };
  llvm::SmallVector<Chunk, 64> chunks;
  int64_t out = 0;
  for (const Run &r : rows)
    for (int64_t first = 0; first < r.length; first += kChunk) {
      chunks.push_back({r.start + first, std::min(kChunk, r.length - first), out});
      out += chunks.back().count;
    }
  int64_t n = static_cast<int64_t>(chunks.size());
  // Threads only pay off once a product is well past the cost of waking them.
#pragma omp parallel for schedule(static) if (out * totalLength(cols) > (1 << 18))
  for (int64_t c = 0; c < n; ++c)
    rowRunsKernel(w + chunks[c].row * ld, ld, chunks[c].count, cols.data(), cols.size(), x,
                  y + chunks[c].out);
}

/// x <- RMSNorm(x) * w over n channels (METHOD.md §1; over the active prefix this is the
/// masked norm of §5 written for the sliced model).
void rmsNorm(const float *x, const float *w, int64_t n, double eps, float *out) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i)
    ss += double(x[i]) * double(x[i]);
  float inv = static_cast<float>(1.0 / std::sqrt(ss / double(n) + eps));
  for (int64_t i = 0; i < n; ++i)
    out[i] = x[i] * inv * w[i];
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }
float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

std::string layerName(size_t layer, llvm::StringRef suffix) {
  return llvm::formatv("backbone.layers.{0}.{1}", layer, suffix).str();
}

struct Layer {
  spec::LayerKind kind = spec::LayerKind::MLP;
  bool keep = true;
  const float *norm = nullptr;

  // MLP: up [F, d], down [d, F]; Fa active neurons.
  const float *up = nullptr, *down = nullptr;
  int64_t ffn = 0, ffnActive = 0;

  // Attention: q [nh hd, d], k/v [nkv hd, d], o [d, nh hd].
  const float *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  int64_t heads = 0, headsActive = 0;
  std::vector<Run> qRuns;          // rows of q_proj = columns of o_proj, packed by head
  std::vector<float> keys, values; // [position, nkv hd]

  // Mamba: parent sizes of this layer and the active heads (parent indices, packed order).
  const float *inProj = nullptr, *convW = nullptr, *convB = nullptr, *dtBias = nullptr;
  const float *aLog = nullptr, *dSkip = nullptr, *gateNorm = nullptr, *outProj = nullptr;
  int64_t mHeads = 0, headDim = 0, kernel = 0, inWidth = 0; // H, P, K, 2HP + 2GN + H
  int64_t mHeadsActive = 0, headDimActive = 0;
  std::vector<int64_t> activeHeads;
  std::vector<Run> inRuns;      // in_proj rows: [z', x', B, C, dt']
  std::vector<Run> chanRuns;    // the active z/x channels: out_proj columns, norm weights
  std::vector<int64_t> convIdx; // conv channel (parent index) of each packed [x', B, C]
  std::vector<float> convHist;  // [K - 1, channels], oldest first
  std::vector<float> ssm;       // [H', P', N]
};

} // namespace

struct Decoder::Impl {
  int64_t vocab = 0, hidden = 0, hiddenActive = 0; // d (the embedding's width) and d'
  int64_t groups = 0, state = 0, kvHeads = 0, headDim = 0;
  double eps = 1e-5;
  const float *embedding = nullptr, *normF = nullptr, *head = nullptr;
  std::vector<Layer> layers;
  int64_t pos = 0;
  // Scratch, sized once for the largest layer.
  std::vector<float> h, x, proj, xbc, y, mix, logits, scores;

  llvm::Error build(const spec::ModelSpec &spec, const train::TensorMap &weights,
                    const spec::ModelSizes<double> &sizes);
  void mlp(Layer &l);
  void attention(Layer &l);
  void mamba(Layer &l);
};

llvm::Error Decoder::Impl::build(const spec::ModelSpec &spec, const train::TensorMap &weights,
                                 const spec::ModelSizes<double> &sizes) {
  const spec::Architecture &a = spec.architecture();
  auto kinds = spec::parsePattern(a.hybrid_override_pattern());
  if (!kinds)
    return kinds.takeError();
  if (sizes.layers.size() != kinds->size())
    return llvm::createStringError("decode: %zu layer sizes for a pattern of %zu layers",
                                   sizes.layers.size(), kinds->size());
  // Shapes come from the tensors, not the spec's uniform sizes: a dense spec with
  // layer_overrides has different shapes per layer.
  auto get = [&](const std::string &name, size_t rank,
                 const float *&out) -> llvm::Expected<const train::Tensor *> {
    auto it = weights.find(name);
    if (it == weights.end())
      return llvm::createStringError("decode: the weights have no tensor '%s'", name.c_str());
    const train::Tensor &t = it->second;
    int64_t n = 1;
    for (int64_t s : t.shape)
      n *= s;
    if (t.shape.size() != rank || n != static_cast<int64_t>(t.data.size()))
      return llvm::createStringError("decode: '%s' has rank %zu and %zu values, expected rank %zu",
                                     name.c_str(), t.shape.size(), t.data.size(), rank);
    out = t.data.data();
    return &t;
  };
  auto expectShape = [](const std::string &name, const train::Tensor &t,
                        std::vector<int64_t> shape) -> llvm::Error {
    if (t.shape == shape)
      return llvm::Error::success();
    std::vector<std::string> got, want;
    for (int64_t s : t.shape)
      got.push_back(std::to_string(s));
    for (int64_t s : shape)
      want.push_back(std::to_string(s));
    return llvm::createStringError("decode: '%s' has shape [%s], expected [%s]", name.c_str(),
                                   llvm::join(got, ", ").c_str(), llvm::join(want, ", ").c_str());
  };

  auto emb = get("backbone.embeddings.weight", 2, embedding);
  if (!emb)
    return emb.takeError();
  vocab = (*emb)->shape[0];
  hidden = (*emb)->shape[1];
  hiddenActive = static_cast<int64_t>(sizes.hidden);
  if (hiddenActive <= 0 || hiddenActive > hidden)
    return llvm::createStringError("decode: hidden_size %lld is not in (0, %lld]",
                                   (long long)hiddenActive, (long long)hidden);
  groups = a.n_groups(), state = a.ssm_state_size();
  kvHeads = a.num_key_value_heads(), headDim = a.head_dim();
  eps = spec::layerNormEpsilon(a);
  int64_t gn = groups * state;

  auto normFT = get("backbone.norm_f.weight", 1, normF);
  if (!normFT)
    return normFT.takeError();
  if (llvm::Error err = expectShape("backbone.norm_f.weight", **normFT, {hidden}))
    return err;
  std::string headName = a.tie_word_embeddings() ? "backbone.embeddings.weight" : "lm_head.weight";
  auto headT = get(headName, 2, head);
  if (!headT)
    return headT.takeError();
  if (llvm::Error err = expectShape(headName, **headT, {vocab, hidden}))
    return err;

  int64_t maxProj = 0, maxConv = 0, maxMix = 0;
  for (size_t i = 0; i < kinds->size(); ++i) {
    Layer l;
    l.kind = (*kinds)[i];
    const spec::LayerSizes<double> &s = sizes.layers[i];
    l.keep = s.keep != 0;
    if (!l.keep) {
      layers.push_back(std::move(l));
      continue; // a dropped layer is the identity; its weights are not even read
    }
    auto bad = [&](const char *axis, int64_t v, const std::string &why) {
      return llvm::createStringError("decode: layer %zu: %s %lld %s", i, axis, (long long)v,
                                     why.c_str());
    };
    auto norm = get(layerName(i, "norm.weight"), 1, l.norm);
    if (!norm)
      return norm.takeError();
    if (llvm::Error err = expectShape(layerName(i, "norm.weight"), **norm, {hidden}))
      return err;
    switch (l.kind) {
    case spec::LayerKind::MLP: {
      std::string upN = layerName(i, "mixer.up_proj.weight"),
                  downN = layerName(i, "mixer.down_proj.weight");
      auto up = get(upN, 2, l.up);
      if (!up)
        return up.takeError();
      l.ffn = (*up)->shape[0];
      if (llvm::Error err = expectShape(upN, **up, {l.ffn, hidden}))
        return err;
      auto down = get(downN, 2, l.down);
      if (!down)
        return down.takeError();
      if (llvm::Error err = expectShape(downN, **down, {hidden, l.ffn}))
        return err;
      l.ffnActive = static_cast<int64_t>(s.ffn);
      if (l.ffnActive <= 0 || l.ffnActive > l.ffn)
        return bad("intermediate_size", l.ffnActive, llvm::formatv("is not in (0, {0}]", l.ffn));
      maxMix = std::max(maxMix, l.ffnActive);
      break;
    }
    case spec::LayerKind::Attention: {
      std::string qN = layerName(i, "mixer.q_proj.weight"),
                  kN = layerName(i, "mixer.k_proj.weight"),
                  vN = layerName(i, "mixer.v_proj.weight"),
                  oN = layerName(i, "mixer.o_proj.weight");
      auto q = get(qN, 2, l.q);
      if (!q)
        return q.takeError();
      if (headDim <= 0 || (*q)->shape[0] % headDim != 0)
        return llvm::createStringError(
            "decode: '%s' has %lld rows, not a multiple of head_dim %lld", qN.c_str(),
            (long long)(*q)->shape[0], (long long)headDim);
      l.heads = (*q)->shape[0] / headDim;
      auto k = get(kN, 2, l.k);
      auto v = get(vN, 2, l.v);
      auto o = get(oN, 2, l.o);
      if (!k)
        return k.takeError();
      if (!v)
        return v.takeError();
      if (!o)
        return o.takeError();
      for (auto [name, t, shape] :
           {std::tuple{qN, *q, std::vector<int64_t>{l.heads * headDim, hidden}},
            {kN, *k, {kvHeads * headDim, hidden}},
            {vN, *v, {kvHeads * headDim, hidden}},
            {oN, *o, {hidden, l.heads * headDim}}})
        if (llvm::Error err = expectShape(name, *t, shape))
          return err;
      l.headsActive = static_cast<int64_t>(s.attnHeads);
      if (kvHeads <= 0 || l.heads % kvHeads != 0 || l.headsActive <= 0 || l.headsActive > l.heads ||
          l.headsActive % kvHeads != 0)
        return bad("num_attention_heads", l.headsActive,
                   llvm::formatv("is not a positive multiple of num_key_value_heads ({0}) up to "
                                 "{1}",
                                 kvHeads, l.heads));
      // Query heads: the first headsActive/nkv of every KV group (METHOD.md §2).
      l.qRuns = groupedRuns(kvHeads, l.heads / kvHeads, l.headsActive / kvHeads, headDim, headDim);
      maxProj = std::max(maxProj, (l.headsActive + 2 * kvHeads) * headDim);
      maxMix = std::max(maxMix, l.headsActive * headDim);
      break;
    }
    case spec::LayerKind::Mamba: {
      auto name = [&](const char *s) { return layerName(i, s); };
      auto dtb = get(name("mixer.dt_bias"), 1, l.dtBias);
      if (!dtb)
        return dtb.takeError();
      l.mHeads = (*dtb)->shape[0];
      auto gnorm = get(name("mixer.norm.weight"), 1, l.gateNorm);
      if (!gnorm)
        return gnorm.takeError();
      int64_t hp = (*gnorm)->shape[0];
      if (l.mHeads <= 0 || hp % l.mHeads != 0 || groups <= 0 || l.mHeads % groups != 0)
        return llvm::createStringError(
            "decode: layer %zu: %lld Mamba heads (mixer.dt_bias) do not split %lld channels "
            "(mixer.norm.weight) into %lld groups",
            i, (long long)l.mHeads, (long long)hp, (long long)groups);
      l.headDim = hp / l.mHeads;
      auto in = get(name("mixer.in_proj.weight"), 2, l.inProj);
      auto cw = get(name("mixer.conv1d.weight"), 2, l.convW);
      auto cb = get(name("mixer.conv1d.bias"), 1, l.convB);
      auto al = get(name("mixer.A_log"), 1, l.aLog);
      auto dd = get(name("mixer.D"), 1, l.dSkip);
      auto op = get(name("mixer.out_proj.weight"), 2, l.outProj);
      for (llvm::Expected<const train::Tensor *> *t : {&in, &cw, &cb, &al, &dd, &op})
        if (!*t)
          return t->takeError();
      l.kernel = (*cw)->shape[1];
      l.inWidth = 2 * hp + 2 * gn + l.mHeads;
      for (auto [n, t, shape] :
           {std::tuple{name("mixer.in_proj.weight"), *in, std::vector<int64_t>{l.inWidth, hidden}},
            {name("mixer.conv1d.weight"), *cw, {hp + 2 * gn, l.kernel}},
            {name("mixer.conv1d.bias"), *cb, {hp + 2 * gn}},
            {name("mixer.A_log"), *al, {l.mHeads}},
            {name("mixer.D"), *dd, {l.mHeads}},
            {name("mixer.out_proj.weight"), *op, {hidden, hp}}})
        if (llvm::Error err = expectShape(n, *t, shape))
          return err;
      if (l.kernel < 1)
        return llvm::createStringError("decode: layer %zu: conv kernel %lld", i,
                                       (long long)l.kernel);
      l.mHeadsActive = static_cast<int64_t>(s.mambaHeads);
      l.headDimActive = static_cast<int64_t>(s.mambaHeadDim);
      if (l.mHeadsActive <= 0 || l.mHeadsActive > l.mHeads || l.mHeadsActive % groups != 0)
        return bad("mamba_num_heads", l.mHeadsActive,
                   llvm::formatv("is not a positive multiple of n_groups ({0}) up to {1}", groups,
                                 l.mHeads));
      if (l.headDimActive <= 0 || l.headDimActive > l.headDim)
        return bad("mamba_head_dim", l.headDimActive,
                   llvm::formatv("is not in (0, {0}]", l.headDim));
      // Heads: the first H'/G of every group; channels: the first P' of every kept head.
      int64_t perGroup = l.mHeads / groups, kept = l.mHeadsActive / groups;
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t j = 0; j < kept; ++j)
          l.activeHeads.push_back(g * perGroup + j);
      l.chanRuns = groupedRuns(groups, perGroup, kept, l.headDim, l.headDimActive);
      std::vector<Run> dtRuns = groupedRuns(groups, perGroup, kept, 1, 1);
      for (const std::vector<Run> &part :
           {l.chanRuns, shiftedRuns(l.chanRuns, hp), std::vector<Run>{{2 * hp, 2 * gn}},
            shiftedRuns(dtRuns, 2 * hp + 2 * gn)})
        for (const Run &r : part)
          addRun(l.inRuns, r.start, r.length);
      for (const Run &r : l.chanRuns)
        for (int64_t c = 0; c < r.length; ++c)
          l.convIdx.push_back(r.start + c);
      for (int64_t c = 0; c < 2 * gn; ++c)
        l.convIdx.push_back(hp + c);
      int64_t active = l.mHeadsActive * l.headDimActive;
      maxProj = std::max(maxProj, totalLength(l.inRuns));
      maxConv = std::max(maxConv, active + 2 * gn);
      maxMix = std::max(maxMix, active);
      break;
    }
    }
    layers.push_back(std::move(l));
  }
  h.resize(hidden);
  x.resize(hidden);
  proj.resize(std::max<int64_t>(maxProj, 1));
  xbc.resize(std::max<int64_t>(maxConv, 1));
  y.resize(std::max<int64_t>(maxMix, 1));
  mix.resize(hidden);
  logits.resize(vocab);
  return llvm::Error::success();
}

void Decoder::Impl::mlp(Layer &l) {
  int64_t d = hiddenActive, f = l.ffnActive;
  gemv(l.up, hidden, {{0, f}}, {{0, d}}, x.data(), y.data());
  for (int64_t i = 0; i < f; ++i) {
    float r = std::max(y[i], 0.0f);
    y[i] = r * r; // squared ReLU
  }
  gemv(l.down, l.ffn, {{0, d}}, {{0, f}}, y.data(), mix.data());
}

void Decoder::Impl::attention(Layer &l) {
  int64_t d = hiddenActive, hd = headDim, kv = kvHeads * hd;
  int64_t nq = l.headsActive, perKv = nq / kvHeads;
  float *q = proj.data();
  gemv(l.q, hidden, l.qRuns, {{0, d}}, x.data(), q);
  l.keys.resize((pos + 1) * kv);
  l.values.resize((pos + 1) * kv);
  gemv(l.k, hidden, {{0, kv}}, {{0, d}}, x.data(), l.keys.data() + pos * kv);
  gemv(l.v, hidden, {{0, kv}}, {{0, d}}, x.data(), l.values.data() + pos * kv);
  int64_t len = pos + 1;
  scores.resize(len);
  float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int64_t i = 0; i < nq; ++i) {
    const float *qi = q + i * hd;
    int64_t g = i / perKv; // packed heads are grouped by KV head
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t s = 0; s < len; ++s) {
      const float *ks = l.keys.data() + s * kv + g * hd;
      float dot = 0.0f;
      for (int64_t e = 0; e < hd; ++e)
        dot += qi[e] * ks[e];
      scores[s] = dot * scale;
      mx = std::max(mx, scores[s]);
    }
    float sum = 0.0f;
    for (int64_t s = 0; s < len; ++s)
      sum += (scores[s] = std::exp(scores[s] - mx));
    float *oi = y.data() + i * hd;
    std::fill(oi, oi + hd, 0.0f);
    for (int64_t s = 0; s < len; ++s) {
      const float *vs = l.values.data() + s * kv + g * hd;
      float p = scores[s] / sum;
      for (int64_t e = 0; e < hd; ++e)
        oi[e] += p * vs[e];
    }
  }
  gemv(l.o, l.heads * hd, {{0, d}}, l.qRuns, y.data(), mix.data());
}

void Decoder::Impl::mamba(Layer &l) {
  int64_t d = hiddenActive, gn = groups * state, n = state;
  int64_t ha = l.mHeadsActive, pa = l.headDimActive, active = ha * pa;
  int64_t conv = active + 2 * gn, k = l.kernel;
  gemv(l.inProj, hidden, l.inRuns, {{0, d}}, x.data(), proj.data());
  const float *z = proj.data(), *xin = z + active, *dt = xin + conv;
  // Depthwise causal conv over the active [x, B, C] channels: the window is the last K-1
  // inputs (zero before the first token), then SiLU.
  for (int64_t c = 0; c < conv; ++c) {
    int64_t src = l.convIdx[c];
    const float *w = l.convW + src * k;
    float acc = l.convB[src];
    for (int64_t j = 0; j < k - 1; ++j)
      acc += w[j] * l.convHist[j * conv + c];
    acc += w[k - 1] * xin[c];
    xbc[c] = silu(acc);
  }
  if (k > 1) {
    std::copy(l.convHist.begin() + conv, l.convHist.end(), l.convHist.begin());
    std::copy(xin, xin + conv, l.convHist.begin() + (k - 2) * conv);
  }
  const float *xs = xbc.data(), *bAll = xs + active, *cAll = bAll + gn;
  int64_t perGroup = ha / groups;
  for (int64_t i = 0; i < ha; ++i) {
    int64_t head = l.activeHeads[i], g = i / perGroup;
    float a = -std::exp(l.aLog[head]);
    float delta = softplus(dt[i] + l.dtBias[head]);
    float decay = std::exp(delta * a), dSkip = l.dSkip[head];
    const float *bt = bAll + g * n, *ct = cAll + g * n;
    for (int64_t p = 0; p < pa; ++p) {
      float xp = xs[i * pa + p], dx = delta * xp;
      float *s = l.ssm.data() + (i * pa + p) * n;
      float out = dSkip * xp;
      for (int64_t e = 0; e < n; ++e) {
        s[e] = decay * s[e] + dx * bt[e];
        out += s[e] * ct[e];
      }
      y[i * pa + p] = out * silu(z[i * pa + p]);
    }
  }
  // Gated group RMSNorm: group g is the packed heads [g H'/G, (g+1) H'/G) (every group keeps
  // the same fraction, which is what makes the sliced norm the masked one).
  int64_t groupSize = active / groups;
  for (int64_t g = 0; g < groups; ++g) {
    float *v = y.data() + g * groupSize;
    double ss = 0.0;
    for (int64_t c = 0; c < groupSize; ++c)
      ss += double(v[c]) * double(v[c]);
    float inv = static_cast<float>(1.0 / std::sqrt(ss / double(groupSize) + eps));
    for (int64_t i = 0; i < perGroup; ++i) {
      int64_t head = l.activeHeads[g * perGroup + i];
      const float *w = l.gateNorm + head * l.headDim;
      for (int64_t p = 0; p < pa; ++p)
        v[i * pa + p] = v[i * pa + p] * inv * w[p];
    }
  }
  gemv(l.outProj, l.mHeads * l.headDim, {{0, d}}, l.chanRuns, y.data(), mix.data());
}

Decoder::Decoder(std::unique_ptr<Impl> impl) : impl(std::move(impl)) {}
Decoder::~Decoder() = default;

llvm::Expected<std::unique_ptr<Decoder>> Decoder::create(const spec::ModelSpec &spec,
                                                         const train::TensorMap &weights,
                                                         const spec::ModelSizes<double> &sizes) {
  auto impl = std::make_unique<Impl>();
  if (llvm::Error err = impl->build(spec, weights, sizes))
    return err;
  std::unique_ptr<Decoder> decoder(new Decoder(std::move(impl)));
  decoder->reset();
  return decoder;
}

void Decoder::reset() {
  Impl &m = *impl;
  m.pos = 0;
  for (Layer &l : m.layers) {
    if (!l.keep)
      continue;
    l.keys.clear();
    l.values.clear();
    if (l.kind == spec::LayerKind::Mamba) {
      int64_t active = l.mHeadsActive * l.headDimActive;
      l.convHist.assign((l.kernel - 1) * (active + 2 * m.groups * m.state), 0.0f);
      l.ssm.assign(active * m.state, 0.0f);
    }
  }
}

int64_t Decoder::position() const { return impl->pos; }
int64_t Decoder::vocabSize() const { return impl->vocab; }

llvm::Expected<const float *> Decoder::step(int32_t token) {
  Impl &m = *impl;
  if (token < 0 || token >= m.vocab)
    return llvm::createStringError("decode: token %d at position %lld is not in [0, %lld)", token,
                                   (long long)m.pos, (long long)m.vocab);
  int64_t d = m.hiddenActive;
  std::copy(m.embedding + token * m.hidden, m.embedding + token * m.hidden + d, m.h.begin());
  for (Layer &l : m.layers) {
    if (!l.keep)
      continue;
    rmsNorm(m.h.data(), l.norm, d, m.eps, m.x.data());
    switch (l.kind) {
    case spec::LayerKind::MLP:
      m.mlp(l);
      break;
    case spec::LayerKind::Attention:
      m.attention(l);
      break;
    case spec::LayerKind::Mamba:
      m.mamba(l);
      break;
    }
    for (int64_t c = 0; c < d; ++c)
      m.h[c] += m.mix[c];
  }
  rmsNorm(m.h.data(), m.normF, d, m.eps, m.x.data());
  gemv(m.head, m.hidden, {{0, m.vocab}}, {{0, d}}, m.x.data(), m.logits.data());
  ++m.pos;
  return m.logits.data();
}

llvm::Expected<std::vector<int32_t>> Decoder::greedy(const std::vector<int32_t> &prompt,
                                                     int64_t maxTokens, int32_t stopToken) {
  reset();
  std::vector<int32_t> out;
  if (prompt.empty() || maxTokens <= 0)
    return out;
  const float *logits = nullptr;
  for (int32_t t : prompt) {
    auto l = step(t);
    if (!l)
      return l.takeError();
    logits = *l;
  }
  while (static_cast<int64_t>(out.size()) < maxTokens) {
    int32_t next = static_cast<int32_t>(std::max_element(logits, logits + impl->vocab) - logits);
    out.push_back(next);
    if (next == stopToken || static_cast<int64_t>(out.size()) == maxTokens)
      break;
    auto l = step(next);
    if (!l)
      return l.takeError();
    logits = *l;
  }
  return out;
}
