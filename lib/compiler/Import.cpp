//===- Import.cpp - From a model spec to elastic IR ------------------------===//
//
// Builds the model functions of a spec in the elastic dialect (see nestor/Import.h). The
// importer only assembles ops; every rule about shapes and groups is the ops' verifiers', and
// the module is verified before it is returned.
//
//===----------------------------------------------------------------------===//
#include "nestor/Import.h"

#include "dialects/elastic/ElasticOps.h"
#include "nestor/ParamCount.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <numeric>

using namespace mlir;
using namespace nestor;
using namespace nestor::elastic;
namespace pb = nestor::spec;

void nestor::loadImportDialects(MLIRContext &context) {
  DialectRegistry registry;
  registerNestorDialects(registry);
  context.appendDialectRegistry(registry);
  context.loadAllAvailableDialects();
}

namespace {

/// One elastic width axis of the spec, in router-stream order.
struct AxisInfo {
  const char *name; // spec field and router name
  AxisKind kind;
  pb::LayerKind layerKind; // the layer type it applies to (hidden: all)
  const pb::AxisChoices *choices = nullptr;
  int64_t size = 0; // parent size
  int64_t groups = 1;
  unsigned stream = 0;
};

class Importer {
public:
  Importer(MLIRContext &context, const pb::ModelSpec &spec, const ImportOptions &options)
      : spec(spec), arch(spec.architecture()), options(options), builder(&context),
        loc(NameLoc::get(builder.getStringAttr(spec.name().empty() ? "model" : spec.name()))) {
    elementType = options.float64 ? Type(builder.getF64Type()) : Type(builder.getF32Type());
  }

  llvm::Expected<OwningOpRef<ModuleOp>> run();

private:
  /// The arguments of the function being built.
  struct Signature {
    SmallVector<Type> types;
    SmallVector<DictionaryAttr> attrs;
    unsigned add(Type type, StringRef key, StringRef name, Builder &b) {
      types.push_back(type);
      attrs.push_back(b.getDictionaryAttr(b.getNamedAttr(key, b.getStringAttr(name))));
      return types.size() - 1;
    }
  };

  /// Per-layer masks and gates for the model body (all null for the unmasked parent).
  struct Masks {
    Value hidden;
    SmallVector<Value> ffn, attnHeads, mambaHeads, mambaHeadDim; // one per layer (or null)
    Value keep;
    explicit Masks(size_t layers)
        : ffn(layers), attnHeads(layers), mambaHeads(layers), mambaHeadDim(layers) {}
  };

  /// The caller-owned state of a decode step: per layer its state arguments (Mamba: conv
  /// window, SSM state; attention: K and V caches), and the position of the first new token.
  struct DecodeState {
    Value position;
    SmallVector<std::pair<Value, Value>> layers;
  };

  void declareModelParams(Signature &sig);
  void declareRouterParams(Signature &sig);
  void declareDecodeState(Signature &sig);
  Value buildBody(OpBuilder &b, func::FuncOp func, Value tokens, const Masks &masks,
                  const DecodeState *state = nullptr);
  Value param(StringRef name) { return params.lookup(name); }
  RankedTensorType tensor(ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, elementType);
  }
  RankedTensorType activation(int64_t width) {
    return tensor({ShapedType::kDynamic, ShapedType::kDynamic, width});
  }
  Value scalarConstant(OpBuilder &b, double value, ArrayRef<int64_t> shape = {}) {
    auto type = tensor(shape);
    return arith::ConstantOp::create(
        b, loc, type, DenseElementsAttr::get(type, b.getFloatAttr(elementType, value)));
  }
  std::string layerName(int64_t layer, StringRef suffix) {
    return llvm::formatv("backbone.layers.{0}.{1}", layer, suffix).str();
  }

