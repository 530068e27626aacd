//! The interpreter against tract on the sample models, write-back, and the loop: a zero
//! learning rate changes nothing, training lowers the loss, a cancelled run resumes from
//! its checkpoint to the same weights as an uninterrupted one.

use super::fit::{fine_tune, Event, FineTuneRun};
use super::settings::{FineTuneSettings, Loss, Optimizer, Schedule};
use super::trainer::{Targets, Trainer};
use crate::cancel::CancelToken;
use crate::data::{load_split, Dataset};
use crate::model::Model;
use crate::runtime::CompiledModel;
use burn_tensor::DType;
use ndarray::ArrayD;
use std::cell::Cell;
use std::path::Path;

fn sample(name: &str) -> Model {
    Model::load(Path::new(&format!("sample-models/{name}.onnx"))).unwrap()
}

fn digits() -> (Dataset, Dataset) {
    let pair = load_split(Path::new("sample-models/digits"), 200, 0).unwrap();
    (pair.calibration, pair.evaluation)
}

fn tract_outputs(model: &Model, x: &ArrayD<f32>) -> ArrayD<f32> {
    let shape = x.shape()[1..].to_vec();
    let c = CompiledModel::compile(model, &[shape], x.shape()[0], &[]).unwrap();
    c.run(&[x.view()]).unwrap().remove(0)
}

fn first(data: &Dataset, n: usize) -> ArrayD<f32> {
    let idx: Vec<usize> = (0..n).collect();
    data.inputs[0].data.read(&idx).unwrap()
}

#[test]
fn forward_matches_tract_on_the_sample_models() {
    let (_, eval) = digits();
    let x = first(&eval, 16);
    for name in ["mbv2_digits", "resnet_digits"] {
        let model = sample(name);
        let t = Trainer::new(&model, &FineTuneSettings::default(), DType::F32).unwrap();
        let ours = t.forward(&x.view()).unwrap().to_array();
        let theirs = tract_outputs(&model, &x);
        assert_eq!(ours.shape(), theirs.shape());
        let scale = theirs.iter().fold(0f32, |a, v| a.max(v.abs()));
        let diff = ours
            .iter()
            .zip(&theirs)
            .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
        assert!(
            diff <= 1e-4 * scale,
            "{name}: max |diff| {diff} vs output scale {scale}"
        );
    }
}

fn settings(epochs: usize, lr: f64) -> FineTuneSettings {
    FineTuneSettings {
        epochs,
        lr,
        schedule: Schedule::Constant,
        optimizer: Optimizer::Adam,
        batch_size: 16,
        ..FineTuneSettings::default()
    }
}

fn small(data: &Dataset, n: usize) -> Dataset {
    data.subset(&(0..n).collect::<Vec<_>>())
}

#[test]
fn zero_learning_rate_leaves_the_model_bit_identical() {
    let model = sample("mbv2_digits");
    let (train, eval) = digits();
    let train = small(&train, 32);
    let s = settings(1, 0.0);
    let run = FineTuneRun {
        model: &model,
        train: &train,
        teacher: None,
        settings: &s,
        checkpoint: None,
        key: "k".into(),
        quant: None,
    };
    let out = fine_tune(&run, &|_| Ok(0.0), &CancelToken::new(), &|_| {}).unwrap();
    assert_eq!(out.model.to_bytes(), model.to_bytes());
    let x = first(&eval, 8);
    let (a, b) = (tract_outputs(&model, &x), tract_outputs(&out.model, &x));
    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
}

/// Mean cross-entropy over `data` with the trainer's current weights.
fn mean_loss(t: &Trainer, data: &Dataset) -> f64 {
    let labels = data.labels.as_ref().unwrap();
    t.loss_and_grads(
        &data.inputs[0].data.read_all().unwrap().view(),
        &Targets::Labels(labels),
    )
    .unwrap()
    .0
}

