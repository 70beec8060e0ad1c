//===- nestor_standalone_device.cuh - GPU kernels of `nestor build` programs -*- CUDA -*-===//
//
// The decode step of a dense model on a GPU, one token at a time, with every size a template
// parameter. `nestor build` writes one line per distinct layer type of the model, e.g.
//   NESTOR_SD_MAMBA(mamba_24_64, 768, 24, 64, 2, 128, 4)
// which defines that layer's kernels as `extern "C"` entry points named after the tag
// (mamba_24_64_in, mamba_24_64_conv, ...), compiles the file to PTX with NVRTC, and embeds the
// PTX in the executable; the executable's host side (nestor_standalone.h, namespace gpu)
// launches the entry points by those names.
//
// The arithmetic is the CPU runtime's (nestor_standalone.h): RMSNorms sum squares in double,
// the conv window, the zero-order-hold SSM update and the attention softmax are the same
// formulas in float. Sums run in another order (warp trees instead of one running sum), so
// logits agree to rounding, and greedy tokens agree unless two logits tie to that precision.
//
// The same text compiles as host C++ under the CUDA host emulation
// (test/unit/cuda/cuda_host_emulation.h, which defines NESTOR_HOST_EMULATION): then every entry
// point also registers itself with the executable's emulated GPU, so the launch sequence of a
// built program is tested on machines without a GPU.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_STANDALONE_DEVICE_CUH
#define NESTOR_STANDALONE_DEVICE_CUH

/// Threads per block of every kernel; the host side launches with the same number.
#define NESTOR_SD_THREADS 128