  func::FuncOp createFunc(ModuleOp module, StringRef name, Signature &sig, ArrayRef<Type> results,
                          unsigned firstParam);
  void buildDense(ModuleOp module);
  void buildParent(ModuleOp module);
  llvm::Error buildElastic(ModuleOp module);
  llvm::Error buildDecodeStep(ModuleOp module);
  /// The depth ranking (least important layer first): options.depthOrder, checked, or by
  /// default the last layer first.
  llvm::Expected<SmallVector<int64_t>> depthOrder() const;
  /// Sets the masks of `axis` in `masks`, made by `makeMask(row)` (row: the layer's row of a
  /// heterogeneous axis).
  void assignAxisMasks(Masks &masks, const AxisInfo &axis,
                       llvm::function_ref<Value(std::optional<int64_t>)> makeMask);

  const pb::ModelSpec &spec;
  const pb::Architecture &arch;
  const ImportOptions &options;
  OpBuilder builder;
  Location loc;
  Type elementType;
  std::vector<pb::LayerKind> layers;
  SmallVector<AxisInfo> axes;
  // Parameter name -> argument name in declaration order, and, while a body is built, the
  // block arguments bound to them.
  SmallVector<std::pair<std::string, RankedTensorType>> modelParams, routerParams;
  llvm::StringMap<Value> params;
};

static int64_t layersOfKind(ArrayRef<pb::LayerKind> layers, pb::LayerKind kind) {
  return llvm::count(layers, kind);
}

void Importer::declareModelParams(Signature &sig) {
  modelParams.clear(); // each function declares its own arguments
  for (const pb::ParamShape &p : pb::parameterShapes(spec))
    if (!llvm::StringRef(p.name).starts_with("routers."))
      modelParams.push_back({p.name, tensor(p.shape)});
  for (auto &[name, type] : modelParams)
    sig.add(type, "elastic.param", name, builder);
}

void Importer::declareRouterParams(Signature &sig) {
  routerParams.clear();
  for (const pb::ParamShape &p : pb::parameterShapes(spec))
    if (llvm::StringRef(p.name).starts_with("routers."))
      routerParams.push_back({p.name, tensor(p.shape)});
  for (auto &[name, type] : routerParams)
    sig.add(type, "elastic.param", name, builder);
}

func::FuncOp Importer::createFunc(ModuleOp module, StringRef name, Signature &sig,
                                  ArrayRef<Type> results, unsigned firstParam) {
  OpBuilder::InsertionGuard guard(builder);
  builder.setInsertionPointToEnd(module.getBody());
  auto func = func::FuncOp::create(builder, loc, name, builder.getFunctionType(sig.types, results));
  func.setAllArgAttrs(sig.attrs);
  Block *entry = func.addEntryBlock();
  params.clear();
  for (unsigned i = firstParam; i < sig.types.size(); ++i) {
    // Run-time inputs may follow the parameters (the parent's layer_keep).
    if (auto argName = dyn_cast_or_null<StringAttr>(sig.attrs[i].get("elastic.param")))
      params[argName.getValue()] = entry->getArgument(i);
  }
  return func;
}

