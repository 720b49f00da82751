// What a BlockSequence's one-call forward depends on besides its input, taken when its chain is built and
// checked in one C++ call before each run (fastzoo.layers.block_sequence): the same checks in Python cost
// 0.2-0.4 ms per batch-1 forward, run cold right after the previous forward's kernels.
#include <torch/extension.h>

#include <ATen/autocast_mode.h>
#include <torch/csrc/jit/frontend/tracer.h>

#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

namespace fastzoo {
namespace cpu {
at::Tensor rgb_to_channels_last(const at::Tensor& x);
}
namespace {

void push_key(std::vector<int64_t>& key, const at::Tensor& t) {
  if (!t.defined()) return;
  key.push_back(reinterpret_cast<int64_t>(t.data_ptr()));
  key.push_back(t.is_inference() ? 0 : static_cast<int64_t>(t._version()));
}

// (data_ptr, _version) of every tensor (None skipped; inference tensors, which have no version counter,
// as version 0), packed in one bytes object: the key of fastzoo.layers.bn_fold.FoldCache. The same loop in
// Python cost ~85 us per mobilenetv3_small forward at batch 1 (about 200 tensors), several times that when
// its objects were out of cache between other work.
py::bytes version_key(const std::vector<std::optional<at::Tensor>>& tensors) {
  std::vector<int64_t> key;
  key.reserve(2 * tensors.size());
  for (const auto& t : tensors)
    if (t.has_value()) push_key(key, *t);
  return py::bytes(reinterpret_cast<const char*>(key.data()), key.size() * sizeof(int64_t));
}

// Cold after a forward's kernels, the guard's checks are chains of cache misses, one object after the next
// (efficientnet_b0: 30 modules, 17 caches, 360 tensors; 196 us cold against 23 us warm). So what they read is
// prefetched first, level by level for all objects at once (the objects held, then what they point to), and
// the misses overlap: 100-130 us cold. Only hints: the checks themselves read through the normal API.
inline void prefetch_lines(const void* p, int lines) {
  for (int i = 0; i < lines; ++i) __builtin_prefetch(static_cast<const char*>(p) + 64 * i);
}
// a dict's key table (with a small dict's entries) and split values, its object being in cache already
inline void prefetch_dict_tables(PyObject* d) {
  const auto* o = reinterpret_cast<const PyDictObject*>(d);
  prefetch_lines(o->ma_keys, 8);
  if (o->ma_values != nullptr) prefetch_lines(o->ma_values, 4);
}

// The version_key of the tensors that (dict, name) slots hold (a module's _parameters or _buffers and a
// name), taken when made and compared by unchanged(): no parameter or buffer the chain was built from has
// been replaced, reassigned or changed in place. The owner prefetches what unchanged() reads in two levels
// (prefetch_held, then prefetch_pointed).
class SlotVersions {
 public:
  explicit SlotVersions(std::vector<std::pair<py::dict, py::str>> slots) : slots_(std::move(slots)) {
    std::vector<PyObject*> objects(slots_.size());
    TORCH_CHECK(lookup(objects), "SlotVersions: every slot must hold a tensor or None");
    for (PyObject* o : objects) {
      held_.push_back(py::reinterpret_borrow<py::object>(o));
      tensors_.push_back(o == Py_None ? at::Tensor() : THPVariable_Unpack(o));
    }
    key_ = key_now();
  }
  // the slots' dicts and the tensors
  void prefetch_held() const {
    for (const auto& slot : slots_) __builtin_prefetch(slot.first.ptr());
    for (const at::Tensor& t : tensors_)
      if (t.defined()) prefetch_lines(t.unsafeGetTensorImpl(), 4);  // the version counter's pointer, dtype, keys
  }
  // the dicts' tables, the storages and the version counters
  void prefetch_pointed() const {
    for (const auto& slot : slots_) prefetch_dict_tables(slot.first.ptr());
    for (const at::Tensor& t : tensors_)
      if (t.defined()) {
        prefetch_lines(t.unsafeGetTensorImpl()->storage().unsafeGetStorageImpl(), 2);
        // a VariableVersion is one intrusive_ptr to its counter
        if (!t.is_inference())
          __builtin_prefetch(*reinterpret_cast<void* const*>(&t.unsafeGetTensorImpl()->version_counter()));
      }
  }
  int traverse(visitproc visit, void* arg) const {
    for (const auto& [dict, name] : slots_) Py_VISIT(dict.ptr());
    for (const py::object& o : held_) Py_VISIT(o.ptr());
    return 0;
  }
  void clear() {
    slots_.clear(), held_.clear(), tensors_.clear();
  }
  bool unchanged() const {
    for (size_t i = 0; i < slots_.size(); ++i) {
      // the object the slot held when made (a tensor or None, so no type check), else changed: a slot
      // replaced, where the same key would not tell
      PyObject* v = PyDict_GetItemWithError(slots_[i].first.ptr(), slots_[i].second.ptr());
      if (v != held_[i].ptr()) {
        if (v == nullptr) PyErr_Clear();
        return false;
      }
    }
    return key_now() == key_;
  }

