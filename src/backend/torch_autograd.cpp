// torch's autograd applied to a given output gradient, which tch's `run_backward` cannot do (it
// seeds every output with ones). trm's fused ops on libtorch (the fused attention, the fused
// block) keep a small torch graph from their forward; their backward hands that graph burn's
// output gradient here. Built by build.rs with the `libtorch` feature.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>

#include "torch_shim.h"

#include <vector>

// The gradients of `inputs` (n leaves of the graph that made `out`, each requiring grad) for
// the output gradient `dout`, written to `grads` as new tensors that the caller owns (tch frees
// them with delete). The graph's saved tensors are freed as the backward runs through them.
//
// Two guards keep this as safe as the `sum(out * dout)` form it replaced, whose gradient was a
// fresh tensor laid out as `out`:
// - `dout` is handed to torch in `out`'s layout when its strides differ (cuDNN's attention
//   backward has had bugs with a gradient laid out unlike the output, pytorch#134001);
// - a gradient that aliases `dout` (an identity or view path from a leaf to the output) is
//   copied: burn believes it owns each gradient it is handed and may write into it in place.
extern "C" int trm_graph_grad(const at::Tensor* out, const at::Tensor* dout, const at::Tensor* const* inputs, size_t n,
                              at::Tensor** grads, char* err, size_t err_len) {
  return trm_shim::guarded(err, err_len, [&] {
    std::vector<at::Tensor> leaves;
    leaves.reserve(n);
    for (size_t i = 0; i < n; ++i) leaves.push_back(*inputs[i]);
    at::Tensor seed = *dout;
    if (seed.strides() != out->strides()) seed = at::empty_like(*out).copy_(seed);
    auto g = torch::autograd::grad({*out}, leaves, {seed}, /*retain_graph=*/false, /*create_graph=*/false,
                                   /*allow_unused=*/false);
    if (g.size() != n) {
      trm_shim::set_error(err, err_len, "torch returned a different number of gradients than inputs");
      return 1;
    }
    for (size_t i = 0; i < n; ++i) {
      if (g[i].is_alias_of(*dout) || g[i].is_alias_of(seed)) g[i] = g[i].clone();
      grads[i] = new at::Tensor(std::move(g[i]));
    }
    return 0;
  });
}
