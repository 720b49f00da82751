#include "block_chain.h"

#include "cpu_kernels.h"

namespace fastzoo {
namespace cpu {

void BlockChain::add(const std::string& op, std::vector<std::optional<at::Tensor>> tensors,
                     std::vector<int64_t> ints, std::vector<std::string> strs) {
  struct Kind {
    const char* name;
    Op op;
    size_t tensors, ints, strs;
  };
  static const Kind kinds[] = {{"mbconv", Op::MBConv, 13, 2, 3},
                               {"fused_mbconv", Op::FusedMBConv, 6, 2, 1},
                               {"pwconv_bn_act", Op::PwConv, 4, 0, 1},
                               {"dwconv_bn_act", Op::DwConv, 3, 2, 1}};
  for (const Kind& k : kinds) {
    if (op != k.name) continue;
    TORCH_CHECK(tensors.size() == k.tensors && ints.size() == k.ints && strs.size() == k.strs,
                "BlockChain.add: ", op, " takes ", k.tensors, " tensors, ", k.ints, " ints and ", k.strs,
                " strings after x, got ", tensors.size(), ", ", ints.size(), " and ", strs.size());
    steps_.push_back(Step{k.op, std::move(tensors), std::move(ints), std::move(strs)});
    return;
  }
  TORCH_CHECK(false, "BlockChain.add: unknown op '", op,
              "'; expected mbconv, fused_mbconv, pwconv_bn_act or dwconv_bn_act");
}

at::Tensor BlockChain::run(const at::Tensor& x0) const {
  at::Tensor x = x0;
  for (const Step& st : steps_) {
    const auto& t = st.t;
    // a None where the schema wants a Tensor: the op's own check reports it by name
    auto T = [&](size_t k) { return t[k].has_value() ? *t[k] : at::Tensor(); };
    switch (st.op) {
      case Op::MBConv:
        x = mbconv_cpu(x, t[0], t[1], t[2], T(3), T(4), T(5), t[6], t[7], t[8], t[9], T(10), T(11), T(12), st.i[0],
                       st.s[0], st.s[1], st.s[2], st.i[1] != 0);
        break;
      case Op::FusedMBConv:
        x = fused_mbconv_cpu(x, T(0), T(1), T(2), t[3], t[4], t[5], st.i[0], st.s[0], st.i[1] != 0);
        break;
      case Op::PwConv:
        x = pwconv_bn_act_cpu(x, T(0), T(1), T(2), st.s[0], t[3]);
        break;
      case Op::DwConv:
        x = dwconv_bn_act_cpu(x, T(0), T(1), T(2), st.i[0], st.i[1], st.s[0]);
        break;
    }
  }
  return x;
}

}  // namespace cpu
}  // namespace fastzoo
