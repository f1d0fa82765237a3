#include "engine/cuda/allocator.h"

#include <cuda_runtime_api.h>

#include <bit>
#include <cstdio>
#include <new>

#include "kernels/check.h"

namespace equivae::gpu {

size_t CachingAllocator::size_class(size_t bytes) {
  if (bytes <= 512) return 512;
  const size_t step = std::bit_floor(bytes) / 4;  // 2^k, 1.25 2^k, 1.5 2^k, 1.75 2^k
  return (bytes + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t bytes) {
  const size_t size = size_class(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<void*>& cached = free_[size];
  void* ptr = nullptr;
  if (pool_ && !pool_->free[size].empty()) {
    ptr = pool_->free[size].back();
    pool_->free[size].pop_back();
  } else if (!cached.empty()) {
    ptr = cached.back();
    cached.pop_back();
  } else {
    cudaError_t err = cudaMalloc(&ptr, size);
    if (err == cudaErrorMemoryAllocation) {  // out of memory: give the cache back and retry once
      cudaGetLastError();
      release_locked();
      err = cudaMalloc(&ptr, size);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw std::runtime_error("cuda: cudaMalloc of " + std::to_string(size) +
                               " bytes failed: " + cudaGetErrorString(err) + " (" +
                               std::to_string(stats_.bytes_in_use) + " bytes in use)");
    }
    ++stats_.mallocs;
    stats_.bytes_reserved += size;
  }
  if (pool_ && !owner_.count(ptr)) {
    owner_.emplace(ptr, pool_);
    pool_->blocks.push_back(ptr);
  }
  in_use_.emplace(ptr, size);
  stats_.bytes_in_use += size;
  return ptr;
}

// Called from tensor destructors: must not throw.
void CachingAllocator::deallocate(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  const auto it = in_use_.find(ptr);
  if (it == in_use_.end()) {
    std::fprintf(stderr, "equivae: cuda: freeing %p, which the allocator never handed out\n", ptr);
    return;
  }
  const auto owner = owner_.find(ptr);
  (owner != owner_.end() ? owner->second->free : free_)[it->second].push_back(ptr);
  stats_.bytes_in_use -= it->second;
  in_use_.erase(it);
}

void CachingAllocator::use_pool(AllocatorPool* pool) {
  std::lock_guard<std::mutex> lock(mutex_);
  pool_ = pool;
}

void CachingAllocator::release_pool(AllocatorPool& pool) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [size, blocks] : pool.free)
    for (void* p : blocks) free_[size].push_back(p);
  for (void* p : pool.blocks) owner_.erase(p);  // blocks still in use return to the shared cache
  pool.free.clear();
  pool.blocks.clear();
  if (pool_ == &pool) pool_ = nullptr;
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_locked();
}

void CachingAllocator::release_locked() {
  for (auto& [size, blocks] : free_) {
    for (void* p : blocks) CUDA_CHECK(cudaFree(p));
    stats_.bytes_reserved -= size * blocks.size();
    blocks.clear();
  }
}

CudaMemoryStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

CachingAllocator& device_allocator() {
  static CachingAllocator* allocator = new CachingAllocator;  // never destroyed: see cuda_backend.h
  return *allocator;
}

}  // namespace equivae::gpu
