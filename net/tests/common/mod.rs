//! Real `keel` processes for end-to-end tests: each test gets its own temp dir and free
//! loopback ports; every process is killed when the test ends, pass or fail. Waiting is
//! polling with a deadline, never a fixed sleep.

#![allow(dead_code)]

pub mod pki;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A port nobody listens on right now (the process binds it a moment later), and one no
/// other test of this binary was given: tests run in parallel, and the system may hand the
/// same free port to two of them before either server binds it.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `DEADLINE`.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug)]
pub struct Member {
    pub name: String,
    /// `http` or `https`.
    pub client_scheme: &'static str,
    pub peer_scheme: &'static str,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.client_scheme, self.client_port)
    }

    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.peer_scheme, self.peer_port)
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no chance to clean up, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        wait_for("the process to exit", || child.try_wait().ok().flatten()).into()
    }

    /// Waits (up to the deadline) for the process to end by itself; its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the member was started");
        wait_for(&format!("{} to exit", self.name), || {
            child.try_wait().ok().flatten()
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A set of members started from one `--initial-cluster`.
#[derive(Debug)]
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    pub initial_cluster: String,
    /// Flags every member gets on top of the cluster's own.
    pub extra_flags: Vec<String>,
    /// Flags `etcdctl` needs to reach the members (TLS files).
    pub etcdctl_flags: Vec<String>,
}

/// How a cluster is started.
#[derive(Clone, Debug)]
pub struct Spec {
    pub size: usize,
    pub extra_flags: Vec<String>,
    pub client_scheme: &'static str,
    pub peer_scheme: &'static str,
    pub etcdctl_flags: Vec<String>,
}

impl Spec {
    pub fn new(size: usize) -> Spec {
        Spec {
            size,
            extra_flags: Vec::new(),
            client_scheme: "http",
            peer_scheme: "http",
            etcdctl_flags: Vec::new(),
        }
    }
}

/// A member, not started, with fresh ports.
pub fn new_member(dir: &Path, name: &str, spec: &Spec) -> Member {
    Member {
        data_dir: dir.join(format!("{name}.keel")),
        log: dir.join(format!("{name}.log")),
        name: name.to_string(),
        client_scheme: spec.client_scheme,
        peer_scheme: spec.peer_scheme,
        client_port: free_port(),
        peer_port: free_port(),
        child: None,
    }
}

/// `--initial-cluster` naming `members` at their peer URLs.
pub fn initial_cluster_of(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

impl Cluster {
    /// Starts `size` members and waits until a leader serves a linearizable read.
    pub fn start(size: usize) -> Cluster {
        Cluster::start_with(size, &[])
    }

    /// Like `start`, with extra flags for every member.
    pub fn start_with(size: usize, extra_flags: &[&str]) -> Cluster {
        let mut spec = Spec::new(size);
        spec.extra_flags = extra_flags.iter().map(|f| f.to_string()).collect();
        Cluster::start_spec(spec, tempfile::tempdir().expect("a temp dir"))
    }

    /// Starts the cluster `spec` describes, in `dir`.
    pub fn start_spec(spec: Spec, dir: tempfile::TempDir) -> Cluster {
        let extra_flags = spec.extra_flags.clone();
        let mut members: Vec<Member> = (1..=spec.size)
            .map(|i| new_member(dir.path(), &format!("n{i}"), &spec))
            .collect();
        let initial_cluster = initial_cluster_of(&members);
        for member in &mut members {
            spawn(member, &initial_cluster, "new", &extra_flags);
        }
        let cluster = Cluster {
            dir,
            members,
            initial_cluster,
            extra_flags,
            etcdctl_flags: spec.etcdctl_flags,
        };
        cluster.wait_ready();
        cluster
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(Member::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Restarts a member that was killed or terminated, on the same ports and data dir.
    pub fn restart(&mut self, index: usize) {
        let initial_cluster = self.initial_cluster.clone();
        let extra_flags = self.extra_flags.clone();
        spawn(
            &mut self.members[index],
            &initial_cluster,
            "new",
            &extra_flags,
        );
    }

    /// Waits until a linearizable read succeeds through every running member.
    pub fn wait_ready(&self) {
        for member in &self.members {
            if member.child.is_none() {
                continue;
            }
            let endpoint = member.endpoint();
            let mut args: Vec<&str> = self.etcdctl_flags.iter().map(String::as_str).collect();
            args.extend(["get", "readiness-probe"]);
            wait_for(&format!("{} to serve", member.name), || {
                etcdctl(&endpoint, &args).status.success().then_some(())
            });
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

pub fn spawn(member: &mut Member, initial_cluster: &str, state: &str, extra_flags: &[String]) {
    spawn_with_env(member, initial_cluster, state, extra_flags, &[]);
}

/// Like [`spawn`], with `env` set for the process.
pub fn spawn_with_env(
    member: &mut Member,
    initial_cluster: &str,
    state: &str,
    extra_flags: &[String],
    env: &[(&str, &std::ffi::OsStr)],
) {
    let log = std::fs::File::create(&member.log).expect("a log file");
    let child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .envs(env.iter().copied())
        .args([
            "--name",
            &member.name,
            "--data-dir",
            &member.data_dir.to_string_lossy(),
            "--listen-client-urls",
            &member.client_url(),
            "--advertise-client-urls",
            &member.client_url(),
            "--listen-peer-urls",
            &member.peer_url(),
            "--initial-advertise-peer-urls",
            &member.peer_url(),
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            state,
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ])
        .args(extra_flags)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("keel starts");
    member.child = Some(child);
}

/// Runs Debian's `etcdctl` (v3 API) against `endpoints`.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .expect("etcdctl is installed (apt-get install etcd-client)")
}

/// `etcdctl` that must succeed; returns its stdout.
pub fn etcdctl_ok(endpoints: &str, args: &[&str]) -> String {
    let output = etcdctl(endpoints, args);
    assert!(
        output.status.success(),
        "etcdctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
