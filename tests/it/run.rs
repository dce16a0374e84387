//! Executing the bundled examples on the CPU reference executor.

use weft::cpu::{RunOptions, Tensors, random_input, run};

use crate::load;

fn random_inputs(g: &weft::ir::Graph, seed: u64) -> Tensors {
    g.inputs()
        .map(|v| (g.value(v).name.clone(), random_input(g, v, seed).unwrap()))
        .collect()
}

#[test]
fn tiny_llama_runs_deterministically() {
    let g = load("examples/tiny-llama.json");
    let inputs = random_inputs(&g, 7);
    let a = run(&g, &inputs, &RunOptions::default()).unwrap();
    let b = run(&g, &inputs, &RunOptions::default()).unwrap();
    assert_eq!(a, b, "two runs differ");
    let (name, logits) = &a[0];
    assert_eq!(name, "logits");
    assert_eq!(logits.shape(), &[1, 16, 256]);
    let v = logits.as_f32().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    // Random weights with std 0.02 give small but non-zero logits.
    assert!(v.iter().any(|&x| x != 0.0));
}
