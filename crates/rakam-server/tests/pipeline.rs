//! The ingest pipeline's hooks on a real store: a mapper that adds a field
//! from the request context, and an append observer that sees every
//! acknowledged append exactly once, also across a `kill -9` and restart.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use rakam_ingest::{
    AppendObserver, Atomicity, EventInput, IngestError, IngestLimits, MappedEvent, Mapper,
    Pipeline, RequestContext,
};
use rakam_query::{rows_as_json, QueryEngine, QueryLimits};
use rakam_store_api::{Append, Backend, LogPosition};
use rakam_store_embedded::{open_backend, EmbeddedOptions};
use serde_json::{json, Map, Value};

/// Adds `seen_from`: the event's collection and the address its `_ip`
/// instruction resolved to.
#[derive(Debug)]
struct TestMapper;

impl Mapper for TestMapper {
    fn name(&self) -> &str {
        "test"
    }

    fn map(&self, event: &mut MappedEvent<'_>) -> Result<(), IngestError> {
        let ip = event
            .context()
            .ip
            .map_or_else(|| "nowhere".to_string(), |ip| ip.to_string());
        let value = format!("{}@{ip}", event.collection());
        event.set_field("seenFrom", Value::String(value))
    }
}

/// Records each append it handles as a line `position rows`, fsynced, so
/// its state survives a crash; a position it has seen is skipped.
#[derive(Debug)]
struct FileObserver {
    path: PathBuf,
    handled: Mutex<BTreeMap<u64, usize>>,
}

impl FileObserver {
    fn open(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            handled: Mutex::new(read_log(path)),
        }
    }
}

/// The complete lines of an observer's log (a line cut by a crash was
/// never handled), with how often each position appears.
fn read_log_lines(path: &Path) -> Vec<(u64, usize)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .filter_map(|line| {
            let (position, rows) = line.split_once(' ')?;
            Some((position.parse().ok()?, rows.parse().ok()?))
        })
        .collect()
}

fn read_log(path: &Path) -> BTreeMap<u64, usize> {
    read_log_lines(path).into_iter().collect()
}

#[async_trait]
impl AppendObserver for FileObserver {
    fn name(&self) -> &str {
        "file"
    }

    async fn checkpoint(&self) -> Result<Option<LogPosition>, IngestError> {
        // Positions of a fresh store start at 1 and have no gaps here.
        let handled = self.handled.lock();
        let mut watermark = 0;
        while handled.contains_key(&(watermark + 1)) {
            watermark += 1;
        }
        Ok((watermark > 0).then_some(LogPosition(watermark)))
    }

    async fn on_append(
        &self,
        position: Option<LogPosition>,
        append: &Append,
    ) -> Result<(), IngestError> {
        let position = position.expect("the embedded store has a log").0;
        let rows: usize = append.batches.iter().map(|(_, b)| b.num_rows()).sum();
        let mut handled = self.handled.lock();
        if handled.contains_key(&position) {
            return Ok(());
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| {
                file.write_all(format!("{position} {rows}\n").as_bytes())?;
                Ok(file)
            })
            .map_err(|e| IngestError::Malformed(format!("observer log: {e}")))?;
        file.sync_data()
            .and_then(|()| file.flush())
            .map_err(|e| IngestError::Malformed(format!("observer log: {e}")))?;
        handled.insert(position, rows);
        Ok(())
    }
}

fn events(collection: &str, count: usize, first: usize) -> Vec<Result<EventInput, IngestError>> {
    (first..first + count)
        .map(|n| {
            let mut properties = Map::new();
            properties.insert("n".into(), json!(n));
            properties.insert("_ip".into(), json!(true));
            Ok(EventInput {
                collection: collection.into(),
                properties,
                upload_time: None,
            })
        })
        .collect()
}

async fn open(dir: &Path, observer: Option<Arc<FileObserver>>) -> (Backend, Pipeline) {
    let mut options = EmbeddedOptions::new(dir.join("data"));
    // Flush often, so replay must come from a retained log, not the tail.
    options.flush_rows = 20;
    options.flush_interval = Duration::from_millis(200);
    let backend = open_backend(options).await.expect("open");
    let mut pipeline = Pipeline::new(
        backend.catalog.clone(),
        backend.sink.clone(),
        IngestLimits::default(),
    )
    .with_mapper(Arc::new(TestMapper));
    if let Some(observer) = observer {
        pipeline = pipeline.with_observer(observer);
    }
    pipeline.start().await.expect("observers replayed");
    (backend, pipeline)
}

