//! Feeds arbitrary bytes to the ONNX decoder and importer: they must never panic, and a
//! graph they accept must verify and print.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use weft_frontend_onnx::{ImportOptions, import_model, proto::ModelProto};

fuzz_target!(|data: &[u8]| {
    let Ok(model) = ModelProto::decode(data) else {
        return;
    };
    let options = ImportOptions::default();
    if let Ok(graph) = import_model(&model, Path::new("fuzz.onnx"), &options) {
        weft_ir::verify(&graph).expect("an imported graph verifies");
        let _ = weft_ir::stats(&graph);
        let _ = weft_ir::text::to_text(&graph);
    }
});
