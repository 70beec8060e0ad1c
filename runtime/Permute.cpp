//===- Permute.cpp - Function-preserving permutations ----------------------===//
#include "nestor/Permute.h"

#include "llvm/Support/FormatVariadic.h"

using namespace nestor;
using nestor::ref::Tensor;

namespace {

/// Reorders rows (dim 0) of `t` in [begin, begin + order.size()) by `order`.
void permuteRows(Tensor &t, int64_t begin, const std::vector<int64_t> &order) {
  int64_t width = t.shape.size() > 1 ? t.numel() / t.dim(0) : 1;
  Tensor old = t;
  for (size_t i = 0; i < order.size(); ++i)
    std::copy_n(&old.data[(begin + order[i]) * width], width, &t.data[(begin + i) * width]);
}

/// Reorders columns (dim 1) of matrix `t` in [begin, begin + order.size()).
void permuteCols(Tensor &t, int64_t begin, const std::vector<int64_t> &order) {
  int64_t rows = t.dim(0), cols = t.dim(1);
  Tensor old = t;
  for (int64_t r = 0; r < rows; ++r)
    for (size_t i = 0; i < order.size(); ++i)
      t[r * cols + begin + i] = old[r * cols + begin + order[i]];
}

/// The order of the H*P channels of (head, channel) pairs for head and channel orders.
std::vector<int64_t> headChannelOrder(const std::vector<int64_t> &heads,
                                      const std::vector<int64_t> &chans, int64_t H, int64_t P) {
  std::vector<int64_t> order;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t p = 0; p < P; ++p)
      order.push_back((heads.empty() ? h : heads[h]) * P + (chans.empty() ? p : chans[p]));
  return order;
}

bool isPermutation(const std::vector<int64_t> &order, int64_t n) {
  if (static_cast<int64_t>(order.size()) != n)
    return false;
  std::vector<bool> seen(n, false);
  for (int64_t i : order) {
    if (i < 0 || i >= n || seen[i])
      return false;
    seen[i] = true;
  }
  return true;
}

} // namespace

llvm::Error nestor::verifyPermutation(const spec::ModelSpec &spec, const ModelPermutation &perm) {
  const spec::Architecture &a = spec.architecture();
  auto fail = [](const llvm::Twine &what) { return llvm::createStringError(what.str()); };
  if (!perm.hidden.empty() && !isPermutation(perm.hidden, a.hidden_size()))
    return fail("hidden: not a permutation of the hidden channels");
  auto groupsKept = [](const std::vector<int64_t> &order, int64_t perGroup) {
    for (size_t i = 0; i < order.size(); ++i)
      if (order[i] / perGroup != static_cast<int64_t>(i) / perGroup)
        return false;
    return true;
  };
  for (size_t l = 0; l < a.hybrid_override_pattern().size(); ++l) {
    auto at = [&](const std::vector<std::vector<int64_t>> &v) -> const std::vector<int64_t> & {
      static const std::vector<int64_t> none;
      return l < v.size() ? v[l] : none;
    };
    std::string layer = llvm::formatv("layer {0}", l).str();
    if (!at(perm.ffn).empty() && !isPermutation(at(perm.ffn), a.intermediate_size()))
      return fail(layer + ": ffn order is not a permutation");
    if (!at(perm.attnHeads).empty() &&
        (!isPermutation(at(perm.attnHeads), a.num_attention_heads()) ||
         !groupsKept(at(perm.attnHeads), a.num_attention_heads() / a.num_key_value_heads())))
      return fail(layer + ": attention heads must be permuted within their KV group");
    if (!at(perm.mambaHeads).empty() &&
        (!isPermutation(at(perm.mambaHeads), a.mamba_num_heads()) ||
         !groupsKept(at(perm.mambaHeads), a.mamba_num_heads() / a.n_groups())))
      return fail(layer + ": Mamba heads must be permuted within their group");
    if (!at(perm.mambaChannels).empty() &&
        !isPermutation(at(perm.mambaChannels), a.mamba_head_dim()))
      return fail(layer + ": Mamba head channels order is not a permutation");
  }
  return llvm::Error::success();
}