Value Importer::buildBody(OpBuilder &b, func::FuncOp func, Value tokens, const Masks &m,
                          const DecodeState *state) {
  int64_t d = arch.hidden_size();
  double eps = pb::layerNormEpsilon(arch);
  auto act = activation(d);
  auto epsAttr = b.getF64FloatAttr(eps);
  Value h = EmbedOp::create(b, loc, act, tokens, param("backbone.embeddings.weight"), m.hidden);
  pb::ModelSizes<double> sizes = pb::parentSizes(spec);
  for (auto [i, kind] : llvm::enumerate(layers)) {
    int64_t layer = static_cast<int64_t>(i);
    const pb::LayerSizes<double> &ls = sizes.layers[i];
    Value n = RMSNormOp::create(b, loc, act, h, param(layerName(layer, "norm.weight")), m.hidden,
                                epsAttr);
    Value y;
    switch (kind) {
    case pb::LayerKind::Mamba: {
      Value w[] = {param(layerName(layer, "mixer.in_proj.weight")),
                   param(layerName(layer, "mixer.conv1d.weight")),
                   param(layerName(layer, "mixer.conv1d.bias")),
                   param(layerName(layer, "mixer.dt_bias")),
                   param(layerName(layer, "mixer.A_log")),
                   param(layerName(layer, "mixer.D")),
                   param(layerName(layer, "mixer.norm.weight")),
                   param(layerName(layer, "mixer.out_proj.weight"))};
      auto heads = b.getI64IntegerAttr(int64_t(ls.mambaHeads));
      auto headDim = b.getI64IntegerAttr(int64_t(ls.mambaHeadDim));
      auto groups = b.getI64IntegerAttr(arch.n_groups());
      auto stateSize = b.getI64IntegerAttr(arch.ssm_state_size());
      if (state)
        y = Mamba2StepOp::create(b, loc, act, n, w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
                                 state->layers[i].first, state->layers[i].second, m.mambaHeads[i],
                                 m.mambaHeadDim[i], m.hidden, heads, headDim, groups, stateSize,
                                 epsAttr);
      else
        y = Mamba2Op::create(b, loc, act, n, w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
                             m.mambaHeads[i], m.mambaHeadDim[i], m.hidden, heads, headDim, groups,
                             stateSize, epsAttr);
      break;
    }
    case pb::LayerKind::Attention: {
      Value w[] = {param(layerName(layer, "mixer.q_proj.weight")),
                   param(layerName(layer, "mixer.k_proj.weight")),
                   param(layerName(layer, "mixer.v_proj.weight")),
                   param(layerName(layer, "mixer.o_proj.weight"))};
      auto heads = b.getI64IntegerAttr(int64_t(ls.attnHeads));
      auto kvHeads = b.getI64IntegerAttr(arch.num_key_value_heads());
      auto headDim = b.getI64IntegerAttr(arch.head_dim());
      if (state)
        y = AttentionStepOp::create(b, loc, act, n, w[0], w[1], w[2], w[3], state->layers[i].first,
                                    state->layers[i].second, state->position, m.attnHeads[i],
                                    m.hidden, heads, kvHeads, headDim);
      else
        y = AttentionOp::create(b, loc, act, n, w[0], w[1], w[2], w[3], m.attnHeads[i], m.hidden,
                                heads, kvHeads, headDim);
      break;
    }
    case pb::LayerKind::MLP:
      y = MLPOp::create(b, loc, act, n, param(layerName(layer, "mixer.up_proj.weight")),
                        param(layerName(layer, "mixer.down_proj.weight")), m.ffn[i], m.hidden);
      break;
    }
    IntegerAttr layerAttr = m.keep ? b.getI64IntegerAttr(layer) : IntegerAttr();
    h = DepthGateOp::create(b, loc, act, h, y, m.keep, layerAttr);
  }
  Value n = RMSNormOp::create(b, loc, act, h, param("backbone.norm_f.weight"), m.hidden, epsAttr);
  Value head =
      arch.tie_word_embeddings() ? param("backbone.embeddings.weight") : param("lm_head.weight");
  return LMHeadOp::create(b, loc, activation(arch.vocab_size()), n, head);
}

void Importer::buildDense(ModuleOp module) {
  Signature sig;
  auto tokensType =
      RankedTensorType::get({ShapedType::kDynamic, ShapedType::kDynamic}, builder.getI32Type());
  sig.add(tokensType, "elastic.input", "tokens", builder);
  sig.add(tokensType, "elastic.input", "targets", builder);
  declareModelParams(sig);
  Type results[] = {activation(arch.vocab_size()), tensor({})};
  func::FuncOp func = createFunc(module, "model", sig, results, 2);
  OpBuilder b = OpBuilder::atBlockEnd(&func.front());
  Masks none(layers.size());
  Value logits = buildBody(b, func, func.getArgument(0), none);
  Value ce = CrossEntropyOp::create(b, loc, tensor({}), logits, func.getArgument(1));
  func::ReturnOp::create(b, loc, ValueRange{logits, ce});
  func->setAttr("elastic.result_names", b.getStrArrayAttr({"logits", "loss"}));
}

