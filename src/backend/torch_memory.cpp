// The CUDA caching allocator's own counters (what `torch.cuda.max_memory_allocated` and
// `torch.cuda.max_memory_reserved` read), through c10's device-generic allocator interface, so
// that no CUDA header is needed to build it. Built by build.rs with the `libtorch` feature.
#include <c10/core/CachingDeviceAllocator.h>

#include "torch_shim.h"

#include <cstdint>

namespace {
c10::DeviceAllocator* cuda_allocator() { return c10::getDeviceAllocator(c10::DeviceType::CUDA); }
constexpr size_t kAll = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
}  // namespace

// GPU `device`'s bytes allocated to tensors and reserved by the allocator: now and at the peak.
// `out` receives [allocated, peak allocated, reserved, peak reserved].
extern "C" int trm_cuda_memory(int device, int64_t* out, char* err, size_t err_len) {
  return trm_shim::guarded(err, err_len, [&] {
    auto s = cuda_allocator()->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    out[0] = s.allocated_bytes[kAll].current;
    out[1] = s.allocated_bytes[kAll].peak;
    out[2] = s.reserved_bytes[kAll].current;
    out[3] = s.reserved_bytes[kAll].peak;
    return 0;
  });
}
