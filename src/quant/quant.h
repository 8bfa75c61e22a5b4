// Umbrella header for quantization.
#pragma once

#include "quant/compare.h"
#include "quant/dynamic_linear.h"
#include "quant/fake_quantize.h"
#include "quant/fused.h"
#include "quant/histogram_observer.h"
#include "quant/layer.h"
#include "quant/learnable_fake_quantize.h"
#include "quant/observer.h"
#include "quant/passes.h"
#include "quant/qat_schedule.h"
#include "quant/qat_linear.h"
#include "quant/qconfig.h"
#include "quant/qparams.h"
#include "quant/quantize.h"
#include "quant/quantized_linear.h"
