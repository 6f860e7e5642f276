//! Throw-away databases for tests of this backend (the conformance suite
//! and the end-to-end suite). Where no PostgreSQL answers, tests are
//! skipped with a loud message, unless `RAKAM_REQUIRE_SERVICES=1` (CI),
//! which makes a missing server a failure.

use std::future::Future;
use std::io::Write;

use tokio_postgres::NoTls;

/// The server tests use: `RAKAM_TEST_POSTGRES_URL`, else the local one.
pub fn admin_url() -> String {
    std::env::var("RAKAM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn services_required() -> bool {
    std::env::var("RAKAM_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Runs `future` on a runtime of its own thread, so this works from sync
/// tests and from inside another runtime alike.
fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|runtime| runtime.block_on(future))
    })
    .join()
    .unwrap_or_else(|_| panic!("test database helper panicked"))
    .unwrap_or_else(|e| panic!("test database runtime: {e}"))
}

/// Runs each statement on its own (CREATE/DROP DATABASE refuse to share a
/// multi-statement string).
async fn execute(url: String, statements: Vec<String>) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let mut outcome = Ok(());
    for sql in statements {
        if let Err(error) = client.batch_execute(&sql).await {
            outcome = Err(error.to_string());
            break;
        }
    }
    drop(client);
    let _ = driver.await;
    outcome
}

async fn reader_roles(url: String) -> Vec<String> {
    let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await else {
        return Vec::new();
    };
    let driver = tokio::spawn(connection);
    let roles = client
        .query("SELECT reader_role FROM rakam_meta.projects", &[])
        .await
        .map(|rows| rows.iter().map(|r| r.get::<_, String>(0)).collect())
        .unwrap_or_default();
    drop(client);
    let _ = driver.await;
    roles
}

/// A database created for one test and dropped (with the roles of its
/// projects) when the value is dropped.
#[derive(Debug)]
pub struct TempDatabase {
    pub url: String,
    name: String,
}

impl TempDatabase {
    /// `None` (after a loud message) when no server answers and services
    /// are not required; panics when they are.
    pub fn create(purpose: &str) -> Option<Self> {
        let name = format!("rakam_test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_url();
        let created = block_on(execute(
            admin.clone(),
            vec![format!("CREATE DATABASE {name}")],
        ));
        match created {
            Ok(()) => {
                let url = match admin.rsplit_once('/') {
                    Some((server, _)) => format!("{server}/{name}"),
                    None => format!("{admin}/{name}"),
                };
                Some(Self { url, name })
            }
            Err(error) if services_required() => panic!(
                "RAKAM_REQUIRE_SERVICES=1 but PostgreSQL at {admin} is unusable for {purpose}: {error}"
            ),
            Err(error) => {
                // Straight to stderr: the test harness captures eprintln!,
                // and a skip must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                     !!! SKIPPED {purpose}: no PostgreSQL at {admin} ({error}).\n\
                     !!! Start one or set RAKAM_TEST_POSTGRES_URL; CI sets RAKAM_REQUIRE_SERVICES=1.\n\
                     !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
                );
                None
            }
        }
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let roles = block_on(reader_roles(self.url.clone()));
        let mut statements = vec![format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )];
        statements.extend(
            roles
                .iter()
                .map(|role| format!("DROP ROLE IF EXISTS \"{role}\"")),
        );
        if let Err(error) = block_on(execute(admin_url(), statements)) {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}