void Importer::buildParent(ModuleOp module) {
  Signature sig;
  sig.add(RankedTensorType::get({ShapedType::kDynamic, ShapedType::kDynamic}, builder.getI32Type()),
          "elastic.input", "tokens", builder);
  declareModelParams(sig);
  // For the depth ranking: a run-time keep gate per layer (1 keeps it, 0 bypasses it).
  if (options.parentLayerKeep)
    sig.add(tensor({static_cast<int64_t>(layers.size())}), "elastic.input", "layer_keep", builder);
  Type results[] = {activation(arch.vocab_size())};
  func::FuncOp func = createFunc(module, "parent", sig, results, 1);
  OpBuilder b = OpBuilder::atBlockEnd(&func.front());
  Masks none(layers.size());
  if (options.parentLayerKeep)
    none.keep = func.getArguments().back();
  Value logits = buildBody(b, func, func.getArgument(0), none);
  func::ReturnOp::create(b, loc, logits);
  func->setAttr("elastic.result_names", b.getStrArrayAttr({"logits"}));
}

llvm::Expected<SmallVector<int64_t>> Importer::depthOrder() const {
  int64_t numLayers = static_cast<int64_t>(layers.size());
  SmallVector<int64_t> order(options.depthOrder.begin(), options.depthOrder.end());
  if (order.empty()) {
    order.resize(numLayers);
    std::iota(order.rbegin(), order.rend(), 0);
  }
  SmallVector<bool> seen(numLayers, false);
  for (int64_t layer : order) {
    if (layer < 0 || layer >= numLayers || seen[layer])
      return llvm::createStringError("depth order must be a permutation of the %lld layers",
                                     static_cast<long long>(numLayers));
    seen[layer] = true;
  }
  if (static_cast<int64_t>(order.size()) != numLayers)
    return llvm::createStringError("depth order must list all %lld layers",
                                   static_cast<long long>(numLayers));
  return order;
}

void Importer::assignAxisMasks(Masks &masks, const AxisInfo &axis,
                               llvm::function_ref<Value(std::optional<int64_t>)> makeMask) {
  if (axis.kind == AxisKind::Hidden) {
    masks.hidden = makeMask(std::nullopt);
    return;
  }
  // Per-layer masks: one shared mask (homogeneous) or one row per layer of the axis' kind.
  bool hetero = axis.choices->heterogeneous();
  Value shared = hetero ? Value() : makeMask(std::nullopt);
  int64_t row = 0;
  for (auto [i, kind] : llvm::enumerate(layers)) {
    if (kind != axis.layerKind)
      continue;
    Value mask = hetero ? makeMask(row++) : shared;
    switch (axis.kind) {
    case AxisKind::FFN:
      masks.ffn[i] = mask;
      break;
    case AxisKind::AttnHeads:
      masks.attnHeads[i] = mask;
      break;
    case AxisKind::MambaHeads:
      masks.mambaHeads[i] = mask;
      break;
    case AxisKind::MambaHeadDim:
      masks.mambaHeadDim[i] = mask;
      break;
    case AxisKind::Hidden:
      break;
    }
  }
}

