//! Name normalisation and time parsing on any text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(name) = rakam_model::normalize_field_name(text) {
        // A normal name stays as it is.
        assert_eq!(rakam_model::normalize_field_name(&name).ok().as_deref(), Some(name.as_str()));
    }
    let _ = rakam_model::normalize_collection_name(text);
    let _ = rakam_model::parse_timestamp_millis(text);
    let _ = rakam_model::parse_date(text);
});