namespace nestor_sd {

constexpr unsigned kThreads = NESTOR_SD_THREADS, kWarps = kThreads / 32;

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float negativeInfinity() { return __int_as_float(0xff800000u); }

template <typename T> __device__ __forceinline__ T warpSum(T v) {
  for (int offset = 16; offset > 0; offset /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

/// The sum (or max) of every thread's `v`, returned to every thread. Every thread of the block
/// must call it. The warps' partial results are combined in warp order, so the result does not
/// depend on scheduling.
template <bool Max, typename T> __device__ T blockReduce(T v) {
  __shared__ T partial[kWarps];
  for (int offset = 16; offset > 0; offset /= 2) {
    T other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = Max ? (other > v ? other : v) : v + other;
  }
  if (threadIdx.x % 32 == 0)
    partial[threadIdx.x / 32] = v;
  __syncthreads();
  T total = partial[0];
  for (unsigned w = 1; w < kWarps; ++w)
    total = Max ? (partial[w] > total ? partial[w] : total) : total + partial[w];
  __syncthreads(); // `partial` may be reused by the next call
  return total;
}

/// h = table[token] (grid: D / kThreads blocks).
template <unsigned D> __device__ void embed(const float *table, int token, float *h) {
  unsigned i = blockIdx.x * kThreads + threadIdx.x;
  if (i < D)
    h[i] = table[static_cast<unsigned long long>(token) * D + i];
}

/// out = x / rms(x) * w over D values, the sum of squares in double, by one block. `out` may
/// be `x` (each value is read and then written by the same thread).
template <unsigned D>
__device__ void rmsnorm(const float *x, const float *__restrict__ w, float *out, double eps) {
  double ss = 0.0;
  for (unsigned i = threadIdx.x; i < D; i += kThreads)
    ss += double(x[i]) * double(x[i]);
  ss = blockReduce<false>(ss);
  float inv = static_cast<float>(1.0 / sqrt(ss / double(D) + eps));
  for (unsigned i = threadIdx.x; i < D; i += kThreads)
    out[i] = x[i] * inv * w[i];
}

enum class Epilogue { Store, Add, ReluSquare };

/// y = W x for a row-major W [Rows, Cols], one warp per row (grid: Rows / kWarps blocks):
/// a warp reads its row front to back in 128-byte (or, with float4 loads, 512-byte) pieces.
/// Add: y += W x (the residual); ReluSquare: y = relu(W x)^2 (the MLP's activation).
template <unsigned Rows, unsigned Cols, Epilogue E>
__device__ void matvec(const float *__restrict__ w, const float *__restrict__ x,
                       float *__restrict__ y) {
  unsigned lane = threadIdx.x % 32, row = blockIdx.x * kWarps + threadIdx.x / 32;
  float sum = 0.0f;
  if (row < Rows) {
    const float *wr = w + static_cast<unsigned long long>(row) * Cols;
    if constexpr (Cols % 4 == 0) {
      // Rows start 16-byte aligned: buffers are, and Cols is a multiple of 4.
      const float4 *w4 = reinterpret_cast<const float4 *>(wr);
      const float4 *x4 = reinterpret_cast<const float4 *>(x);
      for (unsigned j = lane; j < Cols / 4; j += 32) {
        float4 a = w4[j], b = x4[j];
        sum += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
      }
    } else {
      for (unsigned j = lane; j < Cols; j += 32)
        sum += wr[j] * x[j];
    }
  }
  sum = warpSum(sum); // every lane takes part, inside the matrix or not
  if (lane == 0 && row < Rows) {
    if constexpr (E == Epilogue::Store) {
      y[row] = sum;
    } else if constexpr (E == Epilogue::Add) {
      y[row] += sum;
    } else {
      float r = sum > 0.0f ? sum : 0.0f;
      y[row] = r * r;
    }
  }
}

/// The first index of the largest logit (one block), as std::max_element picks it.
template <unsigned V> __device__ void argmax(const float *__restrict__ logits, int *out) {
  __shared__ float bestValue[kThreads];
  __shared__ int bestIndex[kThreads];
  float best = negativeInfinity();
  int index = -1;
  for (unsigned i = threadIdx.x; i < V; i += kThreads)
    if (index < 0 || logits[i] > best) {
      best = logits[i];
      index = static_cast<int>(i);
    }
  bestValue[threadIdx.x] = best;
  bestIndex[threadIdx.x] = index;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (unsigned t = 1; t < kThreads; ++t) {
      int i = bestIndex[t];
      if (i >= 0 && (bestValue[t] > best || (bestValue[t] == best && i < index))) {
        best = bestValue[t];
        index = i;
      }
    }
    *out = index;
  }
}

/// The depthwise causal conv of K taps with SiLU, one thread per channel (grid: C /
/// kThreads); `history` [C, K - 1] holds each channel's last K - 1 inputs, oldest first, and
/// takes this token's input.
template <unsigned C, unsigned K>
__device__ void conv(const float *__restrict__ xin, const float *__restrict__ w,
                     const float *__restrict__ bias, float *__restrict__ history,
                     float *__restrict__ out) {
  unsigned c = blockIdx.x * kThreads + threadIdx.x;
  if (c >= C)
    return;
  const float *wc = w + c * K;
  float *past = history + c * (K - 1);
  float input = xin[c], acc = bias[c];
  for (unsigned j = 0; j + 1 < K; ++j)
    acc += wc[j] * past[j];
  acc += wc[K - 1] * input;
  out[c] = silu(acc);
  if constexpr (K > 1) {
    for (unsigned j = 0; j + 2 < K; ++j)
      past[j] = past[j + 1];
    past[K - 2] = input;
  }
}

/// The SSM update for one token: s <- exp(dt A) s + dt x B, y = (C.s + D x) silu(z), one warp
/// per channel of H heads x P (grid: HP / kWarps), its lanes over the N state entries.
template <unsigned H, unsigned P, unsigned G, unsigned N>
__device__ void ssmStep(const float *__restrict__ z, const float *__restrict__ xs,
                        const float *__restrict__ bAll, const float *__restrict__ cAll,
                        const float *__restrict__ dt, const float *__restrict__ dtBias,
                        const float *__restrict__ aLog, const float *__restrict__ dSkip,
                        float *__restrict__ state, float *__restrict__ y) {
  unsigned lane = threadIdx.x % 32, channel = blockIdx.x * kWarps + threadIdx.x / 32;
  bool inside = channel < H * P;
  float partial = 0.0f, decay = 0.0f, dx = 0.0f;
  unsigned head = inside ? channel / P : 0, g = head / (H / G);
  if (inside) {
    float a = -expf(aLog[head]);
    float delta = softplus(dt[head] + dtBias[head]);
    decay = expf(delta * a);
    dx = delta * xs[channel];
    float *s = state + static_cast<unsigned long long>(channel) * N;
    const float *bt = bAll + g * N, *ct = cAll + g * N;
    for (unsigned e = lane; e < N; e += 32) {
      float next = decay * s[e] + dx * bt[e];
      s[e] = next;
      partial += next * ct[e];
    }
  }
  partial = warpSum(partial);
  if (inside && lane == 0)
    y[channel] = (partial + dSkip[head] * xs[channel]) * silu(z[channel]);
}

/// The gated group RMSNorm in place, one block per group of S channels.
template <unsigned S> __device__ void groupNorm(float *y, const float *__restrict__ w, double eps) {
  rmsnorm<S>(y + blockIdx.x * S, w + blockIdx.x * S, y + blockIdx.x * S, eps);
}

/// Causal attention of the newest query over the `length` cached positions, one block per
/// query head (grid: NH); head i reads KV head i / (NH / NKV). `scores` [NH, capacity] is
/// scratch.
template <unsigned NH, unsigned NKV, unsigned HD>
__device__ void attend(const float *__restrict__ query, const float *__restrict__ keys,
                       const float *__restrict__ values, int length, float *__restrict__ scores,
                       int capacity, float *__restrict__ heads) {
  constexpr unsigned kKV = NKV * HD;
  unsigned i = blockIdx.x, g = i / (NH / NKV);
  const float *qi = query + i * HD;
  float *sc = scores + static_cast<unsigned long long>(i) * capacity;
  const float scale = 1.0f / sqrtf(static_cast<float>(HD));
  float mx = negativeInfinity();
  for (int s = threadIdx.x; s < length; s += kThreads) {
    const float *ks = keys + static_cast<unsigned long long>(s) * kKV + g * HD;
    float dot = 0.0f;
    for (unsigned e = 0; e < HD; ++e)
      dot += qi[e] * ks[e];
    float v = dot * scale;
    sc[s] = v;
    mx = v > mx ? v : mx;
  }
  mx = blockReduce<true>(mx);
  float sum = 0.0f;
  for (int s = threadIdx.x; s < length; s += kThreads) {
    float p = expf(sc[s] - mx);
    sc[s] = p;
    sum += p;
  }
  sum = blockReduce<false>(sum); // its barrier also publishes every thread's sc[s]
  for (unsigned e = threadIdx.x; e < HD; e += kThreads) {
    float acc = 0.0f;
    for (int s = 0; s < length; ++s)
      acc += (sc[s] / sum) * values[static_cast<unsigned long long>(s) * kKV + g * HD + e];
    heads[i * HD + e] = acc;
  }
}

} // namespace nestor_sd

#ifdef NESTOR_HOST_EMULATION
static_assert(nestor_sd::kThreads == nestor::standalone::gpu::kThreads,
              "the host launches the block size the kernels are built for");
// The executable's emulated GPU finds entry points by name (nestor_standalone.h).
#define NESTOR_SD_REGISTER(name)                                                                   \
  [[maybe_unused]] static const bool name##_registered =                                           \
      nestor::standalone::gpu::registerEmulatedKernel(#name, &name);
#else
#define NESTOR_SD_REGISTER(name)
#endif

#define NESTOR_SD_ENTRY(name) extern "C" __global__ void __launch_bounds__(NESTOR_SD_THREADS) name

/// The kernels every model has: embedding, RMSNorm, the LM head (V x D) and the argmax.
#define NESTOR_SD_MODEL(V, D)                                                                      \
  NESTOR_SD_ENTRY(nestor_embed)(const float *table, int token, float *h) {                         \
    nestor_sd::embed<D>(table, token, h);                                                          \
  }                                                                                                \
  NESTOR_SD_REGISTER(nestor_embed)                                                                 \
  NESTOR_SD_ENTRY(nestor_rmsnorm)(const float *x, const float *w, float *out, double eps) {        \
    nestor_sd::rmsnorm<D>(x, w, out, eps);                                                         \
  }                                                                                                \
  NESTOR_SD_REGISTER(nestor_rmsnorm)                                                               \
  NESTOR_SD_ENTRY(nestor_head)(const float *w, const float *x, float *logits) {                    \
    nestor_sd::matvec<V, D, nestor_sd::Epilogue::Store>(w, x, logits);                             \
  }                                                                                                \
  NESTOR_SD_REGISTER(nestor_head)                                                                  \
  NESTOR_SD_ENTRY(nestor_argmax)(const float *logits, int *out) {                                  \
    nestor_sd::argmax<V>(logits, out);                                                             \
  }                                                                                                \
  NESTOR_SD_REGISTER(nestor_argmax)

/// The squared-ReLU MLP with an FFN of F: TAG_up (relu(up x)^2), TAG_down (h += down a).
#define NESTOR_SD_MLP(TAG, D, F)                                                                   \
  NESTOR_SD_ENTRY(TAG##_up)(const float *w, const float *x, float *act) {                          \
    nestor_sd::matvec<F, D, nestor_sd::Epilogue::ReluSquare>(w, x, act);                           \
  }                                                                                                \
  NESTOR_SD_REGISTER(TAG##_up)                                                                     \
  NESTOR_SD_ENTRY(TAG##_down)(const float *w, const float *act, float *h) {                        \
    nestor_sd::matvec<D, F, nestor_sd::Epilogue::Add>(w, act, h);                                  \
  }                                                                                                \
  NESTOR_SD_REGISTER(TAG##_down)

/// Grouped-query attention, NH query heads: TAG_q, TAG_kv (one for K and V: both [NKV HD, D]),
/// TAG_attend, TAG_o (h += o heads).
#define NESTOR_SD_ATTENTION(TAG, D, NH, NKV, HD)                                                   \
  NESTOR_SD_ENTRY(TAG##_q)(const float *w, const float *x, float *q) {                             \
    nestor_sd::matvec<(NH) * (HD), D, nestor_sd::Epilogue::Store>(w, x, q);                        \
  }                                                                                                \
  NESTOR_SD_REGISTER(TAG##_q)                                                                      \
  NESTOR_SD_ENTRY(TAG##_kv)(const float *w, const float *x, float *row) {                          \
    nestor_sd::matvec<(NKV) * (HD), D, nestor_sd::Epilogue::Store>(w, x, row);                     \
  }                                                                                                \
  NESTOR_SD_REGISTER(TAG##_kv)                                                                     \
  NESTOR_SD_ENTRY(TAG##_attend)                                                                    \
  (const float *q, const float *keys, const float *values, int length, float *scores,              \
   int capacity, float *heads) {                                                                   \
    nestor_sd::attend<NH, NKV, HD>(q, keys, values, length, scores, capacity, heads);              \
  }                                                                                                \
  NESTOR_SD_REGISTER(TAG##_attend)                                                                 \
  NESTOR_SD_ENTRY(TAG##_o)(const float *w, const float *heads, float *h) {                         \
    nestor_sd::matvec<D, (NH) * (HD), nestor_sd::Epilogue::Add>(w, heads, h);                      \
  }                                                                                                \
  NESTOR_SD_REGISTER(TAG##_o)

/// The Mamba2 mixer, H heads of P channels, G groups, state N, K conv taps: TAG_in, TAG_conv,
/// TAG_ssm, TAG_norm (the gated group norm), TAG_out (h += out y).
#define NESTOR_SD_MAMBA(TAG, D, H, P, G, N, K)                                                     \
  NESTOR_SD_ENTRY(TAG##_in)(const float *w, const float *x, float *proj) {                         \
    nestor_sd::matvec<2 * (H) * (P) + 2 * (G) * (N) + (H), D, nestor_sd::Epilogue::Store>(w, x,    \
                                                                                          proj);   \
  }                                                                                                \
  NESTOR_SD_REGISTER(TAG##_in)                                                                     \
  NESTOR_SD_ENTRY(TAG##_conv)                                                                      \
  (const float *xin, const float *w, const float *bias, float *history, float *out) {              \
    nestor_sd::conv<(H) * (P) + 2 * (G) * (N), K>(xin, w, bias, history, out);                     \
  }                                                                                                \
  NESTOR_SD_REGISTER(TAG##_conv)                                                                   \
  NESTOR_SD_ENTRY(TAG##_ssm)                                                                       \
  (const float *z, const float *xs, const float *b, const float *c, const float *dt,               \
   const float *dtBias, const float *aLog, const float *dSkip, float *state, float *y) {           \
    nestor_sd::ssmStep<H, P, G, N>(z, xs, b, c, dt, dtBias, aLog, dSkip, state, y);                \
  }                                                                                                \
  NESTOR_SD_REGISTER(TAG##_ssm)                                                                    \
  NESTOR_SD_ENTRY(TAG##_norm)(float *y, const float *w, double eps) {                              \
    nestor_sd::groupNorm<(H) * (P) / (G)>(y, w, eps);                                              \
  }                                                                                                \
  NESTOR_SD_REGISTER(TAG##_norm)                                                                   \
  NESTOR_SD_ENTRY(TAG##_out)(const float *w, const float *y, float *h) {                           \
    nestor_sd::matvec<D, (H) * (P), nestor_sd::Epilogue::Add>(w, y, h);                            \
  }                                                                                                \
  NESTOR_SD_REGISTER(TAG##_out)

#endif // NESTOR_STANDALONE_DEVICE_CUH
