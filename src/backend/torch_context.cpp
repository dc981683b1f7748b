// libtorch's process-wide switches that tch does not wrap: its deterministic mode (what
// `torch.use_deterministic_algorithms(True)` and `torch.backends.cudnn.deterministic = True`
// set in Python). Built by build.rs with the `libtorch` feature.
#include <ATen/Context.h>

#include "torch_shim.h"

// Turns torch's deterministic algorithms on or off (`on`: 1 or 0). On: every operation that has
// a deterministic implementation uses it (index_add, scatter_add and index_select's backward on
// CUDA, fused attention's backward with one key split), one without is an error instead of a
// silent difference, and cuDNN picks deterministic algorithms without benchmarking. cuBLAS also
// needs CUBLAS_WORKSPACE_CONFIG, which the caller sets before any CUDA work.
extern "C" int trm_torch_set_deterministic(int on, char* err, size_t err_len) {
  return trm_shim::guarded(err, err_len, [&] {
    auto& ctx = at::globalContext();
    ctx.setDeterministicAlgorithms(on != 0, /*warn_only=*/false);
    ctx.setDeterministicCuDNN(on != 0);
    if (on != 0) ctx.setBenchmarkCuDNN(false);
    return 0;
  });
}

// Whether torch's deterministic algorithms are on (1) or off (0).
extern "C" int trm_torch_deterministic() { return at::globalContext().deterministicAlgorithms() ? 1 : 0; }
