use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::*;
use crate::config::{Dataset, VarianceRegConfig};
use crate::optim::{Adam, Lars, Optimizer};

fn tiny(method: Method) -> RunConfig {
    let mut config = RunConfig::defaults(method, Dataset::Cifar10);
    config.encoder.width = 0.125;
    let emb = if method == Method::WMse { 8 } else { 32 };
    config.projector.widths = vec![32, emb];
    if let Some(p) = &mut config.predictor {
        p.widths = vec![32, emb];
    }
    if let Some(w) = &mut config.method_params.wmse {
        w.w_size = 16;
    }
    config
}

/// A few optimiser steps on one fixed batch lower each method's loss: gradients reach every
/// online parameter with the right sign, and never BYOL's target.
#[test]
fn every_method_lowers_its_loss_on_a_fixed_batch() {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (32, 3, 16, 16), &dev).unwrap();
    let noisy = |s: f32| (&a + Tensor::randn(0f32, s, (32, 3, 16, 16), &dev).unwrap()).unwrap();
    for method in Method::ALL {
        let mut config = tiny(method);
        if method == Method::Simsiam {
            config.variance_reg = Some(VarianceRegConfig { coeff: 1.0, gamma: 1.0, eps: 1e-4 });
        }
        let views: Vec<Tensor> = (0..config.train.views).map(|i| noisy(0.2 + 0.1 * i as f32)).collect();
        let net = Network::new(&config, &dev).unwrap();
        let mut opt: Box<dyn Optimizer> = match method {
            Method::Vicreg | Method::BarlowTwins => Box::new(Lars::new(net.params(), 1e-6, 0.9, 0.001)),
            _ => Box::new(Adam::new(net.params(), (0.9, 0.999), 1e-8, 0.0)),
        };
        let lr = if matches!(method, Method::Vicreg | Method::BarlowTwins) { 0.3 } else { 1e-3 };
        let mut losses = Vec::new();
        for step in 0..8 {
            let ctx = StepContext { seed: 0, epoch: 1, step, progress: step as f64 / 8.0 };
            let out = method.step_loss(&config, &net, &views, &ctx).unwrap();
            losses.push(out.loss.to_scalar::<f32>().unwrap());
            let names: Vec<&str> = out.terms.iter().map(|(n, _)| *n).filter(|n| *n != "variance_reg").collect();
            assert_eq!(names, method.terms(), "{method:?}: the terms it records are the ones it declares");
            if method == Method::Simsiam {
                assert!(out.terms.iter().any(|(n, _)| *n == "variance_reg"));
            }
            let grads = out.loss.backward().unwrap();
            for p in net.params() {
                assert!(grads.get(p.var.as_tensor()).is_some(), "{method:?}: {} gets no gradient", p.name);
            }
            if let Some(t) = &net.target {
                for (name, v) in t.vars.named_vars() {
                    assert!(grads.get(v.as_tensor()).is_none(), "BYOL's target {name} got a gradient");
                }
            }
            opt.step(&grads, lr).unwrap();
            method.after_step(&config, &net, &ctx).unwrap();
        }
        assert!(losses[7] < losses[0], "{method:?}: {losses:?}");
    }
}

/// With a second branch, each view goes through its own network: gradients reach both, the
/// second's names sit under `branch_b.`, and the features come from the first.
#[test]
fn a_second_branch_embeds_the_odd_views_with_its_own_weights() {
    let dev = Device::Cpu;
    let mut config = tiny(Method::Vicreg);
    let mut other = config.encoder.clone();
    other.arch = "resnet34".into();
    other.width = 0.25;
    config.branch_b = Some(crate::config::BranchBConfig { encoder: other });
    let net = Network::new(&config, &dev).unwrap();
    let names: Vec<String> = net.vars.named_vars().into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().any(|n| n == "branch_b.encoder.layer3.5.conv2.weight"), "ResNet-34 under branch_b");
    assert!(names.iter().any(|n| n == "branch_b.projector.layers.0.linear.weight"));
    let x = Tensor::randn(0f32, 1.0, (8, 3, 16, 16), &dev).unwrap();
    let z = net.embed_views(&[x.clone(), x.clone()]).unwrap();
    let diff = (&z[0] - &z[1]).unwrap().abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff > 1e-3, "the same image gives different embeddings in different branches");
    let loss = config.method.step_loss(
        &config,
        &net,
        &[x.clone(), x.clone()],
        &StepContext { seed: 0, epoch: 1, step: 0, progress: 0.0 },
    );
    let grads = loss.unwrap().loss.backward().unwrap();
    for p in net.params() {
        assert!(grads.get(p.var.as_tensor()).is_some(), "{} gets no gradient", p.name);
    }
    assert_eq!(net.features(&x).unwrap().dims(), &[8, 64], "features of the first branch (width 0.125)");
}

/// BYOL's target starts as an exact copy of the online branch and then follows it by EMA.
#[test]
fn byol_target_starts_as_a_copy_and_moves_by_ema() {
    let config = tiny(Method::Byol);
    let net = Network::new(&config, &Device::Cpu).unwrap();
    let target = net.target.as_ref().unwrap();
    let online: HashMap<String, candle_core::Var> = net.vars.named_vars().into_iter().collect();
    let name = "projector.layers.1.linear.weight";
    let values = |v: &candle_core::Var| -> Vec<f32> { v.as_tensor().flatten_all().unwrap().to_vec1().unwrap() };
    let tv = target.vars.named_vars().into_iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(values(&tv), values(&online[name]));
    assert_eq!(target.vars.named_vars().len(), net.vars.named_vars().len() - 8, "predictor excluded");
    let before = values(&tv);
    online[name].set(&online[name].as_tensor().zeros_like().unwrap()).unwrap();
    net.update_target(0.75).unwrap();
    for (after, b) in values(&tv).iter().zip(&before) {
        assert!((after - 0.75 * b).abs() < 1e-7);
    }
}

/// A method's table in the run configuration, its defaults and `infomax loss`'s keys come from
/// one definition: the defaults are the loss's, and the configuration's key is the registry's.
#[test]
fn parameters_defaults_and_loss_keys_have_one_source() {
    let config = RunConfig::defaults(Method::Vicreg, Dataset::Cifar10);
    assert_eq!(config.method_params.vicreg, Some(infomax_losses::VicregWeights::default()));
    let keys: Vec<String> = Method::Vicreg.loss_keys().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["sim_coeff", "std_coeff", "cov_coeff", "gamma", "eps"]);
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["vicreg"]["sim_coeff"], 25.0);
    let wmse = RunConfig::defaults(Method::WMse, Dataset::Cifar10);
    assert_eq!(wmse.method_params.wmse, Some(infomax_losses::WmseConfig::default()));
    assert_eq!(MethodParams::KEYS, ["vicreg", "barlow_twins", "wmse", "simclr", "byol"]);
    for m in Method::ALL {
        assert_eq!(m.name().parse::<Method>().unwrap(), m);
        assert_eq!(serde_json::to_value(m).unwrap(), m.name());
    }
}
