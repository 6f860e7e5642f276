//! Analysis requests (funnel, retention, segmentation, statistics, flow) as
//! any JSON: read, or a clear error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rakam_analysis::AnalysisKind;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let kinds = ["funnel", "retention", "segmentation", "statistics", "flow"];
    if let Some(kind) = AnalysisKind::parse(kinds[usize::from(selector) % kinds.len()]) {
        let _ = rakam_analysis::parse_request(kind, request);
    }
});