llvm::Error Importer::buildElastic(ModuleOp module) {
  const pb::Elastic &el = spec.elastic();
  MaskMode mode = el.mask_mode() == pb::SOFT ? MaskMode::Soft : MaskMode::Hard;
  int64_t numLayers = static_cast<int64_t>(layers.size());

  auto depth = depthOrder();
  if (!depth)
    return depth.takeError();
  SmallVector<int64_t> order = std::move(*depth);

  Signature sig;
  auto tokensType =
      RankedTensorType::get({ShapedType::kDynamic, ShapedType::kDynamic}, builder.getI32Type());
  auto scalar = [&](Type t) { return RankedTensorType::get({}, t); };
  sig.add(tokensType, "elastic.input", "tokens", builder);
  sig.add(tokensType, "elastic.input", "targets", builder);
  sig.add(activation(arch.vocab_size()), "elastic.input", "teacher_logits", builder);
  sig.add(scalar(builder.getI32Type()), "elastic.input", "budget", builder);
  sig.add(tensor({}), "elastic.input", "tau", builder);
  sig.add(tensor({}), "elastic.input", "logit_scale", builder);
  sig.add(scalar(builder.getI1Type()), "elastic.input", "hard_sample", builder);
  sig.add(scalar(builder.getI64Type()), "elastic.input", "seed", builder);
  const unsigned firstParam = 8;
  declareModelParams(sig);
  declareRouterParams(sig);

  Type results[] = {activation(arch.vocab_size()), tensor({}), tensor({}), tensor({}), tensor({})};
  func::FuncOp func = createFunc(module, "elastic_model", sig, results, firstParam);
  OpBuilder b = OpBuilder::atBlockEnd(&func.front());
  Value tokens = func.getArgument(0), targets = func.getArgument(1);
  Value teacher = func.getArgument(2), budget = func.getArgument(3);
  Value tau = func.getArgument(4), logitScale = func.getArgument(5);
  Value hard = func.getArgument(6), seed = func.getArgument(7);

  // Routers: one per axis, input one_hot(budget).
  int64_t numBudgets = el.budgets_size();
  Value onehot = OneHotOp::create(b, loc, tensor({numBudgets}), budget);
  auto modeAttr = MaskModeAttr::get(b.getContext(), mode);
  // The resource loss takes expectations under the router distribution whatever the mask mode
  // (METHOD.md §6: e = sum_i pi_i k_i, a layer's terms times its keep probability): every
  // choice then receives gradient, not only the argmax's probability, so the router can move
  // towards a smaller choice instead of only losing confidence in the one it has.
  auto expectationAttr = MaskModeAttr::get(b.getContext(), MaskMode::Soft);
  auto route = [&](StringRef name, ArrayRef<int64_t> shape, unsigned stream) -> Value {
    std::string prefix = ("routers." + name).str();
    auto type = tensor(shape);
    Value logits = RouterOp::create(b, loc, type, onehot, param(prefix + ".fc1.weight"),
                                    param(prefix + ".fc1.bias"), param(prefix + ".fc2.weight"),
                                    param(prefix + ".fc2.bias"),
                                    b.getF64FloatAttr(pb::routerLeakyReluSlope(el)));
    Value noise = GumbelNoiseOp::create(b, loc, type, seed, b.getI64IntegerAttr(stream));
    return GumbelSoftmaxOp::create(b, loc, type, logits, noise, tau, logitScale, hard);
  };

  Masks masks(layers.size());
  SmallVector<Value> anchors;
  // Expected sizes for the resource loss; non-elastic axes stay at the parent size.
  Value expHidden = scalarConstant(b, double(arch.hidden_size()));
  Value expFfn = scalarConstant(b, double(arch.intermediate_size()));
  Value expAttn = scalarConstant(b, double(arch.num_attention_heads()));
  Value expMambaHeads = scalarConstant(b, double(arch.mamba_num_heads()));
  Value expMambaDim = scalarConstant(b, double(arch.mamba_head_dim()));

  for (const AxisInfo &axis : axes) {
    int64_t choices = axis.choices->choices_size();
    bool hetero = axis.choices->heterogeneous();
    int64_t rows = hetero ? layersOfKind(layers, axis.layerKind) : 1;
    SmallVector<int64_t> shape =
        hetero ? SmallVector<int64_t>{rows, choices} : SmallVector<int64_t>{choices};
    Value pi = route(axis.name, shape, axis.stream);
    anchors.push_back(pi);
    SmallVector<int64_t> ks(axis.choices->choices().begin(), axis.choices->choices().end());
    auto choicesAttr = b.getDenseI64ArrayAttr(ks);
    auto maskType = MaskType::get(b.getContext(), axis.kind, axis.size, axis.groups);
    auto makeMask = [&](std::optional<int64_t> row) -> Value {
      IntegerAttr rowAttr = row ? b.getI64IntegerAttr(*row) : IntegerAttr();
      return PrefixMaskOp::create(b, loc, maskType, pi, choicesAttr, modeAttr, rowAttr);
    };
    Value expected = ExpectedSizeOp::create(b, loc, hetero ? tensor({rows}) : tensor({}), pi,
                                            choicesAttr, expectationAttr);
    switch (axis.kind) {
    case AxisKind::Hidden:
      expHidden = expected;
      break;
    case AxisKind::FFN:
      expFfn = expected;
      break;
    case AxisKind::AttnHeads:
      expAttn = expected;
      break;
    case AxisKind::MambaHeads:
      expMambaHeads = expected;
      break;
    case AxisKind::MambaHeadDim:
      expMambaDim = expected;
      break;
    }
    assignAxisMasks(masks, axis, makeMask);
  }
  Value keep;
  if (el.max_dropped_layers() > 0) {
    Value pi = route("depth", {el.max_dropped_layers() + 1}, /*stream=*/axes.size());
    anchors.push_back(pi);
    keep = LayerKeepOp::create(b, loc, tensor({numLayers}), pi, b.getDenseI64ArrayAttr(order),
                               modeAttr);
    masks.keep = keep;
    if (mode != MaskMode::Soft)
      keep = LayerKeepOp::create(b, loc, tensor({numLayers}), pi, b.getDenseI64ArrayAttr(order),
                                 expectationAttr);
  } else {
    keep = scalarConstant(b, 1.0, {numLayers});
  }

  Value logits = buildBody(b, func, tokens, masks);

  // Losses (METHOD.md §6).
  const pb::Training &tr = spec.training();
  const pb::Distillation &dist = tr.distillation();
  double temperature = dist.has_temperature() ? dist.temperature() : 1.0;
  Value ce = CrossEntropyOp::create(b, loc, tensor({}), logits, targets);
  Value kd =
      KLDistillOp::create(b, loc, tensor({}), logits, teacher, b.getF64FloatAttr(temperature));

  pb::FixedSizes fixed = pb::fixedSizes(spec);
  double fullParams = pb::countParams(fixed, pb::parentSizes(spec)).total();
  Value paramCount = ParamCountOp::create(
      b, loc, tensor({}), expHidden, expFfn, expAttn, expMambaHeads, expMambaDim, keep,
      b.getStringAttr(arch.hybrid_override_pattern()), b.getI64IntegerAttr(fixed.mambaGroups),
      b.getI64IntegerAttr(fixed.ssmStateSize), b.getI64IntegerAttr(fixed.convKernel),
      b.getI64IntegerAttr(fixed.numKeyValueHeads), b.getI64IntegerAttr(fixed.attnHeadDim),
      b.getI64IntegerAttr(fixed.vocabSize), b.getBoolAttr(fixed.tiedEmbeddings));
  SmallVector<double> fractions;
  for (const pb::Budget &budgetSpec : el.budgets())
    fractions.push_back(budgetSpec.fraction());
  const pb::ResourceLoss &rl = tr.resource_loss();
  Value router = ResourceLossOp::create(
      b, loc, tensor({}), paramCount, budget, anchors, b.getDenseF64ArrayAttr(fractions),
      b.getF64FloatAttr(fullParams), b.getF64FloatAttr(rl.has_dead_zone() ? rl.dead_zone() : 0.05),
      b.getF64FloatAttr(rl.has_full_anchor_weight() ? rl.full_anchor_weight() : 10.0));

  // L = L_KD + lambda L_router (+ alpha L_CE with a trainable teacher).
  double lambda = rl.has_weight() ? rl.weight() : 1.0;
  Value loss = arith::AddFOp::create(
      b, loc, kd, arith::MulFOp::create(b, loc, scalarConstant(b, lambda), router));
  if (dist.trainable_teacher()) {
    double alpha = dist.has_ce_weight() ? dist.ce_weight() : 1.0;
    loss = arith::AddFOp::create(b, loc, loss,
                                 arith::MulFOp::create(b, loc, scalarConstant(b, alpha), ce));
  }
  func::ReturnOp::create(b, loc, ValueRange{logits, loss, kd, ce, router});
  func->setAttr("elastic.result_names",
                b.getStrArrayAttr({"logits", "loss", "kd_loss", "ce_loss", "router_loss"}));
  SmallVector<StringRef> budgetNames;
  for (const pb::Budget &budgetSpec : el.budgets())
    budgetNames.push_back(budgetSpec.name());
  func->setAttr("elastic.budgets", b.getStrArrayAttr(budgetNames));
  func->setAttr("elastic.depth_order", b.getDenseI64ArrayAttr(order));
  return llvm::Error::success();
}

