// The schemas of every fastzoo operator, defined once (kernels register per backend in
// cpu/ and cuda/), and the Python module fastzoo._C that loads them.
#include <torch/extension.h>
#include <torch/library.h>

#include "cpu/block_chain.h"

TORCH_LIBRARY(fastzoo, m) {
  m.def("dwconv_bn_act(Tensor x, Tensor weight, Tensor scale, Tensor shift, int stride=1, int padding=-1, "
        "str act=\"identity\") -> Tensor");
  m.def("pwconv_bn_act(Tensor x, Tensor weight, Tensor scale, Tensor shift, str act=\"identity\", "
        "Tensor? residual=None) -> Tensor");
  m.def("squeeze_excite(Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, str act=\"relu\", "
        "str gate=\"hardsigmoid\") -> Tensor");
  m.def("channel_shuffle(Tensor x, int groups) -> Tensor");
  m.def("mbconv(Tensor x, Tensor? expand_weight, Tensor? expand_scale, Tensor? expand_shift, "
        "Tensor dw_weight, Tensor dw_scale, Tensor dw_shift, "
        "Tensor? se_w1, Tensor? se_b1, Tensor? se_w2, Tensor? se_b2, "
        "Tensor project_weight, Tensor project_scale, Tensor project_shift, "
        "int stride=1, str act=\"relu\", str se_act=\"relu\", str se_gate=\"hardsigmoid\", "
        "bool residual=False) -> Tensor");
  m.def("fused_mbconv(Tensor x, Tensor conv_weight, Tensor conv_scale, Tensor conv_shift, "
        "Tensor? project_weight, Tensor? project_scale, Tensor? project_shift, "
        "int stride=1, str act=\"silu\", bool residual=False) -> Tensor");
}

namespace {
py::dict build_info() {
  py::dict d;
#ifdef FASTZOO_WITH_CUDA
  d["cuda"] = true;
  d["cuda_version"] = std::string(FASTZOO_CUDA_VERSION);
  d["cuda_archs"] = std::string(FASTZOO_CUDA_ARCHS);
#else
  d["cuda"] = false;
  d["cuda_version"] = py::none();
  d["cuda_archs"] = std::string();
#endif
  d["torch_version"] = std::string(FASTZOO_TORCH_VERSION);
  return d;
}

// (data_ptr, _version) of every tensor (None skipped; inference tensors, which have no version counter,
// as version 0), packed in one bytes object: the key of fastzoo.layers.bn_fold.FoldCache. The same loop in
// Python cost ~85 us per mobilenetv3_small forward at batch 1 (about 200 tensors), several times that when
// its objects were out of cache between other work.
void push_key(std::vector<int64_t>& key, const at::Tensor& t) {
  if (!t.defined()) return;
  key.push_back(reinterpret_cast<int64_t>(t.data_ptr()));
  key.push_back(t.is_inference() ? 0 : static_cast<int64_t>(t._version()));
}

py::bytes version_key(const std::vector<std::optional<at::Tensor>>& tensors) {
  std::vector<int64_t> key;
  key.reserve(2 * tensors.size());
  for (const auto& t : tensors)
    if (t.has_value()) push_key(key, *t);
  return py::bytes(reinterpret_cast<const char*>(key.data()), key.size() * sizeof(int64_t));
}

// The version_key of the tensors that (dict, name) slots hold (a module's _parameters or _buffers and a
// name), taken when made and compared by unchanged(): BlockSequence's check before each one-call forward
// that no parameter or buffer it was built from has been replaced, reassigned or changed in place. The
// same lookups and key from Python took ~50 us per efficientnet_b0 forward at batch 1 (358 slots), ~260 us
// with their objects out of cache after the forward's kernels.
class SlotVersions {
 public:
  explicit SlotVersions(std::vector<std::pair<py::dict, py::str>> slots) : slots_(std::move(slots)) {
    TORCH_CHECK(read(key_), "SlotVersions: every slot must hold a tensor or None");
  }
  bool unchanged() const {
    std::vector<int64_t> now;
    return read(now) && now == key_;
  }

 private:
  // false where a slot is gone or holds something other than a tensor or None
  bool read(std::vector<int64_t>& key) const {
    key.reserve(2 * slots_.size());
    for (const auto& [d, name] : slots_) {
      PyObject* v = PyDict_GetItemWithError(d.ptr(), name.ptr());  // borrowed
      if (v == nullptr) {
        PyErr_Clear();
        return false;
      }
      if (v == Py_None) continue;
      if (!THPVariable_Check(v)) return false;
      push_key(key, THPVariable_Unpack(v));
    }
    return true;
  }
  std::vector<std::pair<py::dict, py::str>> slots_;
  std::vector<int64_t> key_;
};
}  // namespace

namespace fastzoo {
void set_cpu_fastpath(bool enabled);
bool cpu_fastpath();
void set_simulated_stealing(bool enabled);
namespace cpu {
at::Tensor rgb_to_channels_last(const at::Tensor& x);
}
}  // namespace fastzoo

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastzoo fused operators (registered as torch.ops.fastzoo.*)";
  m.def("build_info", &build_info, "What this extension was built with.");
  m.def("set_cpu_fastpath", &fastzoo::set_cpu_fastpath,
        "Testing aid: False routes CPU kernels through the shared __host__ __device__ math.");
  m.def("cpu_fastpath", &fastzoo::cpu_fastpath);
  m.def("set_simulated_stealing", &fastzoo::set_simulated_stealing,
        "Testing aid: one thread runs parallel tasks in the order stealing gives (half forwards, half backwards).");
  m.def("version_key", &version_key, "(data_ptr, _version) of each tensor, packed: FoldCache's key.");
  py::class_<SlotVersions>(m, "SlotVersions",
                           "version_key of the tensors in (dict, name) slots, taken now; unchanged() compares.")
      .def(py::init<std::vector<std::pair<py::dict, py::str>>>())
      .def("unchanged", &SlotVersions::unchanged);
  m.def("rgb_to_channels_last", &fastzoo::cpu::rgb_to_channels_last, py::call_guard<py::gil_scoped_release>(),
        "x.contiguous(memory_format=torch.channels_last) for a contiguous (N, 3, H, W) float32 CPU tensor.");
  py::class_<fastzoo::cpu::BlockChain>(m, "BlockChain",
                                       "CPU fused ops run back to back in one call (fastzoo.layers.BlockSequence).")
      .def(py::init<>())
      .def("add", &fastzoo::cpu::BlockChain::add)
      .def("run", &fastzoo::cpu::BlockChain::run, py::call_guard<py::gil_scoped_release>())
      .def("__len__", &fastzoo::cpu::BlockChain::size);
}
