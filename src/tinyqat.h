// Umbrella header: everything a user program needs.
#pragma once

#include "autograd/functions.h"
#include "nn/activation.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "nn/module.h"
#include "nn/sequential.h"
#include "nn/sgd.h"
#include "tensor/ops.h"
#include "tensor/random.h"
#include "tensor/tensor.h"
#include "quant/quant.h"
#include "io/data_loader.h"
#include "io/dataset.h"
#include "io/model_file.h"
