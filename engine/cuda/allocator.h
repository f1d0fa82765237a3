// A caching device allocator (PyTorch's caching allocator reduced to one stream). Freed blocks
// go to a free list of their size class and are handed out again: cudaMalloc runs only when that
// list is empty, and cudaFree only when cudaMalloc fails (every cached block is then released and
// the allocation retried). So after the first training step has sized everything, a step makes
// no cudaMalloc and no cudaFree (each of which would synchronise the device).
//
// All work runs on the backend's one stream, so a block freed by the host while queued kernels
// still use it may be handed out at once: its next user is queued after those kernels.
#pragma once
#include <cstddef>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/cuda/cuda_backend.h"

namespace equivae::gpu {

// The blocks of one CUDA graph (PyTorch's private graph pools): what a step allocates while it is
// captured comes from here, and returns here when freed, so no one else is handed a block that
// the graph's replays write.
struct AllocatorPool {
  std::unordered_map<size_t, std::vector<void*>> free;  // size class -> this pool's free blocks
  std::vector<void*> blocks;                            // every block it owns
};

class CachingAllocator {
 public:
  void* allocate(size_t bytes);
  void deallocate(void* ptr);
  void release_cached();  // cudaFree every block on a free list
  CudaMemoryStats stats() const;
  // Until called again with nullptr, allocations come from `pool`: its free blocks, else blocks
  // of the shared cache (moved into it), else cudaMalloc.
  void use_pool(AllocatorPool* pool);
  // The pool's blocks back to the shared cache; a block still in use goes there when freed.
  void release_pool(AllocatorPool& pool);

  // Size classes: four per power of two (at most 25 % slack), at least 512 bytes.
  static size_t size_class(size_t bytes);

 private:
  void release_locked();
  mutable std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // size class -> cached blocks
  std::unordered_map<void*, size_t> in_use_;             // block -> its size class
  std::unordered_map<void*, AllocatorPool*> owner_;      // blocks of graph pools
  AllocatorPool* pool_ = nullptr;
  CudaMemoryStats stats_;
};

// The process-wide allocator behind CudaBackend::allocate (and kernel scratch).
CachingAllocator& device_allocator();

// Kernel scratch for one backend call: back to the cache when the call returns (stream order
// keeps it valid for the kernels already queued).
class DeviceScratch {
 public:
  explicit DeviceScratch(size_t bytes) : ptr_(bytes ? device_allocator().allocate(bytes) : nullptr) {}
  ~DeviceScratch() {
    if (ptr_) device_allocator().deallocate(ptr_);
  }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  void* get() const { return ptr_; }

 private:
  void* ptr_;
};

}  // namespace equivae::gpu
