// libtorch's profiler (Kineto) for trm, which is no Python process: torch.profiler cannot reach
// it. Two C functions: start profiling (CPU operators, and CUDA kernels when CUDA is present),
// and stop, writing one line per event (activity, device type, duration in ns, name) to a file
// that src/backend/torch_profiler.rs summarises. Built by build.rs with the `libtorch` feature.
#include <torch/csrc/autograd/profiler_kineto.h>
#include <ATen/Context.h>

#include "torch_shim.h"

#include <fstream>
#include <set>
#include <string>

namespace {
using torch::profiler::impl::ActivityType;
using trm_shim::guarded;
using trm_shim::set_error;
}  // namespace

extern "C" int trm_profiler_start(int with_cuda, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    std::set<ActivityType> activities{ActivityType::CPU};
    if (with_cuda != 0) activities.insert(ActivityType::CUDA);
    torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO);
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
    return 0;
  });
}

extern "C" int trm_profiler_stop(const char* events_path, char* err, size_t err_len) {
  return guarded(err, err_len, [&] {
    auto result = torch::autograd::profiler::disableProfiler();
    std::ofstream out(events_path);
    if (!out) {
      set_error(err, err_len, "cannot write the events file");
      return 1;
    }
    for (const auto& e : result->events()) {
      std::string name = e.name();
      for (auto& c : name) {
        if (c == '\t' || c == '\n') c = ' ';
      }
      out << static_cast<int>(e.activityType()) << '\t' << static_cast<int>(e.deviceType()) << '\t'
          << e.durationNs() << '\t' << name << '\n';
    }
    if (!out.good()) {
      set_error(err, err_len, "writing the events file failed");
      return 1;
    }
    return 0;
  });
}
