//===- SliceIndices.h - The index lists a slice keeps -------------*- C++ -*-===//
//
// Slicing keeps a prefix of every elastic axis: the first k channels, or the first k/g of each
// of g groups (Mamba heads per group, attention heads per KV group), expanded to the rows each
// kept unit owns. These helpers build those index lists; the elastic-slice pass (through each
// op's SliceOpInterface) and the host-side slicer (nestor/Slice.h) both use them.
//
//===----------------------------------------------------------------------===//
#ifndef NESTOR_SLICEINDICES_H
#define NESTOR_SLICEINDICES_H

#include <cstdint>
#include <initializer_list>
#include <numeric>
#include <vector>

namespace nestor::slice {

/// `from, from + 1, ..., from + n - 1`.
inline std::vector<int64_t> range(int64_t n, int64_t from = 0) {
  std::vector<int64_t> r(static_cast<size_t>(n));
  std::iota(r.begin(), r.end(), from);
  return r;
}

/// The lists one after the other.
inline std::vector<int64_t> concat(std::initializer_list<std::vector<int64_t>> parts) {
  std::vector<int64_t> r;
  for (const auto &p : parts)
    r.insert(r.end(), p.begin(), p.end());
  return r;
}

/// Every index plus `by`.
inline std::vector<int64_t> shifted(std::vector<int64_t> v, int64_t by) {
  for (int64_t &x : v)
    x += by;
  return v;
}

/// The first `kept` of every group of `perGroup` consecutive items, groups in order.
inline std::vector<int64_t> groupPrefixes(int64_t groups, int64_t perGroup, int64_t kept) {
  std::vector<int64_t> r;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t i = 0; i < kept; ++i)
      r.push_back(g * perGroup + i);
  return r;
}

/// Unit u of `units` expanded to its `width` consecutive rows `u * stride + [0, width)`.
inline std::vector<int64_t> expand(const std::vector<int64_t> &units, int64_t stride,
                                   int64_t width) {
  std::vector<int64_t> r;
  for (int64_t u : units)
    for (int64_t e = 0; e < width; ++e)
      r.push_back(u * stride + e);
  return r;
}

} // namespace nestor::slice

#endif // NESTOR_SLICEINDICES_H
