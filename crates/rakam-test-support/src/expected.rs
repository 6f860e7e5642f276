//! Expected-output files, in the spirit of sqllogictest. A file is records
//! separated by blank lines; lines starting with `#` are comments, kept as
//! they are:
//!
//! ```text
//! ingest <collection>    one JSON properties object per line
//! <kind>                 the input, then `----`, then the expected output,
//!                        or `error: <text the error message contains>`
//! ```
//!
//! Every file runs against a fresh fixture. `RAKAM_SLT_COMPLETE=1` rewrites
//! the expected blocks from the actual output (read the diff before
//! committing it).

use std::future::Future;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// What a test suite runs for each record of its files.
pub trait Records {
    fn ingest(&self, collection: &str, events: Vec<Map<String, Value>>)
        -> impl Future<Output = ()>;

    /// Runs the input of a record of `kind`: its output as text, or the
    /// error message.
    fn run(&self, kind: &str, input: &str) -> impl Future<Output = Result<String, String>>;
}

fn completing() -> bool {
    std::env::var_os("RAKAM_SLT_COMPLETE").is_some()
}

/// Runs every `*.<extension>` file in `dir`, each against a fixture from
/// `fresh`, and fails on the first file whose output differs.
pub async fn check_dir<R, F, Fut>(dir: &Path, extension: &str, fresh: F)
where
    R: Records,
    F: Fn() -> Fut,
    Fut: Future<Output = R>,
{
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("expected-output directory")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no .{extension} files in {}",
        dir.display()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read expected-output file");
        let actual = run_file(&file, &text, &fresh().await).await;
        if completing() {
            std::fs::write(&file, actual.trim_end().to_string() + "\n").expect("rewrite");
            continue;
        }
        assert_eq!(
            text.trim_end(),
            actual.trim_end(),
            "{} differs (rerun with RAKAM_SLT_COMPLETE=1 to accept, after reading the diff)",
            file.display()
        );
    }
}

async fn run_file(path: &Path, text: &str, records: &impl Records) -> String {
    let mut output = String::new();
    for record in text.split("\n\n").map(str::trim).filter(|r| !r.is_empty()) {
        let mut lines = record.lines().peekable();
        while let Some(line) = lines.next_if(|l| l.starts_with('#')) {
            output.push_str(line);
            output.push('\n');
        }
        let header = lines.next().unwrap_or("");
        let body: Vec<&str> = lines.collect();
        if let Some(collection) = header.strip_prefix("ingest ") {
            let events = body
                .iter()
                .map(|line| match serde_json::from_str::<Value>(line) {
                    Ok(Value::Object(properties)) => properties,
                    _ => panic!("{}: not a JSON object: {line}", path.display()),
                })
                .collect();
            records.ingest(collection, events).await;
            output.push_str(&format!("{header}\n{}\n\n", body.join("\n")));
            continue;
        }
        let split = body.iter().position(|l| *l == "----").unwrap_or(body.len());
        let input = body[..split].join("\n");
        let expected = body
            .get(split + 1..)
            .map(|l| l.join("\n"))
            .unwrap_or_default();
        let actual = match records.run(header, &input).await {
            Ok(text) => text,
            Err(message) => match expected.strip_prefix("error: ") {
                Some(wanted) if !completing() => {
                    assert!(
                        message.contains(wanted.trim()),
                        "{}: error of {input}\nexpected to contain: {wanted}\nactual: {message}",
                        path.display()
                    );
                    expected.clone()
                }
                _ => format!("error: {message}"),
            },
        };
        output.push_str(&format!("{header}\n{input}\n----\n{actual}\n\n"));
    }
    output
}
