"""Convert MediaPipe's BlazeFace short-range ``.tflite`` into the ONNX file shipped with tracker.

One-off build step (not needed at run time). The weights come from the Apache-2.0 PyPI wheel
``mediapipe==0.10.21`` (``mediapipe/modules/face_detection/face_detection_short_range.tflite``)::

    pip download --no-deps mediapipe==0.10.21 -d /tmp/mp
    unzip -j /tmp/mp/mediapipe-*.whl \
        mediapipe/modules/face_detection/face_detection_short_range.tflite -d /tmp/mp
    pip install --target /tmp/tfl tflite   # flatbuffer bindings for the .tflite schema only
    PYTHONPATH=/tmp/tfl python scripts/convert_blazeface.py /tmp/mp/face_detection_short_range.tflite

The graph is walked op by op and rewritten as an NCHW ONNX graph with float32 weights; only
the ops this model uses are supported. The ONNX input is ``image`` (N, 3, 128, 128) in [-1, 1];
the outputs are ``regressors`` (N, 896, 16) and ``classificators`` (N, 896, 1), as in the source.
The graph is fully convolutional: any H, W that are multiples of 16 work (the anchor grids grow
with the input), which tracker.detect.detectors uses to scan large frames for small faces in one pass.
Padding follows TensorFlow 'SAME', which is the same for every even input size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parents[1] / "tracker" / "detectors" / "blazeface_short.onnx"

_DTYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32}


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (extra pixel goes after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Graph:
    """Reads a .tflite subgraph and emits ONNX nodes."""

    def __init__(self, path: Path) -> None:
        import tflite  # noqa: PLC0415 - build-time only dependency

        self.tfl = tflite
        self.model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
        self.sub = self.model.Subgraphs(0)
        self.type_names = {v: k for k, v in vars(tflite.TensorType).items() if k.isupper()}
        self.op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if k.isupper()}
        self.consts: dict[int, np.ndarray] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def name(self, t: int) -> str:
        return self.sub.Tensors(t).Name().decode()

    def shape(self, t: int) -> list[int]:
        return [int(v) for v in self.sub.Tensors(t).ShapeAsNumpy()]

    def const(self, t: int) -> np.ndarray | None:
        if t in self.consts:
            return self.consts[t]
        tensor = self.sub.Tensors(t)
        buf = self.model.Buffers(tensor.Buffer())
        if buf is None or buf.DataLength() == 0:
            return None
        dtype = _DTYPES[self.type_names[tensor.Type()]]
        arr = np.frombuffer(buf.DataAsNumpy().tobytes(), dtype=dtype).reshape(self.shape(t))
        self.consts[t] = arr
        return arr

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def options(self, op, cls):
        opts = cls()
        table = op.BuiltinOptions()
        opts.Init(table.Bytes, table.Pos)
        return opts

    def convert(self) -> onnx.ModelProto:
        sub = self.sub
        in_t = int(sub.InputsAsNumpy()[0])
        c = self.shape(in_t)[3]
        renames = {in_t: "image"}

        def ref(t: int) -> str:
            return renames.get(t, self.name(t))

        for i in range(sub.OperatorsLength()):
            op = sub.Operators(i)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            kind = self.op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
            ins = [int(t) for t in op.InputsAsNumpy()]
            out = int(op.OutputsAsNumpy()[0])
            if kind == "DEQUANTIZE":
                self.consts[out] = self.const(ins[0]).astype(np.float32)
            elif kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                self._conv(op, kind, ins, out, ref)
            elif kind == "RELU":
                self.nodes.append(helper.make_node("Relu", [ref(ins[0])], [ref(out)]))
            elif kind == "ADD":
                self.nodes.append(helper.make_node("Add", [ref(ins[0]), ref(ins[1])], [ref(out)]))
            elif kind == "PAD":
                p = self.const(ins[1]).astype(np.int64)  # NHWC rows of (before, after)
                nchw = p[[0, 3, 1, 2]]
                pads = self.init(f"{ref(out)}/pads", np.concatenate([nchw[:, 0], nchw[:, 1]]))
                self.nodes.append(helper.make_node("Pad", [ref(ins[0]), pads], [ref(out)]))
            elif kind == "MAX_POOL_2D":
                o = self.options(op, self.tfl.Pool2DOptions)
                kh, kw, sh, sw = o.FilterHeight(), o.FilterWidth(), o.StrideH(), o.StrideW()
                _, in_h, in_w, _ = self.shape(ins[0])
                t = b = left = r = 0
                if o.Padding() == self.tfl.Padding.SAME:
                    (t, b), (left, r) = _same_pads(in_h, kh, sh), _same_pads(in_w, kw, sw)
                self.nodes.append(helper.make_node(
                    "MaxPool", [ref(ins[0])], [ref(out)],
                    kernel_shape=[kh, kw], strides=[sh, sw], pads=[t, left, b, r],
                ))
            elif kind == "RESHAPE":
                # NCHW -> NHWC first so the flattening order matches TFLite's.
                nhwc = f"{ref(out)}/nhwc"
                self.nodes.append(helper.make_node("Transpose", [ref(ins[0])], [nhwc],
                                                   perm=[0, 2, 3, 1]))
                # (batch, anchors, values): anchors stay free so any input of 16k px works.
                shape = self.init(f"{ref(out)}/shape", np.array([0, -1, self.shape(out)[-1]]))
                self.nodes.append(helper.make_node("Reshape", [nhwc, shape], [ref(out)]))
            elif kind == "CONCATENATION":
                o = self.options(op, self.tfl.ConcatenationOptions)
                self.nodes.append(helper.make_node("Concat", [ref(t) for t in ins], [ref(out)],
                                                   axis=o.Axis()))
            else:
                raise SystemExit(f"unsupported op {kind}")

        outputs = [
            helper.make_tensor_value_info(ref(int(t)), TensorProto.FLOAT,
                                          ["N", "A", self.shape(int(t))[-1]])
            for t in sub.OutputsAsNumpy()
        ]
        graph = helper.make_graph(
            self.nodes, "blazeface_short_range",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", c, "H", "W"])],
            outputs, self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        model.doc_string = (
            "BlazeFace short-range face detector converted from MediaPipe 0.10.21 "
            "face_detection_short_range.tflite (Apache-2.0); see LICENSE-mediapipe."
        )
        onnx.checker.check_model(model)
        return model

    def _conv(self, op, kind: str, ins: list[int], out: int, ref) -> None:
        depthwise = kind == "DEPTHWISE_CONV_2D"
        cls = self.tfl.DepthwiseConv2DOptions if depthwise else self.tfl.Conv2DOptions
        o = self.options(op, cls)
        if o.FusedActivationFunction() != 0 or o.DilationHFactor() != 1:
            raise SystemExit("fused activations / dilation are not supported")
        weight = self.const(ins[1])
        bias = self.const(ins[2])
        if depthwise:  # (1, kh, kw, C) -> (C, 1, kh, kw)
            kernel = weight.transpose(3, 0, 1, 2)
            group = kernel.shape[0]
        else:  # (O, kh, kw, I) -> (O, I, kh, kw)
            kernel = weight.transpose(0, 3, 1, 2)
            group = 1
        kh, kw = kernel.shape[2:]
        _, in_h, in_w, _ = self.shape(ins[0])
        if o.Padding() == self.tfl.Padding.SAME:
            (t, b), (left, r) = _same_pads(in_h, kh, o.StrideH()), _same_pads(in_w, kw, o.StrideW())
        else:
            t = b = left = r = 0
        base = ref(out)
        self.nodes.append(helper.make_node(
            "Conv",
            [ref(ins[0]), self.init(f"{base}/W", kernel), self.init(f"{base}/B", bias)],
            [base],
            kernel_shape=[kh, kw], strides=[o.StrideH(), o.StrideW()],
            pads=[t, left, b, r], group=group,
        ))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tflite", type=Path, help="face_detection_short_range.tflite")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.tflite.is_file():
        print(f"error: no such file: {args.tflite}", file=sys.stderr)
        return 2
    try:
        model = _Graph(args.tflite).convert()
    except ImportError:
        print("error: needs the 'tflite' package (pip install tflite)", file=sys.stderr)
        return 2
    onnx.save(model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