 private:
  // each slot's object (borrowed), or false where a slot is gone or holds something other than a tensor or None
  bool lookup(std::vector<PyObject*>& out) const {
    for (size_t i = 0; i < slots_.size(); ++i) {
      PyObject* v = PyDict_GetItemWithError(slots_[i].first.ptr(), slots_[i].second.ptr());
      if (v == nullptr) {
        PyErr_Clear();
        return false;
      }
      if (v != Py_None && !THPVariable_Check(v)) return false;
      out[i] = v;
    }
    return true;
  }
  std::vector<int64_t> key_now() const {
    std::vector<int64_t> key;
    key.reserve(2 * tensors_.size());
    for (const at::Tensor& t : tensors_) push_key(key, t);
    return key;
  }
  std::vector<std::pair<py::dict, py::str>> slots_;
  std::vector<py::object> held_;  // what each slot held when made
  std::vector<at::Tensor> tensors_;
  std::vector<int64_t> key_;
};

// A module's state as the chain saw it: its direct children (in order) and, where `eval_only`, eval mode.
struct Watched {
  py::object module;
  std::vector<py::object> children;  // held: a freed child's address could come back as another module
  bool eval_only;
  // for prefetching only: the dicts the checks look up in or iterate (its __dict__, _modules; null where it has
  // no __dict__) and those whose size they read (its hook dicts)
  std::vector<py::object> tables, hooks;
};

py::object interned(const char* s) { return py::reinterpret_steal<py::object>(PyUnicode_InternFromString(s)); }

// getattr(obj, name) as a new reference; nullptr (error cleared) where it fails
py::object attr(py::handle obj, const py::object& name) {
  PyObject* v = PyObject_GetAttr(obj.ptr(), name.ptr());
  if (v == nullptr) PyErr_Clear();
  return py::reinterpret_steal<py::object>(v);
}

// obj.__dict__ (a new reference), or a null object (error cleared) where it has none
py::object instance_dict(py::handle obj) {
  PyObject* d = PyObject_GenericGetDict(obj.ptr(), nullptr);
  if (d == nullptr) PyErr_Clear();
  return py::reinterpret_steal<py::object>(d);
}

bool empty_dict(const py::object& d) { return d && PyDict_Check(d.ptr()) && PyDict_Size(d.ptr()) == 0; }

bool in_eval(py::handle module, const py::object& training) {
  const py::object v = attr(module, training);
  return v && v.ptr() == Py_False;
}

// Everything the one-call forward depends on besides its input: no autograd, autocast or JIT tracing; the
// cpu (or auto) fastzoo backend; no global module hooks; the watched modules with no forward hooks, the same
// children, eval mode where asked; the blocks' FoldCaches holding the values the chain's arguments came from;
// the same head modules; the same source tensors (SlotVersions). input(x, head, model) checks it all and gives x
// as the chain takes it (channels_last; an RGB model input through rgb_to_channels_last, as
// fastzoo.models._common.to_channels_last_for_inference does), or None where anything changed.
class ChainGuard {
 public:
  ChainGuard(const std::vector<std::pair<py::object, bool>>& modules,
             std::vector<std::pair<py::object, py::object>> caches, std::vector<py::object> head,
             std::vector<std::pair<py::dict, py::str>> slots, py::dict backends, std::vector<py::dict> global_hooks)
      : caches_(std::move(caches)),
        head_(std::move(head)),
        versions_(std::move(slots)),
        backends_(std::move(backends)),
        global_hooks_(std::move(global_hooks)) {
    for (const auto& [m, eval_only] : modules) {
      Watched w{m, {}, eval_only};
      const py::object mods = attr(m, n_modules_);
      TORCH_CHECK(mods && PyDict_Check(mods.ptr()), "ChainGuard: every watched object must be an nn.Module");
      PyObject *key, *value;
      Py_ssize_t pos = 0;
      while (PyDict_Next(mods.ptr(), &pos, &key, &value))
        w.children.push_back(py::reinterpret_borrow<py::object>(value));
      w.tables = {instance_dict(m), mods};
      w.hooks = {attr(m, n_hooks_), attr(m, n_pre_hooks_)};
      watched_.push_back(std::move(w));
    }
    for (const auto& [cache, value] : caches_) cache_dicts_.push_back(instance_dict(cache));
  }

