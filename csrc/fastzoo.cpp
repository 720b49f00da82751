// The schemas of every fastzoo operator, defined once (kernels register per backend in
// cpu/ and cuda/), and the Python module fastzoo._C that loads them.
#include <torch/extension.h>
#include <torch/library.h>

#include "cpu/block_chain.h"
#include "cpu/huge_pages.h"

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

}  // namespace

namespace fastzoo {
void set_cpu_fastpath(bool enabled);
bool cpu_fastpath();
void set_simulated_stealing(bool enabled);
void bind_chain_guard(py::module& m);
void bind_ops(py::module& m);
bool cpu_has_avx2();
namespace cpu {
at::Tensor rgb_to_channels_last(const at::Tensor& x);
bool cpu_has_avx512f();
bool cpu_has_avx512bf16();
bool cpu_has_amx_bf16();
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
  m.def("cpu_kernels", [] {
    py::dict d;
    d["avx2"] = fastzoo::cpu_has_avx2();
    d["avx512f"] = fastzoo::cpu::cpu_has_avx512f();
    d["avx512bf16"] = fastzoo::cpu::cpu_has_avx512bf16();
    d["amx_bf16"] = fastzoo::cpu::cpu_has_amx_bf16();
    return d;
  }, "Which vector paths the CPU kernels take on this CPU (AVX-512 off with FASTZOO_NO_AVX512=1, AMX with "
     "FASTZOO_NO_AMX=1): avx2, avx512f, avx512bf16 (the bf16 GEMMs of pwconv_bn_act and the cache-tiled mbconv) "
     "and amx_bf16 (those GEMMs' blocks of 16 rows).");
  m.def("huge_page_empty", [](int64_t numel, at::ScalarType dtype) {
    return fastzoo::cpu::huge_page_empty(numel, at::TensorOptions().dtype(dtype));
  }, "Testing aid: the buffers a BlockChain and the tiled mbconv keep (huge_pages.h): a flat tensor of numel "
     "elements, from 1 MiB in memory of its own, 2 MiB-aligned and madvised for transparent huge pages.");
  fastzoo::bind_chain_guard(m);
  fastzoo::bind_ops(m);
  m.def("rgb_to_channels_last", &fastzoo::cpu::rgb_to_channels_last, py::call_guard<py::gil_scoped_release>(),
        "x.contiguous(memory_format=torch.channels_last) for a contiguous (N, 3, H, W) float32 CPU tensor.");
  py::class_<fastzoo::cpu::BlockChain>(m, "BlockChain",
                                       "CPU fused ops run back to back in one call (fastzoo.layers.BlockSequence).")
      .def(py::init<>())
      .def("add", &fastzoo::cpu::BlockChain::add)
      .def("run", &fastzoo::cpu::BlockChain::run, py::call_guard<py::gil_scoped_release>())
      .def("__len__", &fastzoo::cpu::BlockChain::size);
}
