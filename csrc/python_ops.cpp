// fastzoo._C.ops: each operator as a plain Python function that calls it through the C++ dispatcher (a typed
// handle, found once at import). The same kernels, autograd, tracing and dispatch modes as
// torch.ops.fastzoo.<op>, without torch.ops' path from Python (the arguments parsed against the schema into a
// boxed stack): at batch 1, interleaved with eager calls, dwconv_bn_act on 240x14x14 k5 took 20.3 us this way
// against 24.5 through torch.ops. fastzoo.ops calls these outside torch.compile.
#include <torch/extension.h>

#include <string>

namespace fastzoo {
namespace {

using T = const at::Tensor&;
using OptT = const std::optional<at::Tensor>&;
using Str = c10::string_view;

template <typename Sig>
c10::TypedOperatorHandle<Sig> handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

}  // namespace

void bind_ops(py::module& parent) {
  py::module m = parent.def_submodule(
      "ops", "The fastzoo operators through the C++ dispatcher, positional arguments as in their schemas.");
  using NoGil = py::call_guard<py::gil_scoped_release>;
  m.def("dwconv_bn_act",
        [op = handle<at::Tensor(T, T, T, T, int64_t, int64_t, Str)>("fastzoo::dwconv_bn_act")](
            T x, T weight, T scale, T shift, int64_t stride, int64_t padding, const std::string& act) {
          return op.call(x, weight, scale, shift, stride, padding, act);
        },
        NoGil());
  m.def("pwconv_bn_act",
        [op = handle<at::Tensor(T, T, T, T, Str, OptT)>("fastzoo::pwconv_bn_act")](
            T x, T weight, T scale, T shift, const std::string& act, OptT residual) {
          return op.call(x, weight, scale, shift, act, residual);
        },
        NoGil());
  m.def("squeeze_excite",
        [op = handle<at::Tensor(T, T, T, T, T, Str, Str)>("fastzoo::squeeze_excite")](
            T x, T w1, T b1, T w2, T b2, const std::string& act, const std::string& gate) {
          return op.call(x, w1, b1, w2, b2, act, gate);
        },
        NoGil());
  m.def("channel_shuffle",
        [op = handle<at::Tensor(T, int64_t)>("fastzoo::channel_shuffle")](T x, int64_t groups) {
          return op.call(x, groups);
        },
        NoGil());
  m.def("mbconv",
        [op = handle<at::Tensor(T, OptT, OptT, OptT, T, T, T, OptT, OptT, OptT, OptT, T, T, T, int64_t, Str, Str, Str,
                                bool)>("fastzoo::mbconv")](
            T x, OptT expand_weight, OptT expand_scale, OptT expand_shift, T dw_weight, T dw_scale, T dw_shift,
            OptT se_w1, OptT se_b1, OptT se_w2, OptT se_b2, T project_weight, T project_scale, T project_shift,
            int64_t stride, const std::string& act, const std::string& se_act, const std::string& se_gate,
            bool residual) {
          return op.call(x, expand_weight, expand_scale, expand_shift, dw_weight, dw_scale, dw_shift, se_w1, se_b1,
                         se_w2, se_b2, project_weight, project_scale, project_shift, stride, act, se_act, se_gate,
                         residual);
        },
        NoGil());
  m.def("fused_mbconv",
        [op = handle<at::Tensor(T, T, T, T, OptT, OptT, OptT, int64_t, Str, bool)>("fastzoo::fused_mbconv")](
            T x, T conv_weight, T conv_scale, T conv_shift, OptT project_weight, OptT project_scale,
            OptT project_shift, int64_t stride, const std::string& act, bool residual) {
          return op.call(x, conv_weight, conv_scale, conv_shift, project_weight, project_scale, project_shift, stride,
                         act, residual);
        },
        NoGil());
}

}  // namespace fastzoo