  // The Python objects it holds, for the garbage collector (tp_traverse, tp_clear): the guard lives in its
  // BlockSequence's __dict__ (through _LastRun) and holds that sequence, a cycle the collector only sees through
  // these (without them, a deleted model's features and head stayed alive to the end of the process).
  int traverse(visitproc visit, void* arg) const {
    for (const Watched& w : watched_) {
      Py_VISIT(w.module.ptr());
      for (const py::object& c : w.children) Py_VISIT(c.ptr());
      for (const py::object& o : w.tables) Py_VISIT(o.ptr());
      for (const py::object& o : w.hooks) Py_VISIT(o.ptr());
    }
    for (const auto& [cache, value] : caches_) {
      Py_VISIT(cache.ptr());
      Py_VISIT(value.ptr());
    }
    for (const py::object& d : cache_dicts_) Py_VISIT(d.ptr());
    for (const py::object& h : head_) Py_VISIT(h.ptr());
    for (const py::dict& d : global_hooks_) Py_VISIT(d.ptr());
    Py_VISIT(backends_.ptr());
    return versions_.traverse(visit, arg);
  }
  void clear() {
    cleared_ = true;  // input() answers None from now on
    watched_.clear(), caches_.clear(), cache_dicts_.clear(), head_.clear(), global_hooks_.clear();
    backends_ = py::dict();
    versions_.clear();
  }

  py::object input(const py::object& x, const py::tuple& head, const py::object& model) const {
    if (cleared_ || !holds(x, head)) return py::none();
    const at::Tensor& t = THPVariable_Unpack(x.ptr());
    if (model.is_none()) return x;
    if (!in_eval(model, n_training_)) return py::none();
    if (t.dim() != 4) return x;
    if (t.size(1) == 3 && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16) && t.is_contiguous())
      return py::reinterpret_steal<py::object>(THPVariable_Wrap(cpu::rgb_to_channels_last(t)));
    return py::reinterpret_steal<py::object>(THPVariable_Wrap(t.contiguous(at::MemoryFormat::ChannelsLast)));
  }

 private:
  void prefetch() const {
    for (const Watched& w : watched_) {
      // the object and the line before it (where CPython keeps a managed __dict__'s pointer)
      prefetch_lines(reinterpret_cast<const char*>(w.module.ptr()) - 64, 2);
      for (const auto* objects : {&w.tables, &w.hooks})
        for (const py::object& o : *objects)
          if (o) __builtin_prefetch(o.ptr());
    }
    for (const auto& [cache, value] : caches_) __builtin_prefetch(cache.ptr());
    for (const py::object& d : cache_dicts_)
      if (d) __builtin_prefetch(d.ptr());
    versions_.prefetch_held();
    for (const Watched& w : watched_)
      for (const py::object& d : w.tables)
        if (d) prefetch_dict_tables(d.ptr());
    for (const py::object& d : cache_dicts_)
      if (d) prefetch_dict_tables(d.ptr());
    versions_.prefetch_pointed();
  }

