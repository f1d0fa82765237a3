// The data set kept on the device (issue 15): a batch gathered there by one kernel must be the
// host's gather bit for bit (it is a copy: any difference is a wrong row or a lost word), its
// indices arrive in one upload from pinned memory, and a data set larger than the GPU's free
// memory is refused with the figures.
#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <vector>

#include "engine/backend.h"
#include "engine/index_upload.h"
#include "engine/ops.h"
#include "train/device_images.h"
#include "tests/synthetic.h"

#ifdef EQUIVAE_CUDA_EMULATOR
#include <cuda_runtime.h>
#endif

using namespace equivae;
using Catch::Contains;

namespace {

// Random float32 bits, NaN payloads and signed zeros included: a copy keeps all of them.
Tensor random_bits(const Shape& shape, DType dtype, uint64_t seed) {
  Tensor t = Tensor::empty(shape, dtype);
  std::mt19937 rng{uint32_t(seed)};
  auto* words = static_cast<uint32_t*>(t.raw());
  for (int64_t i = 0; i < t.numel(); ++i) words[i] = rng();
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(Device::cpu), y = b.to(Device::cpu);
  return x.shape() == y.shape() && std::memcmp(x.raw(), y.raw(), x.bytes()) == 0;
}

}  // namespace

TEST_CASE("gather_rows on the GPU equals the host's gather bit for bit", "[gpu][gather]") {
  // Row sizes for the 4-byte path (1, 3, 105 words: odd), the 16-byte path (784 words: an MNIST
  // image; 4 words), and rows of a misaligned view (4 words at a 4-byte offset: the 4-byte path).
  const std::vector<std::vector<int32_t>> index_sets{
      {0}, {6}, {2, 2, 2, 0}, {6, 5, 4, 3, 2, 1, 0}, {3, 1, 3, 1, 6, 6}};
  int cases = 0;
  for (const Shape& shape : {Shape{7, 1}, Shape{7, 3}, Shape{7, 3, 5, 7}, Shape{7, 1, 28, 28}, Shape{7, 4}}) {
    for (DType dtype : {DType::f32, DType::i32}) {
      const Tensor host = random_bits(shape, dtype, uint64_t(shape_numel(shape)) + uint64_t(dtype));
      const Tensor device = host.to(Device::cuda);
      for (const std::vector<int32_t>& rows : index_sets) {
        INFO(host.describe() << ", " << rows.size() << " rows from " << rows[0]);
        const Tensor want = gather_rows(host, Tensor::from_indices(rows));
        const Tensor got = gather_rows(device, Tensor::from_indices(rows, Device::cuda));
        CHECK(got.device() == Device::cuda);
        CHECK(same_bits(got, want));
        // The host's gather is the row copy it says it is.
        for (size_t i = 0; i < rows.size(); ++i) {
          const size_t row_bytes = host.bytes() / size_t(shape[0]);
          CHECK(std::memcmp(static_cast<const char*>(want.raw()) + i * row_bytes,
                            static_cast<const char*>(host.raw()) + size_t(rows[i]) * row_bytes, row_bytes) == 0);
        }
        ++cases;
      }
    }
  }
  {  // rows of 16 bytes that start 4 bytes into an allocation
    const Tensor host = random_bits({29}, DType::f32, 5).rows(1, 29).reshape({7, 4});
    const Tensor device = random_bits({29}, DType::f32, 5).to(Device::cuda).rows(1, 29).reshape({7, 4});
    const std::vector<int32_t> rows{6, 0, 3};
    CHECK(same_bits(gather_rows(device, Tensor::from_indices(rows, Device::cuda)),
                    gather_rows(host, Tensor::from_indices(rows))));
    ++cases;
  }
  std::printf("gather_rows: %d shapes x index sets equal bit for bit\n", cases);

  // An index outside the rows is an error on both devices (on the GPU while value checks are on).
  const Tensor host = random_bits({5, 3}, DType::f32, 9);
  CHECK_THROWS_WITH(gather_rows(host, Tensor::from_indices({1, 5})), Contains("outside [0, 5)"));
  CHECK_THROWS_WITH(gather_rows(host.to(Device::cuda), Tensor::from_indices({-1, 2}, Device::cuda)),
                    Contains("outside [0, 5)"));
}

TEST_CASE("a data set's images on the GPU: batches gathered there equal the host's rows", "[gpu][gather]") {
  const data::Dataset d = testing::synthetic(37, 4, "syn/odd");
  const DeviceImages on_gpu(d, Device::cuda), on_cpu(d, Device::cpu);
  IndexUpload gpu_indices(Device::cuda), cpu_indices(Device::cpu);
  // More uploads than the ring of pinned buffers holds, growing: each must arrive intact.
  for (int step = 0; step < 11; ++step) {
    std::vector<int32_t> rows, offsets{0, 2}, empty;
    for (int i = 0; i <= step * 5; ++i) rows.push_back(int32_t((i * 7 + step) % d.n));
    const std::vector<Tensor> g = gpu_indices.upload({rows, empty, offsets}), c = cpu_indices.upload({rows, empty, offsets});
    REQUIRE(g.size() == 3);
    CHECK(g[0].to_vector() == c[0].to_vector());
    CHECK(g[1].numel() == 0);
    CHECK(g[2].to_vector() == std::vector<double>{0, 2});
    CHECK(same_bits(on_gpu.gather(g[0]), on_cpu.gather(c[0])));
  }
}

#ifdef EQUIVAE_CUDA_EMULATOR
TEST_CASE("a data set larger than the GPU's free memory is refused, with the figures", "[gpu][gather]") {
  const data::Dataset d = testing::synthetic(64, 4, "syn/large");  // 64 x 8 x 8 floats: 16 KiB
  const uint64_t saved = emu::device_memory_bytes();
  size_t free = 0, total = 0;
  REQUIRE(cudaMemGetInfo(&free, &total) == cudaSuccess);
  emu::device_memory_bytes() = total - free + 8192;  // 8 KiB free
  try {
    DeviceImages images(d, Device::cuda);
    FAIL("16 KiB of images fitted into 8 KiB");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK_THAT(what, Contains("--device cuda: the images of syn/large (64 x 1x8x8 float32) need 16384 bytes") &&
                         Contains("only 8192 bytes"));
  }
  emu::device_memory_bytes() = saved;
}
#endif