async fn query(backend: &Backend, project: &str, sql: &str) -> Vec<Vec<Value>> {
    let info = backend
        .catalog
        .project(project)
        .await
        .expect("lookup")
        .expect("project");
    let snapshot = backend.catalog.snapshot(&info.id).await.expect("snapshot");
    let engine = QueryEngine::new(
        backend,
        QueryLimits::from(&rakam_config::QueryConfig::default()),
    )
    .expect("query engine");
    let output = engine.execute(&snapshot, sql, None).await.expect("query");
    rows_as_json(&output.batches).expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapper_adds_fields_from_the_request_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (backend, pipeline) = open(dir.path(), None).await;
    let (project, _) = backend
        .catalog
        .create_project("mapped")
        .await
        .expect("project");
    let snapshot = backend
        .catalog
        .snapshot(&project.id)
        .await
        .expect("snapshot");
    let context = RequestContext {
        client_ip: "192.0.2.7".parse().ok(),
        ..RequestContext::default()
    };
    pipeline
        .ingest(
            &snapshot,
            events("Order Completed", 2, 0),
            &context,
            Atomicity::AllOrNothing,
        )
        .await
        .expect("ingest");
    let rows = query(
        &backend,
        "mapped",
        "SELECT seen_from, count(*) FROM \"order completed\" GROUP BY seen_from",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![json!("order completed@192.0.2.7"), json!(2)]]
    );
    let snapshot = backend
        .catalog
        .snapshot(&project.id)
        .await
        .expect("snapshot");
    let schema = snapshot.schema("order completed").expect("collection");
    assert!(schema.column_type("_ip").is_none(), "_ip is not data");
    backend.sink.shutdown().await.expect("shutdown");
}

const CHILD_DIR: &str = "RAKAM_TEST_OBSERVER_CHILD_DIR";

/// The process the crash test kills: ingests until it is killed, printing
/// how many events were acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper process of observers_see_every_append_once_across_a_kill"]
async fn observer_crash_child() {
    let dir = PathBuf::from(std::env::var(CHILD_DIR).expect("run by the crash test"));
    let observer = Arc::new(FileObserver::open(&dir.join("observer.log")));
    let (backend, pipeline) = open(&dir, Some(observer)).await;
    let (project, _) = backend
        .catalog
        .create_project("crash")
        .await
        .expect("project");
    let snapshot = backend
        .catalog
        .snapshot(&project.id)
        .await
        .expect("snapshot");
    let mut acknowledged = 0;
    loop {
        pipeline
            .ingest(
                &snapshot,
                events("e", 7, acknowledged),
                &RequestContext::default(),
                Atomicity::AllOrNothing,
            )
            .await
            .expect("ingest");
        acknowledged += 7;
        println!("acknowledged {acknowledged}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_see_every_append_once_across_a_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "observer_crash_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut last = 0_usize;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(count) = line.strip_prefix("acknowledged ") {
                last = count.parse().unwrap_or(last);
            }
        }
        last
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_log_lines(&dir.path().join("observer.log")).len() < 150 {
        assert!(Instant::now() < deadline, "the child did not get going");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let acknowledged = reader.join().expect("reader");
    assert!(acknowledged > 0);

    let observer = Arc::new(FileObserver::open(&dir.path().join("observer.log")));
    let (backend, _pipeline) = open(dir.path(), Some(observer)).await;
    let lines = read_log_lines(&dir.path().join("observer.log"));
    let mut positions: Vec<u64> = lines.iter().map(|(p, _)| *p).collect();
    positions.sort_unstable();
    let distinct = positions.len();
    positions.dedup();
    assert_eq!(distinct, positions.len(), "an append was observed twice");
    let observed_rows: usize = lines.iter().map(|(_, rows)| rows).sum();
    let stored = query(
        &backend,
        "crash",
        "SELECT count(*), count(DISTINCT n) FROM e",
    )
    .await;
    let stored_rows = stored[0][0].as_u64().expect("count") as usize;
    assert_eq!(stored[0][1], stored[0][0], "an event was stored twice");
    assert!(
        stored_rows >= acknowledged,
        "{stored_rows} stored, {acknowledged} acknowledged"
    );
    assert_eq!(
        observed_rows, stored_rows,
        "observers saw every stored append once"
    );
    assert_eq!(positions.len(), stored_rows / 7);
    backend.sink.shutdown().await.expect("shutdown");
}
