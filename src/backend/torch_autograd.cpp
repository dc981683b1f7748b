// torch's autograd applied to a given output gradient, which tch's `run_backward` cannot do (it
// seeds every output with ones). trm's fused ops on libtorch (the fused attention, the fused
// block) keep a small torch graph from their forward; their backward hands that graph burn's
// output gradient here. Built by build.rs with the `libtorch` feature.
#include <torch/csrc/autograd/autograd.h>

#include "torch_shim.h"

#include <vector>

// The gradients of `inputs` (n leaves of the graph that made `out`, each requiring grad) for
// the output gradient `dout`, written to `grads` as new tensors that the caller owns (tch frees
// them with delete). The graph's saved tensors are freed as the backward runs through them.
extern "C" int trm_graph_grad(const at::Tensor* out, const at::Tensor* dout, const at::Tensor* const* inputs, size_t n,
                              at::Tensor** grads, char* err, size_t err_len) {
  return trm_shim::guarded(err, err_len, [&] {
    std::vector<at::Tensor> leaves;
    leaves.reserve(n);
    for (size_t i = 0; i < n; ++i) leaves.push_back(*inputs[i]);
    auto g = torch::autograd::grad({*out}, leaves, {*dout}, /*retain_graph=*/false, /*create_graph=*/false,
                                   /*allow_unused=*/false);
    if (g.size() != n) {
      trm_shim::set_error(err, err_len, "torch returned a different number of gradients than inputs");
      return 1;
    }
    for (size_t i = 0; i < n; ++i) grads[i] = new at::Tensor(std::move(g[i]));
    return 0;
  });
}
