// Shared by the two e2e binaries; each uses only part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct TestServer {
    pub port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    /// The postgres backend's database (dropped after the server stops).
    pub database: Option<rakam_store_postgres::testing::TempDatabase>,
    _temp: Option<tempfile::TempDir>,
}

/// The store this test binary runs every test on (`crate::STORE`).
pub fn on_postgres() -> bool {
    crate::STORE == "postgres"
}

pub struct Response {
    pub status: u16,
    pub body: String,
    pub content_type: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

#[derive(Debug, Clone)]
pub struct Keys {
    pub master: String,
    pub read: String,
    pub write: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_rakam")
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_with_env(extra_args, &[])
    }

    pub fn start_with_env(extra_args: &[&str], extra_env: &[(&str, &str)]) -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let data_dir = temp.path().join("data");
        let database = if on_postgres() {
            match rakam_store_postgres::testing::TempDatabase::create("the PostgreSQL e2e suite") {
                Some(database) => Some(database),
                // The helper printed why; every test of this binary would
                // skip the same way, so end the binary as skipped.
                None => std::process::exit(0),
            }
        } else {
            None
        };
        let mut server = Self {
            database,
            port: 0,
            data_dir,
            child: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _temp: Some(temp),
        };
        server.launch();
        server
    }

    /// A server on the embedded store in `data_dir` (which the test owns).
    pub fn start_in(data_dir: &Path) -> Self {
        let mut server = Self {
            database: None,
            port: 0,
            data_dir: data_dir.to_path_buf(),
            child: None,
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            _temp: None,
        };
        server.launch();
        server
    }

    /// Another server on the same database as `other` (PostgreSQL only):
    /// processes that share one database must agree.
    pub fn start_sharing(other: &TestServer) -> Self {
        let url = other
            .database
            .as_ref()
            .map(|d| d.url.clone())
            .expect("sharing needs the postgres backend");
        Self::start_on_postgres(&url)
    }

    /// A server on the PostgreSQL database at `url` (which the test owns).
    pub fn start_on_postgres(url: &str) -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut server = Self {
            port: 0,
            data_dir: temp.path().join("data"),
            child: None,
            extra_args: vec![
                "--store".into(),
                "postgres".into(),
                "--postgres-url".into(),
                url.to_string(),
            ],
            extra_env: Vec::new(),
            database: None,
            _temp: Some(temp),
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        self.port = free_port();
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(self.store_args())
            .args(&self.extra_args)
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RAKAM_LOG", "warn")
            .env_remove("RAKAM_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        self.child = Some(command.spawn().expect("start rakam"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten()
            {
                panic!("rakam exited during start-up: {status}");
            }
            if self.get("/health").status == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("rakam did not start within 60 s");
    }

    fn store_args(&self) -> Vec<String> {
        match &self.database {
            Some(database) => vec![
                "--store".into(),
                "postgres".into(),
                "--postgres-url".into(),
                database.url.clone(),
            ],
            None if self.extra_args.iter().any(|a| a == "--store") => Vec::new(),
            None => vec![
                "--data-dir".into(),
                self.data_dir.to_string_lossy().to_string(),
            ],
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Stops with SIGTERM (graceful: flushes) and starts again on the same data.
    pub fn restart_gracefully(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.child = None;
        self.launch();
    }

    /// Starts again on the same data (after [`Self::kill`]) with
    /// `extra_args` added.
    pub fn relaunch_with(&mut self, extra_args: &[&str]) {
        self.extra_args
            .extend(extra_args.iter().map(|s| s.to_string()));
        self.launch();
    }

    /// `kill -9`, then start again on the same data.
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server process's resident memory, in bytes (Linux).
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().map(|c| c.id()).expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS")
    }

    /// CPU time the server process has used, user and system, in seconds
    /// (Linux).
    pub fn cpu_seconds(&self) -> f64 {
        let pid = self.child.as_ref().map(|c| c.id()).expect("running");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        // Fields after the command name, which is in parentheses.
        let after = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        ticks as f64 / 100.0
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit;
    /// whether it did.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let mut request = ureq::request(method, &self.url(path)).timeout(Duration::from_secs(120));
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let result = match body {
            Some(bytes) => request.send_bytes(bytes),
            None => request.call(),
        };
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(error) => {
                return Response {
                    status: 0,
                    body: error.to_string(),
                    content_type: String::new(),
                }
            }
        };
        let status = response.status();
        let content_type = response.header("content-type").unwrap_or("").to_string();
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut response.into_reader(), &mut bytes);
        Response {
            status,
            body: String::from_utf8_lossy(&bytes).to_string(),
            content_type,
        }
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Response {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.request("POST", path, &all, Some(body.to_string().as_bytes()))
    }

    pub fn create_project(&self, name: &str) -> Keys {
        let response = self.post("/project/create", &[], &json!({"name": name}));
        assert_eq!(response.status, 200, "{}", response.body);
        let keys = response.json();
        Keys {
            master: keys["master_key"].as_str().expect("master").to_string(),
            read: keys["read_key"].as_str().expect("read").to_string(),
            write: keys["write_key"].as_str().expect("write").to_string(),
        }
    }

    pub fn collect(&self, keys: &Keys, collection: &str, properties: Value) -> Response {
        self.post(
            "/event/collect",
            &[],
            &json!({"collection": collection, "api": {"api_key": keys.write}, "properties": properties}),
        )
    }

    /// `/event/batch` with the write key.
    pub fn batch(&self, keys: &Keys, events: Vec<Value>) -> Response {
        self.post(
            "/event/batch",
            &[],
            &json!({"api": {"api_key": keys.write}, "events": events}),
        )
    }

    /// Runs SQL with the read key and returns the `result` rows.
    pub fn query(&self, keys: &Keys, sql: &str) -> Vec<Vec<Value>> {
        self.run_query(keys, json!({"query": sql}))
    }

    pub fn query_with_limit(&self, keys: &Keys, sql: &str, limit: u64) -> Vec<Vec<Value>> {
        self.run_query(keys, json!({"query": sql, "limit": limit}))
    }

    fn run_query(&self, keys: &Keys, request: Value) -> Vec<Vec<Value>> {
        let sql = request["query"].as_str().unwrap_or("").to_string();
        let response = self.post("/query/execute", &[("read_key", &keys.read)], &request);
        assert_eq!(response.status, 200, "{sql}: {}", response.body);
        let body = response.json();
        body["result"]
            .as_array()
            .expect("result rows")
            .iter()
            .map(|row| row.as_array().expect("row").clone())
            .collect()
    }

    pub fn count(&self, keys: &Keys, sql: &str) -> i64 {
        self.query(keys, sql)[0][0].as_i64().expect("a count")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// POSTs `body` to `path` with the project's master key.
pub fn master(server: &TestServer, keys: &Keys, path: &str, body: Value) -> Response {
    server.post(path, &[("master_key", &keys.master)], &body)
}

/// POSTs `body` to `path` with the project's read key.
pub fn read(server: &TestServer, keys: &Keys, path: &str, body: Value) -> Response {
    server.post(path, &[("read_key", &keys.read)], &body)
}
