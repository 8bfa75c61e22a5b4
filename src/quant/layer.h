// The layer interface (docs/quantization.md §6.2): what the passes, the
// comparison tools, the report and the model files ask of a quantizable
// layer, so that none of them needs to know which layer kinds exist.
//
//   QuantLayer       every prepared and every quantized layer: its fused
//                    activation, its qparams by role, its weight as it
//                    computes with it (for SQNR against the float weight).
//   PreparedLayer    what prepare / prepare_qat put in a slot (QATLinear,
//                    ObservedLinear): its observer or fake quant per role,
//                    and how convert turns it into its int8 layer.
//   QuantizedLayer   what convert / quantize_dynamic put in a slot
//                    (QuantizedLinear, DynamicQuantizedLinear).
//
// A layer kind is a module class that derives from nn::Module (usually
// through its float layer) and from PreparedLayer or QuantizedLayer; the
// passes find it by one dynamic_cast to the interface, and the mapping tables
// (quant/passes.h) say which class replaces which.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "nn/module.h"
#include "quant/observer.h"

namespace tq::quant {

// The activation fused into a layer's output, between its sum and its
// output quantizer (docs/ptq.md §4). In float and fake quant it is the
// function itself; in an int8 layer it is only the clamp of the output range
// (fused_output_range).
enum class FusedActivation : uint8_t { none, relu, relu6 };

// "", "ReLU", "ReLU6": the suffix of fused type names (QuantizedLinearReLU6).
const char* fused_activation_suffix(FusedActivation a);
// The same as a word for messages: "none", "relu", "relu6".
const char* fused_activation_name(FusedActivation a);
// Parses fused_activation_name's words; throws std::invalid_argument naming the word.
FusedActivation parse_fused_activation(const std::string& name);

// Float / fake quant: x, relu(x), or min(max(x, 0), 6) (differentiable).
Tensor apply_fused_activation(FusedActivation a, const Tensor& x);

// Int8 (integer-only run time): the clamp [y_min, y_max] of an output with
// per-tensor qparams `out` (docs/quantization.md eq. 14). relu clamps below
// at z_y (real 0); relu6 also above at z_y + round(6 / s_y) (real 6), each
// kept inside [quant_min, quant_max].
struct OutputRange {
  int32_t min = 0, max = 255;
};
OutputRange fused_output_range(FusedActivation a, const QParams& out);

// Where a layer quantizes: its input, its weight, its output.
enum class QuantRole { input, weight, output };
const char* quant_role_name(QuantRole role);  // "input", "weight", "output"

class QuantLayer {
 public:
  virtual ~QuantLayer() = default;

  // The activation fused into the output.
  virtual FusedActivation activation() const = 0;
  // The qparams at `role` as this layer uses them (int8 layers) or would
  // convert with them (prepared layers); nullopt where it has none, or has
  // seen no data there yet.
  virtual std::optional<QParams> qparams(QuantRole role) const = 0;
  // The weight as this layer computes with it, to compare with the float
  // weight (SQNR): an i8 quantized tensor, or for a prepared layer the
  // fake-quantized float weight. Changes no observer. Undefined when the
  // layer has no weight.
  virtual Tensor effective_weight() = 0;
};

class PreparedLayer : public QuantLayer {
 public:
  // The observer or fake quant at `role`, or nullptr where the layer has none.
  virtual QParamsSource* quantizer(QuantRole role) const = 0;
  // The float weight that the weight quantizer sees (undefined if none).
  virtual Tensor float_weight() const = 0;
  // convert: the int8 layer, built from exactly the qparams the last
  // forward used. `path` names the layer in its messages.
  virtual std::shared_ptr<nn::Module> to_quantized(const std::string& path) const = 0;

  // From the quantizers: the qparams at every role whose quantizer has seen data.
  std::optional<QParams> qparams(QuantRole role) const override;
  // The weight quantizer applied to float_weight() in eval mode.
  Tensor effective_weight() override;
  // Throws, naming `path`, when a range convert needs gives no valid qparams:
  // the weight and output always; the input only if a float input came.
  virtual void check_convertible(const std::string& path) const;
};

class QuantizedLayer : public QuantLayer {
 public:
  // Threads of the int8 kernel: 0 = the library default, 1 = the calling
  // thread only. Results do not depend on it.
  int threads = 0;
};

// The interface of `m`, or nullptr when `m` is not such a layer.
inline QuantLayer* as_quant_layer(nn::Module* m) { return dynamic_cast<QuantLayer*>(m); }
inline PreparedLayer* as_prepared_layer(nn::Module* m) { return dynamic_cast<PreparedLayer*>(m); }
inline QuantizedLayer* as_quantized_layer(nn::Module* m) { return dynamic_cast<QuantizedLayer*>(m); }

}  // namespace tq::quant
