//! The SQL guard in both dialects (DataFusion's and PostgreSQL's) on any
//! statement: accepted, or a clear error; never a panic or a stack
//! overflow (the guard runs on the query threads' stack size here too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rakam_store_api::NativeDialect;

fuzz_target!(|sql: &str| {
    let sql = sql.to_string();
    let checked = std::thread::Builder::new()
        .stack_size(rakam_query::QUERY_THREAD_STACK_BYTES)
        .spawn(move || {
            let _ = rakam_query::check_statement(&sql);
            let collections = vec!["e".to_string(), "pageview".to_string()];
            let _ = rakam_query::prepare_native(&sql, NativeDialect::PostgreSql, &collections);
        });
    if let Ok(handle) = checked {
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    }
});