void Importer::declareDecodeState(Signature &sig) {
  pb::ModelSizes<double> sizes = pb::parentSizes(spec);
  int64_t gn = arch.n_groups() * arch.ssm_state_size();
  int64_t kvWidth = arch.num_key_value_heads() * arch.head_dim();
  int64_t dyn = ShapedType::kDynamic;
  for (auto [i, kind] : llvm::enumerate(layers)) {
    int64_t layer = static_cast<int64_t>(i);
    int64_t h = int64_t(sizes.layers[i].mambaHeads), p = int64_t(sizes.layers[i].mambaHeadDim);
    auto name = [&](StringRef what) { return llvm::formatv("layers.{0}.{1}", layer, what).str(); };
    switch (kind) {
    case pb::LayerKind::Mamba:
      sig.add(tensor({dyn, arch.conv_kernel() - 1, h * p + 2 * gn}), "elastic.state", name("conv"),
              builder);
      sig.add(tensor({dyn, h, p, arch.ssm_state_size()}), "elastic.state", name("ssm"), builder);
      break;
    case pb::LayerKind::Attention:
      sig.add(tensor({dyn, options.decodeContext, kvWidth}), "elastic.state", name("k"), builder);
      sig.add(tensor({dyn, options.decodeContext, kvWidth}), "elastic.state", name("v"), builder);
      break;
    case pb::LayerKind::MLP:
      break;
    }
  }
}