#[test]
fn training_lowers_the_loss_and_writes_back_same_names() {
    // Damage the classifier so there is something to learn.
    let mut model = sample("resnet_digits");
    let w = model.weight("fc.weight").unwrap().mapv(|v| v * 0.1);
    model.set_weight("fc.weight", w).unwrap();
    let (train, _) = digits();
    let train = small(&train, 64);
    let s = settings(3, 3e-3);
    let before = mean_loss(&Trainer::new(&model, &s, DType::F32).unwrap(), &train);
    let run = FineTuneRun {
        model: &model,
        train: &train,
        teacher: None,
        settings: &s,
        checkpoint: None,
        key: "k".into(),
        quant: None,
    };
    let steps = Cell::new(0);
    let out = fine_tune(&run, &|_| Ok(0.0), &CancelToken::new(), &|e| {
        if matches!(e, Event::Step { .. }) {
            steps.set(steps.get() + 1)
        }
    })
    .unwrap();
    assert_eq!(steps.get(), 3 * 4);
    let after = mean_loss(&Trainer::new(&out.model, &s, DType::F32).unwrap(), &train);
    assert!(after < 0.5 * before, "loss {before} → {after}");
    // Same graph, same initializer names; only values changed.
    let names = |m: &Model| {
        m.graph()
            .initializer
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&out.model), names(&model));
    assert_eq!(out.model.graph().node, model.graph().node);
    assert_ne!(out.model.weight("fc.weight"), model.weight("fc.weight"));
}

#[test]
fn a_cancelled_run_resumes_from_its_checkpoint_to_the_same_weights() {
    let model = sample("mbv2_digits");
    let (train, _) = digits();
    let train = small(&train, 32);
    let mut s = settings(2, 1e-3);
    s.optimizer = Optimizer::Sgd;
    s.loss = Loss::CrossEntropy;
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("run.ckpt");
    let run =
        |checkpoint: Option<std::path::PathBuf>, cancel: &CancelToken, resumed: &Cell<usize>| {
            let r = FineTuneRun {
                model: &model,
                train: &train,
                teacher: None,
                settings: &s,
                checkpoint,
                key: "same run".into(),
                quant: None,
            };
            fine_tune(&r, &|_| Ok(0.5), cancel, &|e| match e {
                Event::Epoch(r) if r.epoch == 1 => cancel.cancel(),
                Event::Resumed { epochs_done } => resumed.set(epochs_done),
                _ => {}
            })
        };
    let resumed = Cell::new(0);
    let cancel = CancelToken::new();
    assert!(matches!(
        run(Some(ckpt.clone()), &cancel, &resumed),
        Err(crate::Error::Cancelled)
    ));
    assert!(ckpt.exists());
    let again = run(Some(ckpt.clone()), &CancelToken::new(), &resumed).unwrap();
    assert_eq!(resumed.get(), 1);
    assert_eq!(again.history.len(), 2);
    // Uninterrupted reference (its cancel fires after epoch 1 too, so give it a fresh
    // token it cannot see: run without the cancelling handler).
    let r = FineTuneRun {
        model: &model,
        train: &train,
        teacher: None,
        settings: &s,
        checkpoint: None,
        key: "same run".into(),
        quant: None,
    };
    let whole = fine_tune(&r, &|_| Ok(0.5), &CancelToken::new(), &|_| {}).unwrap();
    assert_eq!(again.model.to_bytes(), whole.model.to_bytes());
}

#[test]
fn distillation_to_the_parent_starts_near_zero_loss() {
    let model = sample("mbv2_digits");
    let (train, _) = digits();
    let train = small(&train, 16);
    let train_x = train.inputs[0].data.read_all().unwrap();
    let teacher = tract_outputs(&model, &train_x);
    let mut s = settings(1, 0.0);
    s.loss = Loss::Distill { temperature: 2.0 };
    let t = Trainer::new(&model, &s, DType::F32).unwrap();
    let flat: Vec<f32> = teacher.iter().copied().collect();
    let (loss, _) = t
        .loss_and_grads(&train_x.view(), &Targets::Teacher(&flat))
        .unwrap();
    // KL of the model to itself: zero up to the interpreter's rounding.
    assert!(loss.abs() < 1e-4, "KL to itself {loss}");
}