  bool holds(const py::object& x, const py::tuple& head) const {
    prefetch();
    if (at::GradMode::is_enabled() || at::autocast::is_autocast_enabled(at::kCPU) ||
        torch::jit::tracer::isTracing())
      return false;
    if (!THPVariable_CheckExact(x.ptr()) || !THPVariable_Unpack(x.ptr()).device().is_cpu()) return false;
    if (!cpu_backend()) return false;
    for (const py::dict& d : global_hooks_)
      if (PyDict_Size(d.ptr()) != 0) return false;
    if (static_cast<size_t>(head.size()) != head_.size()) return false;
    for (size_t i = 0; i < head_.size(); ++i)
      if (head[i].ptr() != head_[i].ptr()) return false;
    for (const Watched& w : watched_) {
      if (!empty_dict(attr(w.module, n_hooks_)) || !empty_dict(attr(w.module, n_pre_hooks_))) return false;
      if (w.eval_only && !in_eval(w.module, n_training_)) return false;
      const py::object mods = attr(w.module, n_modules_);
      if (!mods || !PyDict_Check(mods.ptr()) || PyDict_Size(mods.ptr()) != static_cast<Py_ssize_t>(w.children.size()))
        return false;
      PyObject *key, *value;
      Py_ssize_t pos = 0;
      for (size_t i = 0; PyDict_Next(mods.ptr(), &pos, &key, &value); ++i)
        if (value != w.children[i].ptr()) return false;
    }
    for (const auto& [cache, value] : caches_) {
      const py::object now = attr(cache, n_value_);
      if (!now || now.ptr() != value.ptr()) return false;
    }
    return versions_.unchanged();
  }

  // fastzoo.backends.cpu_kernels_in_use() for a built extension: the backend set (or FASTZOO_BACKEND when none
  // is) is auto or cpu; anything else goes the Python way, which also reports a bad name
  bool cpu_backend() const {
    PyObject* current = PyDict_GetItemWithError(backends_.ptr(), n_current_.ptr());  // borrowed
    if (current == nullptr) {
      PyErr_Clear();
      return false;
    }
    const char* name;
    if (current == Py_None) {
      name = std::getenv("FASTZOO_BACKEND");
      if (name == nullptr || *name == '\0') return true;
    } else {
      name = PyUnicode_Check(current) ? PyUnicode_AsUTF8(current) : nullptr;
      if (name == nullptr) {
        PyErr_Clear();
        return false;
      }
    }
    return std::strcmp(name, "auto") == 0 || std::strcmp(name, "cpu") == 0;
  }

  std::vector<Watched> watched_;
  std::vector<std::pair<py::object, py::object>> caches_;  // (FoldCache, the _value the chain's arguments came from)
  std::vector<py::object> cache_dicts_;                      // their __dict__s, for prefetching only
  std::vector<py::object> head_;
  SlotVersions versions_;
  py::dict backends_;  // fastzoo.backends' globals
  std::vector<py::dict> global_hooks_;
  bool cleared_ = false;
  const py::object n_modules_ = interned("_modules"), n_hooks_ = interned("_forward_hooks"),
                   n_pre_hooks_ = interned("_forward_pre_hooks"), n_training_ = interned("training"),
                   n_value_ = interned("_value"), n_current_ = interned("_current");
};

}  // namespace

void bind_chain_guard(py::module& m) {
  m.def("version_key", &version_key, "(data_ptr, _version) of each tensor, packed: FoldCache's key.");
  py::class_<ChainGuard>(m, "ChainGuard",
                         "What a BlockSequence's chain was built from; input(x, head, model) gives x as the chain "
                         "takes it, or None where anything changed.",
                         py::custom_type_setup([](PyHeapTypeObject* heap_type) {
                           PyTypeObject* type = &heap_type->ht_type;
                           type->tp_flags |= Py_TPFLAGS_HAVE_GC;
                           type->tp_traverse = [](PyObject* self, visitproc visit, void* arg) {
                             Py_VISIT(Py_TYPE(self));  // a heap type's instances hold a reference to it
                             if (!py::detail::is_holder_constructed(self)) return 0;
                             return py::cast<const ChainGuard&>(py::handle(self)).traverse(visit, arg);
                           };
                           type->tp_clear = [](PyObject* self) {
                             if (py::detail::is_holder_constructed(self))
                               py::cast<ChainGuard&>(py::handle(self)).clear();
                             return 0;
                           };
                         }))
      .def(py::init<const std::vector<std::pair<py::object, bool>>&, std::vector<std::pair<py::object, py::object>>,
                    std::vector<py::object>, std::vector<std::pair<py::dict, py::str>>, py::dict,
                    std::vector<py::dict>>())
      .def("input", &ChainGuard::input);
}

}  // namespace fastzoo
