"""The `fastzoo` command: fastzoo <subcommand> [options] (also python -m fastzoo)."""
import importlib
import sys

SUBCOMMANDS = {
    "info": ("fastzoo.info", "versions, what fastzoo._C was built with, which backends run"),
    "bench": ("fastzoo.bench", "fused vs reference vs torch.compile vs ONNX Runtime: medians, speedups, JSON, plot"),
    "compile-report": ("fastzoo.compile_report", "compile every Triton and CUDA kernel for GPU archs: registers, spills"),
    "train": ("fastzoo.train", "train on an ImageFolder through the fused ops; DDP under torchrun, exact resume"),
    "eval": ("fastzoo.train.evaluate", "top-1/top-5 of a checkpoint: center, ten-crop or multi-scale; torchrun shards"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: fastzoo <command> [options]\n\ncommands:")
        for name, (_, help_) in SUBCOMMANDS.items():
            print(f"  {name:16s}{help_}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"fastzoo: unknown command {name!r}; expected one of {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(SUBCOMMANDS[name][0])
    except ImportError as e:
        if "install torch" not in str(e):
            raise
        print(f"fastzoo: {e}", file=sys.stderr)
        return 1
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