llvm::Error Importer::buildDecodeStep(ModuleOp module) {
  Signature sig;
  sig.add(RankedTensorType::get({ShapedType::kDynamic, ShapedType::kDynamic}, builder.getI32Type()),
          "elastic.input", "tokens", builder);
  sig.add(RankedTensorType::get({}, builder.getI64Type()), "elastic.input", "position", builder);
  // Many-in-one serving: the active sizes are run-time inputs, one-hot over each axis' choices
  // (a router's argmax choice, METHOD.md §8), so one program serves every budget. The masks
  // they give are hard prefix masks, which the kernels run prefix-dense.
  const pb::Elastic *el = spec.has_elastic() ? &spec.elastic() : nullptr;
  SmallVector<unsigned> choiceArgs;
  for (const AxisInfo &axis : axes) {
    int64_t choices = axis.choices->choices_size();
    SmallVector<int64_t> shape{choices};
    if (axis.choices->heterogeneous())
      shape.insert(shape.begin(), layersOfKind(layers, axis.layerKind));
    choiceArgs.push_back(
        sig.add(tensor(shape), "elastic.input", ("choice." + StringRef(axis.name)).str(), builder));
  }
  bool elasticDepth = el && el->max_dropped_layers() > 0;
  if (elasticDepth)
    choiceArgs.push_back(
        sig.add(tensor({el->max_dropped_layers() + 1}), "elastic.input", "choice.depth", builder));
  unsigned firstParam = sig.types.size();
  declareModelParams(sig);
  unsigned firstState = sig.types.size();
  declareDecodeState(sig);

  Type results[] = {activation(arch.vocab_size())};
  func::FuncOp func = createFunc(module, "decode_step", sig, results, firstParam);
  OpBuilder b = OpBuilder::atBlockEnd(&func.front());
  Masks masks(layers.size());
  for (auto [axis, arg] : llvm::zip(axes, choiceArgs)) {
    SmallVector<int64_t> ks(axis.choices->choices().begin(), axis.choices->choices().end());
    auto maskType = MaskType::get(b.getContext(), axis.kind, axis.size, axis.groups);
    auto hard = MaskModeAttr::get(b.getContext(), MaskMode::Hard);
    Value pi = func.getArgument(arg);
    assignAxisMasks(masks, axis, [&](std::optional<int64_t> row) -> Value {
      IntegerAttr rowAttr = row ? b.getI64IntegerAttr(*row) : IntegerAttr();
      return PrefixMaskOp::create(b, loc, maskType, pi, b.getDenseI64ArrayAttr(ks), hard, rowAttr);
    });
  }
  if (elasticDepth) {
    auto order = depthOrder();
    if (!order)
      return order.takeError();
    masks.keep = LayerKeepOp::create(
        b, loc, tensor({static_cast<int64_t>(layers.size())}), func.getArgument(choiceArgs.back()),
        b.getDenseI64ArrayAttr(*order), MaskModeAttr::get(b.getContext(), MaskMode::Hard));
  }
  DecodeState state;
  state.position = func.getArgument(1);
  state.layers.resize(layers.size());
  unsigned next = firstState;
  for (auto [i, kind] : llvm::enumerate(layers)) {
    if (kind == pb::LayerKind::MLP)
      continue;
    state.layers[i] = {func.getArgument(next), func.getArgument(next + 1)};
    next += 2;
  }
  Value logits = buildBody(b, func, func.getArgument(0), masks, &state);
  func::ReturnOp::create(b, loc, logits);
  func->setAttr("elastic.result_names", b.getStrArrayAttr({"logits"}));
  return llvm::Error::success();
}

