# The CUDA backend's sources: compiled by nvcc into equivae_engine (kernels/CMakeLists.txt) and by
# the C++ compiler into the emulator's engine (tests/gpu/emulator/CMakeLists.txt).
set(EQUIVAE_KERNEL_SOURCES
  allocator.cpp cuda_backend.cpp
  elementwise.cu linear.cu conv2d.cu segmented_mean.cu random.cu likelihood.cu kl.cu softmax.cu adam.cu)
list(TRANSFORM EQUIVAE_KERNEL_SOURCES PREPEND ${CMAKE_CURRENT_LIST_DIR}/)
