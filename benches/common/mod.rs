//! Synthetic models shared by the benchmarks: a model with ResNet-50's conv shapes (53
//! convs + the 1000-way Gemm, ≈25.6M parameters, random weights, BN after every conv).

use ndarray::{ArrayD, IxDyn};
use qsteer::data::SplitMix64;
use qsteer::model::builder::{attr_int, attr_ints, ProtoBuilder};
use qsteer::model::Model;

struct Net {
    b: ProtoBuilder,
    rng: SplitMix64,
    n: usize,
}

impl Net {
    fn random(&mut self, shape: &[usize], lo: f32, hi: f32) -> ArrayD<f32> {
        let rng = &mut self.rng;
        ArrayD::from_shape_fn(IxDyn(shape), |_| {
            lo + (hi - lo) * (rng.symmetric() * 0.5 + 0.5)
        })
    }

    /// Conv k×k (He-scaled random weights, no bias) → BN, optionally → Relu.
    fn conv_bn(
        &mut self,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        relu: bool,
    ) -> String {
        self.n += 1;
        let name = format!("conv{}", self.n);
        let bound = (6.0 / (cin * k * k) as f32).sqrt();
        let w = self.random(&[cout, cin, k, k], -bound, bound);
        let p = (k / 2) as i64;
        let bn: Vec<ArrayD<f32>> = vec![
            self.random(&[cout], 0.5, 1.5),
            self.random(&[cout], -1.0, 3.0),
            self.random(&[cout], -0.5, 0.5),
            self.random(&[cout], 0.5, 2.0),
        ];
        let w_name = format!("{name}.w");
        self.b.initializer(&w_name, &w).node(
            "Conv",
            &name,
            &[x, &w_name],
            &[&format!("{name}.out")],
            vec![
                attr_ints("kernel_shape", &[k as i64, k as i64]),
                attr_ints("strides", &[stride as i64, stride as i64]),
                attr_ints("pads", &[p, p, p, p]),
                attr_int("group", 1),
            ],
        );
        let params: Vec<String> = ["scale", "bias", "mean", "var"]
            .iter()
            .map(|s| format!("{name}.bn.{s}"))
            .collect();
        for (p, a) in params.iter().zip(&bn) {
            self.b.initializer(p, a);
        }
        let out = format!("{name}.bn.out");
        let conv_out = format!("{name}.out");
        let mut bn_inputs = vec![conv_out.as_str()];
        bn_inputs.extend(params.iter().map(|s| s.as_str()));
        self.b.node(
            "BatchNormalization",
            &format!("{name}.bn"),
            &bn_inputs,
            &[&out],
            vec![],
        );
        if !relu {
            return out;
        }
        let r = format!("{name}.relu");
        self.b.node("Relu", &r, &[&out], &[&r], vec![]);
        r
    }
}

/// ResNet-50: stem 7×7/2, max-pool, bottlenecks [3, 4, 6, 3] (1×1, 3×3, 1×1 ×4) with a 1×1
/// projection on the first block of each stage, global pool, Gemm 2048 → 1000.
pub fn resnet50_like() -> Model {
    let mut net = Net {
        b: ProtoBuilder::new(13),
        rng: SplitMix64(50),
        n: 0,
    };
    net.b.input("input", &[3, 224, 224]);
    let stem = net.conv_bn("input", 3, 64, 7, 2, true);
    net.b.node(
        "MaxPool",
        "pool0",
        &[&stem],
        &["pool0"],
        vec![
            attr_ints("kernel_shape", &[3, 3]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[1, 1, 1, 1]),
        ],
    );
    let mut x = "pool0".to_string();
    let mut cin = 64;
    for (stage, (blocks, width)) in [(3, 64), (4, 128), (6, 256), (3, 512)]
        .into_iter()
        .enumerate()
    {
        for block in 0..blocks {
            let stride = if block == 0 && stage > 0 { 2 } else { 1 };
            let a = net.conv_bn(&x, cin, width, 1, 1, true);
            let b = net.conv_bn(&a, width, width, 3, stride, true);
            let c = net.conv_bn(&b, width, width * 4, 1, 1, false);
            let shortcut = if block == 0 {
                net.conv_bn(&x, cin, width * 4, 1, stride, false)
            } else {
                x.clone()
            };
            let add = format!("add{stage}.{block}");
            net.b.node("Add", &add, &[&c, &shortcut], &[&add], vec![]);
            let relu = format!("{add}.relu");
            net.b.node("Relu", &relu, &[&add], &[&relu], vec![]);
            x = relu;
            cin = width * 4;
        }
    }
    let fc_w = net.random(&[1000, 2048], -0.05, 0.05);
    let fc_b = net.random(&[1000], -0.05, 0.05);
    net.b
        .node("GlobalAveragePool", "gap", &[&x], &["gap"], vec![])
        .node("Flatten", "flatten", &["gap"], &["flat"], vec![])
        .initializer("fc.w", &fc_w)
        .initializer("fc.b", &fc_b)
        .node(
            "Gemm",
            "fc",
            &["flat", "fc.w", "fc.b"],
            &["logits"],
            vec![attr_int("transB", 1)],
        )
        .output("logits");
    assert_eq!(net.n, 53);
    net.b.model("resnet50-like").expect("a valid model")
}