llvm::Error nestor::permuteParams(const spec::ModelSpec &spec, const ModelPermutation &perm,
                                  ParamMap &params) {
  if (llvm::Error err = verifyPermutation(spec, perm))
    return err;
  const spec::Architecture &a = spec.architecture();
  int64_t H = a.mamba_num_heads(), P = a.mamba_head_dim(), GN = a.n_groups() * a.ssm_state_size();
  int64_t HP = H * P, hd = a.head_dim();
  auto param = [&](const std::string &name) -> llvm::Expected<Tensor &> {
    auto it = params.find(name);
    if (it == params.end())
      return llvm::createStringError(("missing parameter " + name).c_str());
    return it->second;
  };
  const std::vector<int64_t> &hid = perm.hidden;
  using Reorder = void (*)(Tensor &, int64_t, const std::vector<int64_t> &);
  auto reorder = [&](Reorder how, const std::string &name, int64_t begin,
                     const std::vector<int64_t> &order) -> llvm::Error {
    if (order.empty())
      return llvm::Error::success();
    auto t = param(name);
    if (!t)
      return t.takeError();
    how(*t, begin, order);
    return llvm::Error::success();
  };
  auto rows = [&](const std::string &name, int64_t begin, const std::vector<int64_t> &order) {
    return reorder(permuteRows, name, begin, order);
  };
  auto cols = [&](const std::string &name, int64_t begin, const std::vector<int64_t> &order) {
    return reorder(permuteCols, name, begin, order);
  };
  auto blocks = [](const std::vector<int64_t> &heads, int64_t size) {
    return headChannelOrder(heads, {}, static_cast<int64_t>(heads.size()), size);
  };
  llvm::Error all = llvm::Error::success();
  auto run = [&](llvm::Error e) { all = llvm::joinErrors(std::move(all), std::move(e)); };

  run(cols("backbone.embeddings.weight", 0, hid));
  run(rows("backbone.norm_f.weight", 0, hid));
  if (!a.tie_word_embeddings())
    run(cols("lm_head.weight", 0, hid));
  for (size_t l = 0; l < a.hybrid_override_pattern().size(); ++l) {
    std::string p = llvm::formatv("backbone.layers.{0}.", l).str();
    auto at = [&](const std::vector<std::vector<int64_t>> &v) {
      return l < v.size() ? v[l] : std::vector<int64_t>();
    };
    run(rows(p + "norm.weight", 0, hid));
    switch (a.hybrid_override_pattern()[l]) {
    case '-':
      run(cols(p + "mixer.up_proj.weight", 0, hid));
      run(rows(p + "mixer.down_proj.weight", 0, hid));
      run(rows(p + "mixer.up_proj.weight", 0, at(perm.ffn)));
      run(cols(p + "mixer.down_proj.weight", 0, at(perm.ffn)));
      break;
    case '*': {
      for (const char *w : {"q_proj", "k_proj", "v_proj"})
        run(cols(p + "mixer." + w + ".weight", 0, hid));
      run(rows(p + "mixer.o_proj.weight", 0, hid));
      std::vector<int64_t> heads = at(perm.attnHeads);
      if (!heads.empty()) {
        std::vector<int64_t> q = blocks(heads, hd);
        run(rows(p + "mixer.q_proj.weight", 0, q));
        run(cols(p + "mixer.o_proj.weight", 0, q));
      }
      break;
    }
    case 'M': {
      run(cols(p + "mixer.in_proj.weight", 0, hid));
      run(rows(p + "mixer.out_proj.weight", 0, hid));
      std::vector<int64_t> heads = at(perm.mambaHeads), chans = at(perm.mambaChannels);
      if (heads.empty() && chans.empty())
        break;
      std::vector<int64_t> hc = headChannelOrder(heads, chans, H, P);
      run(rows(p + "mixer.in_proj.weight", 0, hc));  // z
      run(rows(p + "mixer.in_proj.weight", HP, hc)); // x (B, C stay)
      run(rows(p + "mixer.conv1d.weight", 0, hc));
      run(rows(p + "mixer.conv1d.bias", 0, hc));
      run(rows(p + "mixer.norm.weight", 0, hc));
      run(cols(p + "mixer.out_proj.weight", 0, hc));
      if (!heads.empty()) {
        run(rows(p + "mixer.in_proj.weight", 2 * HP + 2 * GN, heads)); // dt
        for (const char *w : {"mixer.dt_bias", "mixer.A_log", "mixer.D"})
          run(rows(p + w, 0, heads));
      }
      break;
    }
    }
  }
  return all;
}