llvm::Expected<OwningOpRef<ModuleOp>> Importer::run() {
  auto parsed = pb::parsePattern(arch.hybrid_override_pattern());
  if (!parsed)
    return parsed.takeError();
  layers = std::move(*parsed);

  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  (*module)->setAttr("elastic.spec", builder.getStringAttr(spec.name()));
  if (spec.has_elastic()) {
    const pb::Elastic &el = spec.elastic();
    AxisInfo candidates[] = {
        {"hidden_size", AxisKind::Hidden, pb::LayerKind::MLP, &el.hidden_size(), arch.hidden_size(),
         1},
        {"intermediate_size", AxisKind::FFN, pb::LayerKind::MLP, &el.intermediate_size(),
         arch.intermediate_size(), 1},
        {"num_attention_heads", AxisKind::AttnHeads, pb::LayerKind::Attention,
         &el.num_attention_heads(), arch.num_attention_heads(), arch.num_key_value_heads()},
        {"mamba_num_heads", AxisKind::MambaHeads, pb::LayerKind::Mamba, &el.mamba_num_heads(),
         arch.mamba_num_heads(), arch.n_groups()},
        {"mamba_head_dim", AxisKind::MambaHeadDim, pb::LayerKind::Mamba, &el.mamba_head_dim(),
         arch.mamba_head_dim(), 1},
    };
    // Only axes with choices are elastic; router streams are numbered in this order.
    for (AxisInfo &axis : candidates) {
      if (axis.choices->choices_size() == 0)
        continue;
      axis.stream = axes.size();
      axes.push_back(axis);
    }
  }
  if (options.decodeContext > 0) {
    if (llvm::Error err = buildDecodeStep(*module))
      return err;
  } else if (!spec.has_elastic()) {
    buildDense(*module);
  } else {
    buildParent(*module);
    if (llvm::Error err = buildElastic(*module))
      return err;
  }
  if (failed(verify(*module)))
    return llvm::createStringError("internal error: the imported IR of '%s' does not verify",
                                   spec.name().c_str());
  return module;
}

} // namespace

llvm::Expected<OwningOpRef<ModuleOp>>
nestor::importSpec(MLIRContext &context, const pb::ModelSpec &spec, const ImportOptions &options) {
  loadImportDialects(context);
  return Importer(context, spec, options).run();
}