/// QAT: the interpreter with the sim's encodings computes what tract computes on the
/// simulated model (weights fake-quantized in place, Div→Round→Clip→Mul after each point).
#[test]
fn qat_forward_matches_the_simulated_model_in_tract() {
    use crate::quant::import::tests::calibrated_sim;
    use crate::quant::import::ModelEncodings;
    let (_, eval) = digits();
    let x = first(&eval, 32);
    for per_channel in [false, true] {
        let (model, sim) = calibrated_sim("mbv2_digits.onnx", 4, per_channel);
        let encodings = ModelEncodings {
            weights: sim.weights.clone(),
            activations: sim.activations.clone(),
            biases: Vec::new(),
        };
        let mut t = Trainer::new(&model, &FineTuneSettings::default(), DType::F32).unwrap();
        t.set_quant(&model, &encodings).unwrap();
        let ours = t.forward(&x.view()).unwrap().to_array();
        let theirs = tract_outputs(&sim.model, &x);
        let plain = tract_outputs(&model, &x);
        let max_diff = |a: &ArrayD<f32>, b: &ArrayD<f32>| {
            a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()))
        };
        // A value within an ulp of a rounding tie may land one grid step away (tract
        // multiplies by 1/scale): allow a few steps of the output grid, far below the
        // quantization error itself.
        let step = sim
            .activations
            .values()
            .map(|e| e.scale)
            .fold(0f32, f32::max);
        let d = max_diff(&ours, &theirs);
        assert!(d <= 4.0 * step, "per_channel {per_channel}: max |diff| {d}");
        assert!(
            max_diff(&plain, &theirs) > 4.0 * d.max(1e-6),
            "the FP32 model must differ from the simulation more than the interpreter does"
        );
    }
}

/// A QAT step's gradient is nonzero and training with fake-quant lowers the loss.
#[test]
fn qat_training_lowers_the_loss() {
    use crate::quant::import::tests::calibrated_sim;
    use crate::quant::import::ModelEncodings;
    let (model, sim) = calibrated_sim("mbv2_digits.onnx", 4, false);
    let encodings = ModelEncodings {
        weights: sim.weights.clone(),
        activations: sim.activations.clone(),
        biases: Vec::new(),
    };
    let (train, _) = digits();
    let x = first(&train, 32);
    let labels: Vec<i64> = train.labels.as_ref().unwrap()[..32].to_vec();
    let mut t = Trainer::new(&model, &settings(1, 1e-3), DType::F32).unwrap();
    t.set_quant(&model, &encodings).unwrap();
    let first_loss = t.step(&x.view(), &Targets::Labels(&labels), 1e-3).unwrap();
    let mut last = first_loss;
    for _ in 0..15 {
        last = t.step(&x.view(), &Targets::Labels(&labels), 1e-3).unwrap();
    }
    assert!(last < 0.7 * first_loss, "loss {first_loss} → {last}");
}

/// Augmentation changes what a step sees (so the trained weights), and the same seed
/// trains the same weights; a non-image input is refused, not silently trained on.
#[test]
fn augmentation_is_applied_to_training_batches_and_seeded() {
    let model = sample("mbv2_digits");
    let (train, _) = digits();
    let train = small(&train, 32);
    let trained = |augment: super::augment::Augment, seed: u64| {
        let s = FineTuneSettings {
            augment,
            seed,
            train_layers: super::settings::TrainLayers::Last(1),
            ..settings(1, 1e-2)
        };
        let run = FineTuneRun {
            model: &model,
            train: &train,
            teacher: None,
            settings: &s,
            checkpoint: None,
            key: "k".into(),
            quant: None,
        };
        let out = fine_tune(&run, &|_| Ok(0.0), &CancelToken::new(), &|_| {}).unwrap();
        out.model.weight("fc.weight").unwrap().clone()
    };
    let shift = super::augment::Augment {
        shift: 1,
        flip: true,
    };
    let plain = trained(Default::default(), 3);
    let augmented = trained(shift, 3);
    assert_ne!(plain, augmented, "augmentation changed nothing");
    assert_eq!(
        augmented,
        trained(shift, 3),
        "the same seed trained differently"
    );
    assert_ne!(augmented, trained(shift, 4));

    // Samples that are not images: the loop refuses, naming the data.
    let flat = ndarray::Array2::<f32>::zeros((8, 256)).into_dyn();
    let data = Dataset::from_arrays(
        "flat",
        vec![crate::data::NamedInput::from_array(None, "flat", flat)],
        Some(vec![0; 8]),
    )
    .unwrap();
    let s = FineTuneSettings {
        augment: shift,
        ..settings(1, 1e-2)
    };
    let run = FineTuneRun {
        model: &model,
        train: &data,
        teacher: None,
        settings: &s,
        checkpoint: None,
        key: "k".into(),
        quant: None,
    };
    let err = fine_tune(&run, &|_| Ok(0.0), &CancelToken::new(), &|_| {})
        .err()
        .expect("augmenting non-images ran")
        .to_string();
    assert!(err.contains("flat") && err.contains("not images"), "{err}");
}
