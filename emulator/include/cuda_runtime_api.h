#pragma once
#include "cuda_runtime.h"  // the emulator has one header for the runtime API
