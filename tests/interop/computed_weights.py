"""The simulated model with its quantized weights computed, as the exported QDQ model has them.

ONNX Runtime prepacks a Gemm/MatMul weight that is a constant when the session is created, and
then sums the products over K in another order than for a weight computed at run time (the
export's DequantizeLinear output): with K > 256 the two differ in the last bits (measured, ORT
1.32, ORT_DISABLE_ALL: 1.1e-5 on crnn_ddddocr's Gemm 1024 → 8210, 7.6e-6 on a 300 → 10 Gemm,
nothing at K ≤ 256), enough to move a value across a rounding boundary of the next quantizer:
one output step. The placement and parameters of the quantizers are not involved, so the
"export computes what the simulation computes" comparison reads the simulated model's weights
through an Identity wherever the export dequantizes them: both sessions then run the same
kernels on the same numbers.
"""

import onnx
from onnx import helper


def with_computed_weights(sim_path, qdq_path, out_path):
    """Write SIM with every weight the QDQ model dequantizes read through an Identity to
    OUT; returns how many weights were rerouted."""
    sim = onnx.load(sim_path)
    qdq = onnx.load(qdq_path, load_external_data=False)
    dequantized = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    graph = sim.graph
    constants = {t.name for t in graph.initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == "Constant" and n.output}
    rerouted = sorted(dequantized & constants)
    computed = {name: f"{name}__computed" for name in rerouted}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in computed:
                node.input[i] = computed[name]
    # Constant nodes first (their outputs feed the Identities), then the Identities, then the rest.
    nodes = list(graph.node)
    head = [n for n in nodes if n.op_type == "Constant"]
    rest = [n for n in nodes if n.op_type != "Constant"]
    identities = [helper.make_node("Identity", [name], [computed[name]], name=f"{name}__identity")
                  for name in rerouted]
    del graph.node[:]
    graph.node.extend(head + identities + rest)
    onnx.save(sim, out_path)
    return len(rerouted)
