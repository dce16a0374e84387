//! Feeds arbitrary bytes to the JSON frontend. It must never panic, and whatever it
//! accepts must round-trip exactly: parse → print → parse gives the same graph, and
//! printing that graph again gives the same bytes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.json");
    if let Ok(graph) = weft_frontend_json::parse_str(src, path) {
        // Summaries and printers must not panic on anything the verifier accepts.
        let _ = weft_ir::stats(&graph);
        let _ = weft_ir::text::to_text(&graph);
        let _ = weft_ir::dot::to_dot(&graph);
        let printed = weft_frontend_json::to_json(&graph);
        let again = weft_frontend_json::parse_str(&printed, path)
            .unwrap_or_else(|e| panic!("printed graph does not parse: {e}\n{printed}"));
        assert_eq!(graph, again, "round trip changed the graph");
        assert_eq!(
            printed,
            weft_frontend_json::to_json(&again),
            "printing is not stable"
        );
    }
});
